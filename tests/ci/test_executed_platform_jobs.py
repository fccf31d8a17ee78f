"""The platform's own jobs: the lint job executed here, the test job exactly `make test`.

The lint job runs in a fresh clone of the current commit, as a GitLab job would (uncommitted work in this
checkout is linted by `make test` itself, which runs `make lint` before the tests). The test job is `make test`,
which is what runs these tests, so it is asserted rather than re-run.
"""

import subprocess

import pytest

from dagster_platform.ci.config import flatten, load_pipeline
from dagster_platform.ci.runner import run_job
from dagster_platform.paths import ROOT


@pytest.mark.slow
def test_platform_lint_job_passes(tmp_path):
    checkout = tmp_path / "dagster-platform"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
    pipeline = load_pipeline(checkout / ".gitlab-ci.yml")
    result = run_job(pipeline, "lint", checkout, pipeline_source="push", branch="main")
    assert result.commands == ["make lint"]
    assert result.ok, result.output[-4000:]


def test_platform_test_job_is_exactly_make_test(platform_pipeline):
    job = platform_pipeline.jobs()["test"]
    assert flatten(job["script"]) == ["make test"]
    # .ci/run runs the same command, after installing the same system packages.
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in [line.strip() for line in ci_run.splitlines()]
    for package in ("postgresql", "chromium"):
        assert package in " ".join(flatten(job["before_script"]))
        assert package in ci_run
    # make test installs gitlab-ci-local (make ci-tools) with npm; it runs jobs with rsync.
    for package in ("nodejs", "npm", "rsync"):
        assert package in " ".join(flatten(job["before_script"]))
