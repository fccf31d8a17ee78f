"""Helpers for tests/ci (fixtures live in conftest.py).

Environments, their names and their roles come from the repository's own platform files (platform_config), never
from the sample company: a company that renames, adds or removes an environment keeps a green suite. A test that
needs a role this company does not declare (a manual deploy, previews, a second environment) is skipped and says
which; test_generated.py shows every rule on a fixture company that has all of them.
"""

import copy
import subprocess
import time
from pathlib import Path

import pytest

from dagster_platform import platform_config
from dagster_platform.ci.config import Pipeline, load_pipeline, platform_projects
from dagster_platform.generate import COMPONENT, template_platform
from dagster_platform.paths import ROOT
from dagster_platform.platform_config import Environment

PLATFORM_CI = ROOT / ".gitlab-ci.yml"
# The user-code pipeline: a CI/CD component of the platform project, which rendered repos include by version.
USERCODE_CI = COMPONENT

COMPANY = platform_config.company()
# Every declared environment, in promotion order.
ENVIRONMENTS = platform_config.environments()
ENVS = [env.name for env in ENVIRONMENTS]
# Environments by role (None: this company declares none).
FIRST = ENVIRONMENTS[0]
LAST = ENVIRONMENTS[-1]
MANUAL = next((env for env in ENVIRONMENTS if env.manual), None)
AUTOMATIC = next((env for env in ENVIRONMENTS if not env.manual), None)
PREVIEW = platform_config.preview_environment()
# Where previews never run (the registry alone): the strictest such environment, production-tier ones first.
NO_PREVIEW = max(
    (env for env in ENVIRONMENTS if not env.previews), key=lambda e: (e.production, e.promotion), default=None
)
# A URL where nothing answers: the webserver of every environment a job must not reach.
DEAD_URL = "http://127.0.0.1:9"


def other_than(env: Environment) -> Environment | None:
    """Another environment than `env`, the strictest first (production tier, then the latest in promotion)."""
    others = [e for e in ENVIRONMENTS if e.name != env.name]
    return max(others, key=lambda e: (e.production, e.promotion), default=None)


def needs(role: str, env: Environment | None) -> Environment:
    """`env`, or skip the test: this company's platform/values/ declares no environment in that role."""
    if env is None:
        pytest.skip(f"platform/values/ declares no {role}; test_generated.py shows the rule on a fixture company")
    return env


def cluster_variables(live: Environment, url: str) -> dict[str, str]:
    """The project-level CI variables a team sets (ci/README.md) for every environment, as GitLab would hold them:
    each environment's kube context (its environment.kubeContext) and webserver; only `live`'s webserver answers."""
    variables = {}
    for env in ENVIRONMENTS:
        variables[f"KUBE_CONTEXT_{env.variable_suffix}"] = env.kube_context
        variables[f"DAGSTER_WEBSERVER_URL_{env.variable_suffix}"] = url if env.name == live.name else DEAD_URL
    return variables


def other_answers() -> dict:
    """A second answer set: another location, package, platform project and pinned release (the company's own
    environments, as `make new-usercode` passes them)."""
    platform = template_platform(COMPANY, ENVIRONMENTS)
    platform.update(ci_project="data/platform", ci_version="2.3.0")
    return {
        "project_name": "Sales Forecasts",
        "location_name": "sales-forecasts",
        "package_name": "sales_forecasting",
        "platform": platform,
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
