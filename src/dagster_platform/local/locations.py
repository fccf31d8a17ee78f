"""The code locations of the local runtime, and the one place that prepares a location's environment.

- The entry of platform/code-locations.yaml whose name is what the template renders with its default answers
  comes from the template (`dagster_platform.template.render.render`): the example location (`make dev`
  renders it once into .dev/ and runs its own `make dev`; `make stack` runs it as the cluster does).
- platform/ops/ is the platform's own operations location `platform-ops` (run-failure alerts, canary, run
  retention; stack only): deployed to every cluster, and locally given the stack's alert receiver.
- Every directory under platform/local/ with a pyproject.toml is a local-only location (the canary; stack only).

prepare() puts each under <locations dir>/<name>/ with its own .venv from its own lock, so locations may use
different dependency versions, as they do on the cluster. `make stack` re-renders/copies the sources every
time and syncs like the location's image (`uv sync --frozen --no-dev --compile-bytecode`: the image sets
UV_COMPILE_BYTECODE=1, and without bytecode every run worker pays seconds compiling Dagster again).
`make dev` renders the example once (it is the developer's to edit; `make clean` renders it again) and syncs
it as the rendered repo's own `make install` does (dev dependencies included, same `.venv/.synced` stamp).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dagster_platform.paths import CODE_LOCATIONS_YAML, DEV_DIR, PLATFORM_DIR, uv_executable

LOCAL_LOCATIONS_DIR = PLATFORM_DIR / "local"
OPS_DIR = PLATFORM_DIR / "ops"
OPS_LOCATION = "platform-ops"  # its pyproject's name; lifecycle gives it the alert webhook's variables


@dataclass
class Location:
    name: str
    module: str
    source: str  # "template" or a directory path
    env: dict[str, str] = field(default_factory=dict)
    required: bool = True  # a required location that fails to start stops the stack
    python_file: str | None = None  # load this file instead of `module` (test fixtures)
    venv_from: str | None = None  # reuse another location's virtualenv (test fixtures only)


def example_location() -> Location:
    """The template's example, as registered in platform/code-locations.yaml."""
    from dagster_platform.template.render import questions

    # Mirrors copier.yml's location_name default.
    name = questions()["project_name"]["default"].lower().replace(" ", "-").replace("_", "-")
    for entry in yaml.safe_load(CODE_LOCATIONS_YAML.read_text())["locations"]:
        if entry["name"] == name:
            return Location(name=name, module=entry["module"], source="template")
    raise ValueError(
        f"{CODE_LOCATIONS_YAML} has no entry for the template's example location {name!r}; "
        "the local runtime renders that one from usercode-template/"
    )


def default_module(source: Path) -> str:
    """The module a location directory's code server loads: <its project name, as a package>.definitions."""
    name = tomllib.loads((Path(source) / "pyproject.toml").read_text())["project"]["name"]
    return f"{name.replace('-', '_')}.definitions"


def default_locations() -> list[Location]:
    """`make stack`'s locations: the example, platform-ops, the local-only ones."""
    found = [example_location()]
    for pyproject in [OPS_DIR / "pyproject.toml", *sorted(LOCAL_LOCATIONS_DIR.glob("*/pyproject.toml"))]:
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        found.append(Location(name, default_module(pyproject.parent), str(pyproject.parent)))
    return found


def prepare(location: Location, locations_dir: Path, dev: bool = False) -> Path:
    """Render/copy the location's source to locations_dir/<name> (dev: only when it is not there yet, as it
    is the developer's to edit) and sync its own .venv (dev: with dev dependencies, skipped when its stamp is
    newer than the lock); returns the dir."""
    if location.venv_from:
        return locations_dir / location.venv_from
    target = locations_dir / location.name
    if not dev or not (target / "pyproject.toml").exists():
        if location.source == "template":
            from dagster_platform.template.render import render

            staging = locations_dir / ".render"
            shutil.rmtree(staging, ignore_errors=True)
            _sync_tree(render(staging), target)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            _sync_tree(Path(location.source), target)
    stamp = target / ".venv" / ".synced"
    if dev and stamp.exists() and all(stamp.stat().st_mtime >= (target / f).stat().st_mtime
                                      for f in ("uv.lock", "pyproject.toml")):  # fmt: skip
        return target
    uv = uv_executable()
    if not Path(uv).exists():
        raise FileNotFoundError("uv not found on PATH (make install bootstraps it into .tools/)")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    argv = [uv, "sync", "--frozen", "--compile-bytecode", "--quiet", *([] if dev else ["--no-dev"])]
    result = subprocess.run(argv, cwd=target, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(argv[1:])}` failed for location {location.name} in {target}:\n{result.stdout}\n{result.stderr}"
        )
    if dev:
        stamp.touch()
    return target


def ensure_example(dev_dir: Path = DEV_DIR) -> Path:
    """`make dev`'s example location: rendered into dev_dir once, its locked environment installed."""
    return prepare(example_location(), dev_dir, dev=True)


def _sync_tree(source: Path, target: Path) -> None:
    """Make target's sources equal to source's, keeping target/.venv (a cache)."""
    target.mkdir(parents=True, exist_ok=True)
    for child in target.iterdir():
        if child.name != ".venv":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    ignore = shutil.ignore_patterns(".venv", "__pycache__", ".dagster_home", "*.pyc")
    shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
