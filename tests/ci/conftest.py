import shutil
import subprocess
from pathlib import Path

import pytest

from dagster_platform.ci_config import Pipeline, load_pipeline, platform_projects
from dagster_platform.ci_runner import JobResult, run_job
from dagster_platform.paths import ROOT
from dagster_platform.template import render

PLATFORM_CI = ROOT / ".gitlab-ci.yml"
USERCODE_CI = ROOT / "ci" / "usercode.gitlab-ci.yml"

# A second answer set: another location, package, platform project and pinned ref.
OTHER_ANSWERS = {
    "project_name": "Sales Forecasts",
    "location_name": "sales-forecasts",
    "package_name": "sales_forecasting",
    "platform_ci_project": "data/platform",
    "platform_ci_ref": "v2.3.0",
    "acceptance_namespace": "analytics-acc",
    "production_namespace": "analytics-prod",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=ci-test", "-c", "user.email=ci-test@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def as_checkout(repo: Path) -> Path:
    """Make a rendered repo a git checkout, as a CI job sees it."""
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "rendered from the template")
    return repo


def load_usercode(repo: Path) -> Pipeline:
    return load_pipeline(repo / ".gitlab-ci.yml", projects=platform_projects(), repo_root=repo)


@pytest.fixture(scope="session")
def rendered_repo(tmp_path_factory) -> Path:
    """The template rendered with its default answers, once per session."""
    return as_checkout(render(tmp_path_factory.mktemp("usercode")))


@pytest.fixture(scope="session")
def usercode_pipeline(rendered_repo) -> Pipeline:
    return load_usercode(rendered_repo)


@pytest.fixture(scope="session")
def platform_pipeline() -> Pipeline:
    return load_pipeline(PLATFORM_CI)


@pytest.fixture(scope="session")
def platform_remote(tmp_path_factory) -> str:
    """A git repo holding this working tree's platform tools, at branch `main`, for jobs that fetch them.

    Stands in for the platform project on GitLab (PLATFORM_CI_GIT_URL), so the jobs' real fetch runs.
    """
    repo = tmp_path_factory.mktemp("platform-remote")
    shutil.copytree(ROOT / "src" / "dagster_platform", repo / "src" / "dagster_platform")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "platform tools")
    return repo.as_uri()


@pytest.fixture(scope="session")
def executed_usercode_jobs(rendered_repo, usercode_pipeline) -> dict[str, JobResult]:
    """The rendered repo's lint and test jobs, executed once: lint first, as the stages order them."""
    results = {}
    for job in ("lint", "test"):
        results[job] = run_job(usercode_pipeline, job, rendered_repo)
    return results
