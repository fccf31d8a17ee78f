"""Helpers shared by tests/helm (fixtures stay in conftest.py).

Environments, their names and their roles come from the repository's own platform files (platform_config), never
from the sample company: a company that renames, adds or removes an environment keeps a green suite. A list below
that is empty for a company (no production-tier environment, no environment with previews, a single environment)
leaves the tests parametrized over it out, as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import platform_config
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngine, split_manifests
from dagster_platform.mappings import deep_merge

ENVIRONMENTS = platform_config.environments()
# Every declared environment, in promotion order.
ENVS = [env.name for env in ENVIRONMENTS]
COMPANY = platform_config.company()
# Environments by role: the GitLab tier says which are production (previews refused, read-only webserver).
PRODUCTION_ENVS = [env.name for env in ENVIRONMENTS if env.production]
NON_PRODUCTION_ENVS = [env.name for env in ENVIRONMENTS if not env.production]
PREVIEW_ENVS = [env.name for env in ENVIRONMENTS if env.previews]
NO_PREVIEW_ENVS = [env.name for env in ENVIRONMENTS if not env.previews]
# (environment, another environment): every ordered pair of two different ones.
PAIRS = [(env, other) for env in ENVS for other in ENVS if other != env]


def declared(name: str) -> platform_config.Environment:
    return platform_config.environment(name)


def envs_where(predicate: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The environments whose merged values (base + file + generated) satisfy `predicate`."""
    return [env for env in ENVS if predicate(helm_values.environment_values(env))]


def with_chart_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """The values the chart's templates see: the chart's own values.yaml under `values`."""
    return deep_merge(yaml.safe_load((helm_values.CHART_DIR / "values.yaml").read_text()), values)


def env_file(values_dir: Path, env: str) -> Path:
    return values_dir / f"{env}.yaml"


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
    """An edit (of `edit_yaml`, or of values: `set_in(path, v)(values)`) that sets the value at `path` (keys),
    creating mappings on the way."""

    def edit(data: dict[str, Any]) -> None:
        for part in path[:-1]:
            data = data.setdefault(part, {})
        data[path[-1]] = value

    return edit


def platform_check_errors(monkeypatch, capsys, attr: str, copy: Path, env: str = ENVS[0], code: int = 1) -> list[str]:
    """stderr lines of `dagster-platform platform check` with `paths.<attr>` pointing at `copy`.

    Exit code 1: the checks ran and found problems; 2: a platform file is wrong, nothing was checked."""
    from dagster_platform import paths
    from dagster_platform.cli import main

    monkeypatch.setattr(paths, attr, copy)
    monkeypatch.setenv("DAGSTER_PLATFORM_HELM", "sdk")  # the same engine name on every machine
    assert main(["platform", "check", "--env", env]) == code
    return capsys.readouterr().err.splitlines()


def use_values_dir(monkeypatch, values_dir: Path) -> None:
    """Make every reader of platform/values/ (the CLI included) read `values_dir` instead."""
    from dagster_platform import paths

    monkeypatch.setattr(paths, "VALUES_DIR", values_dir)
    monkeypatch.setattr(helm_values, "VALUES_DIR", values_dir)


def objects_of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
