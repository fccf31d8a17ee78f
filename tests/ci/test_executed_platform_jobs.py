"""The platform's own jobs: the lint job executed here, the test job exactly `make test`.

The lint job runs in a fresh clone of the current commit, as a GitLab job would (uncommitted work in this
checkout is linted by `make test` itself, which runs `make lint` before the tests). The test job is `make test`,
which is what runs these tests, so it is asserted rather than re-run.
"""

import re
import shlex
import subprocess

import pytest

from dagster_platform.ci.config import flatten, load_pipeline
from dagster_platform.ci.runner import run_job
from dagster_platform.paths import ROOT
from dagster_platform.platform_config import company

from .helpers import as_checkout


@pytest.mark.slow
def test_platform_lint_job_passes(tmp_path):
    checkout = tmp_path / "dagster-platform"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
    pipeline = load_pipeline(checkout / ".gitlab-ci.yml")
    result = run_job(pipeline, "lint", checkout, pipeline_source="push", branch="main")
    assert result.commands == ["make lint"]
    # What failed, without uv's list of the packages it installed first.
    output = "\n".join(line for line in result.output.splitlines() if not re.match(r"lint >\s+[-+] \S+==", line))
    assert result.ok, output[-4000:]


@pytest.mark.parametrize("prefix", ["", "v"])
def test_release_job_releases_only_the_version_repos_pin(prefix, platform_pipeline, tmp_path):
    """The release job's script in a tag pipeline (its `release:` is GitLab's, not run here): the tag
    platform/company.yaml's gitlab.version names passes, any other fails in one line naming both."""
    version = company().platform_version
    (tmp_path / "README.md").write_text("tagged\n")
    workdir = as_checkout(tmp_path)
    tag = prefix + version
    result = run_job(platform_pipeline, "release", workdir, pipeline_source="push", tag=tag)
    if tag == version:
        assert result.ok, result.output[-4000:]
    else:
        assert result.returncode != 0
        assert f"release: tag {tag} is not platform/company.yaml gitlab.version ({version})" in result.output


def _apt_packages(line: str) -> set[str]:
    words = shlex.split(line)
    return {w for w in words[words.index("install") + 1 :] if not w.startswith("-")} if "install" in words else set()


def test_platform_test_job_is_exactly_make_test(platform_pipeline):
    job = platform_pipeline.jobs()["test"]
    assert flatten(job["script"]) == ["make test"]
    # .ci/run runs the same command and nothing else.
    ci_run = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci_run if line.startswith("make")] == ["make test"]
    # make test checks its system packages first (ci/scripts/test-prerequisites.sh: PostgreSQL, Chromium, Node and
    # npm for gitlab-ci-local, rsync); the CI job installs exactly those before it.
    prerequisites = (ROOT / "ci" / "scripts" / "test-prerequisites.sh").read_text()
    needed = {p for group in re.findall(r'need="\$need ([^"]+)"', prerequisites) for p in group.split()}
    assert {"postgresql", "chromium", "npm", "rsync"} <= needed, needed
    installed = set().union(*(_apt_packages(line) for line in flatten(job["before_script"])))
    assert installed == needed, "the test job's before_script and ci/scripts/test-prerequisites.sh disagree"
