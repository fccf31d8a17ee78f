"""A small, honest job runner: evaluate a job's rules and run its script here like a GitLab shell runner.

What it does as GitLab does: workflow and job `rules:` (the `if:` expressions we use: ==, !=, =~, &&, ||,
bare variables), variables (predefined < global < job < project-level overrides, `$VAR` expanded),
`before_script` + `script` in one shell with `set -eo pipefail`, `after_script` in a second shell, and the
artifacts the job declares must exist afterwards.
What it does not: pull the job's image (the commands run on this machine, with its tools), services, caches.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dagster_platform.ci.config import Pipeline, expand_vars, flatten, job_commands

ZERO_SHA = "0" * 40


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


def predefined_variables(
    workdir: Path, pipeline_source: str = "push", branch: str | None = "main", default_branch: str = "main"
) -> dict[str, str]:
    sha = ZERO_SHA
    if (workdir / ".git").exists():
        done = subprocess.run(["git", "-C", str(workdir), "rev-parse", "HEAD"], capture_output=True, text=True)
        sha = done.stdout.strip() or ZERO_SHA
    env = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PROJECT_DIR": str(workdir),
        "CI_PROJECT_NAME": workdir.name,
        "CI_PROJECT_URL": f"https://gitlab.example.invalid/group/{workdir.name}",
        "CI_COMMIT_SHA": sha,
        "CI_COMMIT_SHORT_SHA": sha[:8],
        "CI_DEFAULT_BRANCH": default_branch,
        "CI_PIPELINE_SOURCE": pipeline_source,
        "CI_REGISTRY": "registry.example.invalid",
        "CI_REGISTRY_IMAGE": f"registry.example.invalid/group/{workdir.name}",
        "CI_SERVER_PROTOCOL": "https",
        "CI_SERVER_HOST": "gitlab.example.invalid",
        "CI_SERVER_PORT": "443",
        "CI_SERVER_URL": "https://gitlab.example.invalid",
        "CI_API_V4_URL": "https://gitlab.example.invalid/api/v4",
    }
    if pipeline_source == "merge_request_event":
        env["CI_MERGE_REQUEST_IID"] = "1"
        env["CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"] = branch or "feature"
        env["CI_MERGE_REQUEST_TARGET_BRANCH_NAME"] = default_branch
    elif branch:
        env["CI_COMMIT_BRANCH"] = branch
        env["CI_COMMIT_REF_NAME"] = branch
    return env


# --- rules ------------------------------------------------------------------------------------------------

_TERM = re.compile(r"^\$(\w+)\s*(==|!=|=~|!~)\s*(.+)$")


def _value(token: str, env: dict[str, str]) -> str | None:
    token = token.strip()
    if token.startswith("$"):
        return env.get(token[1:].strip("{}")) or None
    if token == "null":
        return None
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    raise ValueError(f"unsupported operand {token!r}")


def evaluate_if(expression: str, env: dict[str, str]) -> bool:
    """The subset of GitLab's rules:if we use; raises ValueError on anything else (never guesses)."""
    expression = " ".join(expression.split())
    for alternative in expression.split("||"):
        if all(_evaluate_term(term.strip(), env) for term in alternative.split("&&")):
            return True
    return False


def _evaluate_term(term: str, env: dict[str, str]) -> bool:
    if term.startswith("(") or term.endswith(")"):
        raise ValueError(f"parentheses are not supported: {term!r}")
    match = _TERM.match(term)
    if not match:
        if re.fullmatch(r"\$\w+", term):
            return bool(env.get(term[1:]))
        raise ValueError(f"unsupported rules:if term {term!r}")
    name, op, right = match.groups()
    left = env.get(name) or None
    if op in ("=~", "!~"):
        pattern = right.strip()
        if not (pattern.startswith("/") and pattern.rstrip("i").endswith("/")):
            raise ValueError(f"unsupported regex {pattern!r}")
        flags = re.I if pattern.endswith("i") else 0
        found = left is not None and re.search(pattern.rstrip("i")[1:-1], left, flags) is not None
        return found if op == "=~" else not found
    equal = left == _value(right, env)
    return equal if op == "==" else not equal


def evaluate_rules(rules: list[dict] | None, env: dict[str, str]) -> str:
    """'never' when no rule matches (or the first match says never); else the matching rule's `when`."""
    if rules is None:
        return "on_success"
    for rule in rules:
        if "if" not in rule or evaluate_if(str(rule["if"]), env):
            return str(rule.get("when", "on_success"))
    return "never"


def pipeline_runs(pipeline: Pipeline, env: dict[str, str]) -> bool:
    rules = (pipeline.config.get("workflow") or {}).get("rules")
    return evaluate_rules(rules, env) != "never"


def job_when(pipeline: Pipeline, job_name: str, env: dict[str, str]) -> str:
    """How the job appears in a pipeline for env: never, on_success, manual, ... (workflow applied first)."""
    if not pipeline_runs(pipeline, env):
        return "never"
    job = pipeline.jobs()[job_name]
    when = evaluate_rules(job.get("rules"), env)
    if job.get("rules") is None and "when" in job:
        when = str(job["when"])
    return when


# --- execution ----------------------------------------------------------------------------------------------


def job_environment(
    pipeline: Pipeline, job_name: str, predefined: dict[str, str], overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """Predefined < global YAML variables < job variables < project-level overrides, each `$VAR`-expanded."""
    job = pipeline.jobs()[job_name]
    env = dict(predefined)
    env["CI_JOB_NAME"] = job_name
    env["CI_JOB_STAGE"] = str(job.get("stage", "test"))
    for layer in (pipeline.variables, _job_variables(job)):
        expanded = {k: expand_vars(v, {**env, **(overrides or {})}) for k, v in layer.items()}
        env.update(expanded)
    env.update(overrides or {})
    return env


def _job_variables(job: dict) -> dict[str, str]:
    out = {}
    for key, value in (job.get("variables") or {}).items():
        out[key] = str(value.get("value", "")) if isinstance(value, dict) else str(value)
    return out


def host_environment() -> dict[str, str]:
    """This machine's environment as a fresh job shell would see it: no caller's virtualenv or test settings."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
        and not k.startswith(("PYTEST_", "UV_", "CI_", "GITLAB_"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return env


def declared_artifacts(job: dict) -> list[str]:
    artifacts = job.get("artifacts") or {}
    paths = list(artifacts.get("paths") or [])
    for report in (artifacts.get("reports") or {}).values():
        paths.extend([report] if isinstance(report, str) else report)
    return paths


def run_job(
    pipeline: Pipeline,
    job_name: str,
    workdir: Path,
    *,
    pipeline_source: str = "merge_request_event",
    branch: str | None = "feature",
    overrides: dict[str, str] | None = None,
    timeout: float = 900,
) -> JobResult:
    """Run a job's commands in workdir; raises RuntimeError if the job would not be created for this pipeline."""
    predefined = predefined_variables(workdir, pipeline_source, branch)
    when = job_when(pipeline, job_name, {**predefined, **(overrides or {})})
    if when == "never":
        raise RuntimeError(f"job {job_name!r} is not part of a {pipeline_source} pipeline on {branch!r}")
    job = pipeline.jobs()[job_name]
    env = {**host_environment(), **job_environment(pipeline, job_name, predefined, overrides)}
    commands = job_commands(job)
    output = []
    returncode = _run_shell(commands, env, workdir, timeout, output)
    after = flatten(job.get("after_script"))
    if after:
        _run_shell(after, env, workdir, timeout, output)
    missing = []
    if returncode == 0:
        for artifact in declared_artifacts(job):
            path = expand_vars(artifact, env)
            if not any(workdir.glob(path)):
                missing.append(path)
    return JobResult(job_name, returncode, "".join(output), commands, missing)


def _run_shell(commands: list[str], env: dict[str, str], workdir: Path, timeout: float, output: list[str]) -> int:
    lines = ["set -eo pipefail"]
    for command in commands:
        lines.append(f"printf '%s\\n' {_quote('$ ' + command.splitlines()[0])}")
        lines.append(command)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
        script = handle.name
    try:
        done = subprocess.run(
            ["bash", script],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.unlink(script)
    output.append(done.stdout)
    return done.returncode


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
