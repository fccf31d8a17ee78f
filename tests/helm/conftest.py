"""Shared fixtures for tests/helm: environment values, and renders by the real Helm engine."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngine, split_manifests

ENVS = helm_values.ENVIRONMENTS


@pytest.fixture(scope="session")
def engine() -> HelmEngine:
    return HelmEngine()


@pytest.fixture(scope="session")
def env_values() -> dict[str, dict[str, Any]]:
    """The user-supplied values of each environment (base + env + generated)."""
    return {env: helm_values.environment_values(env) for env in ENVS}


def render(engine: HelmEngine, values: dict[str, Any], namespace: str | None = None) -> list[dict[str, Any]]:
    namespace = namespace or values["environment"]["namespace"]
    return split_manifests(
        engine.render(helm_values.CHART_DIR, values, release=helm_values.RELEASE_NAME, namespace=namespace)
    )


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


def edit_yaml(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def objects_of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
