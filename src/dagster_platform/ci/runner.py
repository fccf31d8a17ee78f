"""Which jobs a pipeline creates, and one job run here, both by gitlab-ci-local (config.py has its pin and install).

`job_whens` is `gitlab-ci-local --list-json`: every job's `rules:` evaluated as GitLab does, for the variables of
a merge-request, default-branch or other push pipeline. `run_job` is `gitlab-ci-local --force-shell-executor
<job>`: variables (predefined < YAML < project-level overrides), `before_script` + `script` in one shell,
`after_script` in another, on this machine with its tools (no image, services or caches).
What stays here, and why:
- `workflow: rules`: gitlab-ci-local 4.64.1 does not apply them (it lists and runs every job on any branch), so
  they are evaluated by the same tool as the rules of one probe job added to the pipeline;
- the pipeline's variables (`context_variables`): gitlab-ci-local takes branch and source from the checkout,
  and a merge-request pipeline needs `CI_COMMIT_BRANCH` unset and the MR variables set;
- `CI_PROJECT_DIR`: gitlab-ci-local sets it to `/builds/...` for jobs with an `image:` even under the shell
  executor, so the job's own directory is passed;
- the declared artifacts must exist afterwards: gitlab-ci-local only warns when none was copied;
- the job's environment: this machine's, without the caller's virtualenv, pytest, uv or CI variables.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dagster_platform.ci.config import Pipeline, expand_vars, flatten, gitlab_ci_local, job_commands

PROBE = "workflow-rules"


@dataclass
class JobResult:
    name: str
    returncode: int
    output: str
    commands: list[str]
    missing_artifacts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.missing_artifacts


def context_variables(
    pipeline_source: str = "push", branch: str = "main", default_branch: str = "main", tag: str | None = None
) -> dict:
    """GitLab's variables for a pipeline of this source on this branch, or of a pushed tag (None: unset, as GitLab
    leaves it)."""
    env = {"CI_PIPELINE_SOURCE": pipeline_source, "CI_DEFAULT_BRANCH": default_branch}
    if tag is not None:
        return env | {"CI_COMMIT_TAG": tag, "CI_COMMIT_BRANCH": None, "CI_COMMIT_REF_NAME": tag}
    if pipeline_source == "merge_request_event":
        return env | {
            "CI_COMMIT_BRANCH": None,
            "CI_MERGE_REQUEST_IID": "1",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": branch,
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": default_branch,
        }
    return env | {"CI_COMMIT_BRANCH": branch, "CI_COMMIT_REF_NAME": branch}


def _write(pipeline: Pipeline, state: Path) -> Path:
    """The resolved pipeline, plus a probe job whose rules are the workflow's, as a file gitlab-ci-local reads."""
    config = copy.deepcopy(pipeline.config)
    rules = (config.get("workflow") or {}).get("rules") or [{"when": "always"}]
    config[PROBE] = {"stage": ".pre", "script": ["true"], "rules": rules}
    path = state / "pipeline.gitlab-ci.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_whens(pipeline: Pipeline, variables: dict) -> dict[str, str]:
    """How each job appears in a pipeline with these variables: never, on_success, manual, ... (workflow first).

    A `parallel: matrix:` job counts once, under its own name.
    """
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        path = _write(pipeline, state)
        args = ("--list-json", "--no-json-schema-validation", "--file", path.name)
        done = gitlab_ci_local(state, state, *args, variables=variables)
    if done.returncode != 0 or not done.stdout.startswith("["):
        raise RuntimeError(f"gitlab-ci-local --list-json failed: {(done.stderr + done.stdout)[-2000:]}")
    whens: dict[str, str] = {}
    for job in json.loads(done.stdout):
        name = job["name"] if job["name"] in pipeline.config else job["name"].split(": [")[0]
        whens.setdefault(name, job["when"])
    if whens.pop(PROBE) == "never":
        return dict.fromkeys(whens, "never")
    return whens


def host_environment() -> dict[str, str]:
    """This machine's environment as a fresh job shell would see it: no caller's virtualenv or test settings."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
        and not k.startswith(("PYTEST_", "UV_", "CI_", "GITLAB_", "GCL_"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return env


def run_job(
    pipeline: Pipeline,
    job_name: str,
    workdir: Path,
    *,
    pipeline_source: str = "merge_request_event",
    branch: str = "feature",
    tag: str | None = None,
    overrides: dict[str, str] | None = None,
    timeout: float = 900,
) -> JobResult:
    """Run a job in workdir (in a pipeline of `tag` when given); raises RuntimeError if the job would not be
    created for this pipeline."""
    if pipeline.problems:
        raise RuntimeError(f"{pipeline.path} is not a pipeline gitlab-ci-local can run: {pipeline.problems}")
    variables = {**context_variables(pipeline_source, branch, tag=tag), **(overrides or {})}
    if job_whens(pipeline, variables).get(job_name, "never") == "never":
        where = f"tag {tag!r}" if tag is not None else repr(branch)
        raise RuntimeError(f"job {job_name!r} is not part of a {pipeline_source} pipeline on {where}")
    workdir = workdir.resolve()
    variables["CI_PROJECT_DIR"] = str(workdir)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.relpath(_write(pipeline, Path(tmp)), workdir)
        args = (job_name, "--force-shell-executor", "--no-json-schema-validation", "--file", path)
        done = gitlab_ci_local(workdir, Path(tmp), *args, variables=variables, env=host_environment(), timeout=timeout)
    job = pipeline.jobs()[job_name]
    missing = []
    if done.returncode == 0:  # the declared artifacts must exist (gitlab-ci-local only warns)
        artifacts = job.get("artifacts") or {}
        declared = flatten(artifacts.get("paths")) + flatten(list((artifacts.get("reports") or {}).values()))
        env = {**pipeline.variables, "CI_PROJECT_DIR": str(workdir)}
        missing = [p for p in (expand_vars(a, env) for a in declared) if not any(workdir.glob(p))]
    return JobResult(job_name, done.returncode, done.stdout + done.stderr, job_commands(job), missing)
