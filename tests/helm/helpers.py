"""Helpers shared by tests/helm (fixtures stay in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import platform_config
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngine, split_manifests

ENVS = platform_config.environment_names()


def render(engine: HelmEngine, values: dict[str, Any], namespace: str | None = None) -> list[dict[str, Any]]:
    """The umbrella chart rendered by the real Helm engine, as objects."""
    namespace = namespace or values["environment"]["namespace"]
    return split_manifests(
        engine.render(helm_values.CHART_DIR, values, release=helm_values.RELEASE_NAME, namespace=namespace)
    )


def edit_yaml(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def set_in(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """An `edit_yaml` edit that sets the value at `path` (keys), creating mappings on the way."""

    def edit(data: dict[str, Any]) -> None:
        for part in path[:-1]:
            data = data.setdefault(part, {})
        data[path[-1]] = value

    return edit


def platform_check_errors(monkeypatch, capsys, attr: str, copy: Path, env: str = "acceptance") -> list[str]:
    """stderr lines of `dagster-platform platform check` with `paths.<attr>` pointing at `copy` (exit code 1)."""
    from dagster_platform import paths
    from dagster_platform.cli import main

    monkeypatch.setattr(paths, attr, copy)
    monkeypatch.setenv("DAGSTER_PLATFORM_HELM", "sdk")  # the same engine name on every machine
    assert main(["platform", "check", "--env", env]) == 1
    return capsys.readouterr().err.splitlines()


def objects_of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
