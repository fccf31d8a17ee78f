"""Where things live in the platform repo (one place, so modules never guess paths)."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "usercode-template"
# The files a new user-code repo is made of (copier.yml's _subdirectory).
TEMPLATE_PROJECT = TEMPLATE_DIR / "project"
PLATFORM_DIR = ROOT / "platform"
INSTANCE_YAML = PLATFORM_DIR / "instance" / "instance.yaml"
CODE_LOCATIONS_YAML = PLATFORM_DIR / "code-locations.yaml"
HELM_DIR = ROOT / "helm"
# The user-code repo's local instance (its `make dev`, `make check`): the local runtime's dev-mode dagster.yaml,
# committed in the template so rendered repos and `copier update` carry it (`make template-instance`).
TEMPLATE_INSTANCE = TEMPLATE_PROJECT / "dagster.yaml"
# The company's facts (same in every environment) and the environments' values files (platform_config.py).
COMPANY_YAML = PLATFORM_DIR / "company.yaml"
VALUES_DIR = PLATFORM_DIR / "values"
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


def libraries_version(core: str) -> str | None:
    """The version of Dagster's integration libraries (dagster-postgres, -k8s, -aws) released with core `core`:
    1.MINOR.PATCH ships with 0.(MINOR+16).PATCH. None when `core` is no 1.MINOR.PATCH release."""
    match = re.fullmatch(r"1\.(\d+)\.(\d+)", core)
    return f"0.{int(match[1]) + 16}.{match[2]}" if match else None


def grpc_port() -> int:
    """The port every user-code code server serves; platform/code-locations.yaml must register it."""
    from dagster_platform.platform_config import company

    return company().grpc_port


def uv_executable() -> str:
    """uv from PATH, else the copy `make` bootstraps into .tools/."""
    import shutil

    return shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
