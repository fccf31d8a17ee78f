"""Render the template with two answer sets and run each rendered repo's own checks, as CI will."""

import json
import re
import subprocess
import tomllib

import pytest

from dagster_platform.paths import TEMPLATE_DIR, dagster_version, uv_executable

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
    assert repo.name == "sales-forecasts"
    assert (repo / "src/sales_forecasting/definitions.py").exists()
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    assert project["project"]["name"] == "sales-forecasts"
    assert project["tool"]["dg"]["project"]["root_module"] == "sales_forecasting"
    assert f"dagster=={dagster_version()}" in project["project"]["dependencies"]
    dockerfile = (repo / "Dockerfile").read_text()
    assert '"-m", "sales_forecasting.definitions"]' in dockerfile
    values = (repo / "deploy/values-production.yaml").read_text()
    assert "registry.example.org/analytics/sales-forecasts" in values
    assert "sales-forecasts-warehouse-production" in values
    settings = (repo / "src/sales_forecasting/settings.py").read_text()
    assert CUSTOM_ANSWERS["_production_db_domain"] in settings


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


@pytest.mark.parametrize("env", ["acceptance", "production"])
def test_default_deploy_values_match_the_platform_environment(rendered, env):
    """A repo made with the default answers deploys into the platform's namespace with its Postgres secret."""
    import yaml

    from dagster_platform.helm.values import environment_values

    platform = environment_values(env)
    values = yaml.safe_load((rendered["default"] / f"deploy/values-{env}.yaml").read_text())
    assert values["postgresqlSecretName"] == platform["global"]["postgresqlSecretName"]
    answers = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
    assert answers[f"_{env}_namespace"] == platform["environment"]["namespace"]
    (deployment,) = values["deployments"]
    assert {"name": "DAGSTER_ENV", "value": env} in deployment["env"]
