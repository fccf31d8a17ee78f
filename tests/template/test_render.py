"""Render the template with two answer sets and run each rendered repo's own checks, as CI will."""

import re
import subprocess
import tomllib

import pytest

from dagster_platform.paths import dagster_version, uv_executable

from .helpers import CUSTOM_ANSWERS, run_make

pytestmark = pytest.mark.slow
LEFTOVER = re.compile(r"\{\{|\{%|cookiecutter", re.IGNORECASE)


@pytest.mark.parametrize("answers", ["default", "custom"])
def test_no_template_leftovers(rendered, answers):
    repo = rendered[answers]
    offenders = [
        f"{path.relative_to(repo)}: {match.group(0)}"
        for path in repo.rglob("*")
        if path.is_file() and ".venv" not in path.parts
        for match in [LEFTOVER.search(path.read_text(errors="replace"))]
        if match
    ]
    assert offenders == []


def test_custom_answers_land_where_they_belong(rendered):
    repo = rendered["custom"]
    location, package = CUSTOM_ANSWERS["location_name"], CUSTOM_ANSWERS["package_name"]
    platform = CUSTOM_ANSWERS["platform"]
    assert repo.name == location
    assert (repo / f"src/{package}/definitions.py").exists()
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    assert project["project"]["name"] == location
    assert project["tool"]["dg"]["project"]["root_module"] == package
    assert f"dagster=={dagster_version()}" in project["project"]["dependencies"]
    dockerfile = (repo / "Dockerfile").read_text()
    assert f'"-m", "{package}.definitions"]' in dockerfile
    for env in platform["environments"]:
        values = (repo / f"deploy/values-{env['name']}.yaml").read_text()
        assert f"{platform['image_registry']}/{location}" in values
        assert f"{location}-warehouse-{env['name']}" in values
    settings = (repo / f"src/{package}/settings.py").read_text()
    assert all(f'"{env["warehouse_domain"]}"' in settings for env in platform["environments"])


@pytest.mark.parametrize("answers", ["default", "custom"])
def test_rendered_repo_passes_its_own_lint_test_and_check(rendered, answers):
    repo = rendered[answers]
    # The first repo warms the uv cache; the second must then install and pass with no network at all.
    result = run_make(repo, "lint", "test", "check", offline=answers == "custom")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr
    assert (repo / "reports/junit.xml").exists()


@pytest.mark.parametrize("answers", ["default", "custom"])
def test_template_lock_matches_its_pyproject(rendered, answers):
    repo = rendered[answers]
    result = subprocess.run(
        [uv_executable(), "lock", "--check", "--offline"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
