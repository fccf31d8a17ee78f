"""Where things live in the platform repo (one place, so modules never guess paths)."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "usercode-template"
PLATFORM_DIR = ROOT / "platform"
INSTANCE_YAML = PLATFORM_DIR / "instance" / "instance.yaml"
CODE_LOCATIONS_YAML = PLATFORM_DIR / "code-locations.yaml"
HELM_DIR = ROOT / "helm"
# Local, git-ignored state: the rendered example for `make dev` and its instance.
DEV_DIR = ROOT / ".dev"


@cache
def dagster_version() -> str:
    """The platform's one Dagster version, read from the pin in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        name, sep, version = dep.partition("==")
        if name.strip() == "dagster" and sep:
            return version.strip()
    raise RuntimeError("pyproject.toml does not pin dagster==<version>")


def uv_executable() -> str:
    """uv from PATH, else the copy `make` bootstraps into .tools/."""
    import shutil

    return shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
