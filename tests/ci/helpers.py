"""Helpers for tests/ci (fixtures live in conftest.py)."""

import copy
import subprocess
import time
from pathlib import Path

from dagster_platform.ci.config import Pipeline, load_pipeline, platform_projects
from dagster_platform.paths import ROOT

PLATFORM_CI = ROOT / ".gitlab-ci.yml"
USERCODE_CI = ROOT / "ci" / "usercode.gitlab-ci.yml"

# A second answer set: another location, package, platform project and pinned ref.
OTHER_ANSWERS = {
    "project_name": "Sales Forecasts",
    "location_name": "sales-forecasts",
    "package_name": "sales_forecasting",
    "_platform_ci_project": "data/platform",
    "_platform_ci_ref": "v2.3.0",
    "_acceptance_namespace": "analytics-acc",
    "_production_namespace": "analytics-prod",
}

# Pipelines GitLab creates, as (CI_PIPELINE_SOURCE, branch).
MR = {"pipeline_source": "merge_request_event", "branch": "feature"}
MAIN = {"pipeline_source": "push", "branch": "main"}
FEATURE_PUSH = {"pipeline_source": "push", "branch": "feature"}


# Stands in for helm in executed deploy jobs (no cluster here): records its arguments, one per line, each call ended
# by '--'; a values file given with -f must exist.
HELM_STUB = """#!/bin/sh
printf '%s\\n' "$@" '--' >> "$HELM_ARGS_LOG"
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ] && [ ! -f "$arg" ]; then echo "helm-stub: no values file $arg" >&2; exit 1; fi
  prev="$arg"
done
"""


def helm_calls(log: Path) -> list[list[str]]:
    """The argv of each call HELM_STUB recorded in `log` (none when it never ran)."""
    calls, current = [], []
    for line in log.read_text().splitlines() if log.exists() else []:
        if line == "--":
            calls.append(current)
            current = []
        else:
            current.append(line)
    return calls


def mutated(pipeline: Pipeline, change) -> Pipeline:
    """A copy of `pipeline` whose configuration `change(config)` edited (the original stays as loaded)."""
    config = copy.deepcopy(pipeline.config)
    change(config)
    return Pipeline(path=pipeline.path, config=config, files=pipeline.files, templates=list(pipeline.templates))


DELETE = object()


def set_key(path: list, value):
    """A `mutated` change that sets (or, with DELETE, removes) the key at `path`, creating mappings on the way."""

    def change(config):
        target = config
        for key in path[:-1]:
            target = target.setdefault(key, {})
        if value is DELETE:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value

    return change


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


def fresh_checkout(repo: Path, tmp_path: Path) -> Path:
    """What a GitLab job starts from: a clone of the commit, nothing left over from other jobs."""
    target = tmp_path / repo.name
    subprocess.run(["git", "clone", "-q", str(repo), str(target)], check=True)
    return target


def load_usercode(repo: Path, project: str | None = None) -> Pipeline:
    return load_pipeline(repo / ".gitlab-ci.yml", projects=platform_projects(project), repo_root=repo)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up in {timeout}s")
