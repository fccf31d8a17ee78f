"""Fixtures for tests/helm: environment values, and renders by the real Helm engine (helpers: helpers.py)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngine

from .helpers import ENVS, render


@pytest.fixture(scope="session")
def engine() -> HelmEngine:
    return HelmEngine()


@pytest.fixture(scope="session")
def env_values() -> dict[str, dict[str, Any]]:
    """The user-supplied values of each environment (base + env + generated)."""
    return {env: helm_values.environment_values(env) for env in ENVS}


@pytest.fixture(scope="session")
def rendered(engine, env_values) -> dict[str, list[dict[str, Any]]]:
    """The umbrella chart's own templates rendered for each environment (once per session)."""
    return {env: render(engine, env_values[env]) for env in ENVS}


@pytest.fixture
def values_of(env_values) -> Callable[[str], dict[str, Any]]:
    """A private deep copy of an environment's values, for a test to break."""
    return lambda env: copy.deepcopy(env_values[env])


@pytest.fixture
def values_dir(tmp_path) -> Path:
    """A writable copy of platform/values/."""
    target = tmp_path / "values"
    shutil.copytree(helm_values.VALUES_DIR, target)
    return target
