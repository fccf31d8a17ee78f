"""The code locations of the local stack and their virtualenvs.

- Every entry of platform/code-locations.yaml whose name is what the template renders with its default
  answers comes from the template (`dagster_platform.template.generate.render`), i.e. the example location.
- Every directory under platform/local/ with a pyproject.toml is a local-only location (the canary).

Each is copied or rendered under <state_dir>/locations/<name>/ and gets its own .venv from its own lock
(`uv sync --frozen --no-dev --compile-bytecode`, exactly what the location's Docker image installs: the
image sets UV_COMPILE_BYTECODE=1, and without bytecode every run worker pays seconds of CPU compiling
Dagster again when PYTHONDONTWRITEBYTECODE is set), so locations may use
different dependency versions, as they do on the cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dagster_platform.paths import CODE_LOCATIONS_YAML, PLATFORM_DIR

LOCAL_LOCATIONS_DIR = PLATFORM_DIR / "local"


@dataclass
class Location:
    name: str
    module: str
    source: str  # "template" or a directory path
    answers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    required: bool = True  # a required location that fails to start stops the stack
    python_file: str | None = None  # load this file instead of `module` (test fixtures)
    venv_from: str | None = None  # reuse another location's virtualenv (test fixtures only)


def registry() -> list[dict]:
    return yaml.safe_load(CODE_LOCATIONS_YAML.read_text())["locations"]


def _template_default_name() -> str:
    from dagster_platform.template.generate import default_answers

    answers = default_answers()
    # Mirrors cookiecutter.json's location_name expression.
    return answers["project_name"].lower().replace(" ", "-").replace("_", "-")


def default_locations() -> list[Location]:
    template_name = _template_default_name()
    found = []
    for entry in registry():
        if entry["name"] == template_name:
            found.append(Location(name=entry["name"], module=entry["module"], source="template"))
    if not found:
        raise ValueError(
            f"{CODE_LOCATIONS_YAML} has no entry for the template's example location {template_name!r}; "
            "the local stack renders that one from usercode-template/"
        )
    for directory in sorted(LOCAL_LOCATIONS_DIR.glob("*/pyproject.toml")):
        project = tomllib.loads(directory.read_text())["project"]
        package = project["name"].replace("-", "_")
        found.append(Location(name=project["name"], module=f"{package}.definitions", source=str(directory.parent)))
    return found


def _uv() -> str:
    uv = shutil.which("uv") or str(Path(sys.prefix).parent / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        raise FileNotFoundError("uv not found on PATH (make install bootstraps it into .tools/)")
    return uv


def prepare(location: Location, locations_dir: Path) -> Path:
    """Render/copy the location's source to locations_dir/<name> and sync its own .venv; returns the dir."""
    target = locations_dir / location.name
    if location.venv_from:
        return locations_dir / location.venv_from
    if location.source == "template":
        from dagster_platform.template.generate import render

        staging = locations_dir / ".render"
        shutil.rmtree(staging, ignore_errors=True)
        rendered = render(staging, location.answers)
        _sync_tree(rendered, target)
        shutil.rmtree(staging, ignore_errors=True)
    else:
        _sync_tree(Path(location.source), target)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    result = subprocess.run(
        [_uv(), "sync", "--frozen", "--no-dev", "--compile-bytecode", "--quiet"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`uv sync --frozen --no-dev` failed for location {location.name} in {target}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return target


def _sync_tree(source: Path, target: Path) -> None:
    """Make target's sources equal to source's, keeping target/.venv (a cache)."""
    target.mkdir(parents=True, exist_ok=True)
    for child in target.iterdir():
        if child.name != ".venv":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    ignore = shutil.ignore_patterns(".venv", "__pycache__", ".dagster_home", "*.pyc")
    for child in source.iterdir():
        if child.name in (".venv", "__pycache__", ".dagster_home"):
            continue
        if child.is_dir():
            shutil.copytree(child, target / child.name, ignore=ignore)
        else:
            shutil.copy2(child, target / child.name)


def venv_python(location_dir: Path) -> Path:
    return location_dir / ".venv" / "bin" / "python"
