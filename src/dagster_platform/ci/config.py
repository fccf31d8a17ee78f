"""GitLab CI files as GitLab evaluates them, read through gitlab-ci-local (pinned in ci/tools/package-lock.json).

`gitlab-ci-local --preview` resolves includes, `default:`, `extends:`, anchors and `!reference` into the
effective pipeline; runner.py uses its `--list-json` (rules) and `--force-shell-executor` (job scripts).
What stays here, and why:
- the include walk: gitlab-ci-local fetches `include: project|template|remote` over the network (git clone,
  HTTPS). Offline, we resolve `project:` to a local checkout (the platform repo) and GitLab's own templates to
  stand-ins in ci/tools/gitlab-templates/ (the real ones live on gitlab.com; our checks leave the template
  job's own keys alone), seed gitlab-ci-local's include cache with them, and report every include that cannot
  be found, not only the first;
- `default:`: gitlab-ci-local 4.64.1 inherits only the keys in DEFAULT_KEYS, GitLab more (`interruptible`,
  `retry`, `tags`, `timeout`, ...); a `default:` key it would drop is reported, so our files state those per job
  and what is checked is what GitLab runs;
- `schema_check`: check-jsonschema with GitLab's CI schema (vendored, offline) on each file as written;
- small readers for the policy: job variables, commands, `$VAR` references.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dagster_platform.paths import ROOT

# Installed by `make ci-tools` (npm ci of ci/tools/package-lock.json into the git-ignored .tools/ci-tools/).
GITLAB_CI_LOCAL = Path(
    os.environ.get("GITLAB_CI_LOCAL", ROOT / ".tools" / "ci-tools" / "node_modules" / ".bin" / "gitlab-ci-local")
)
# Stand-ins for the GitLab templates we include, by template name.
GITLAB_TEMPLATES = ROOT / "ci" / "tools" / "gitlab-templates"
# Where gitlab-ci-local looks for `include: template:` in its cache (it would download them from there).
TEMPLATE_CACHE = "gitlab.com/gitlab-org/gitlab/-/raw/HEAD/lib/gitlab/ci/templates"
# The `default:` keys gitlab-ci-local 4.64.1 passes to jobs (data-expander.js, inheritDefault).
DEFAULT_KEYS = {"artifacts", "cache", "services", "image", "before_script", "after_script"}
NOT_JOBS = {"stages", "variables", "workflow", "include", "default", "spec"}


class CIConfigError(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """Reads a CI file as written: `!reference [job, key]` tags are kept as lists (gitlab-ci-local resolves them)."""


_Loader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


def gitlab_ci_local(cwd: Path, state: Path, *args: str, variables=None, env=None, timeout: float = 120):
    """Run gitlab-ci-local in cwd with its state (include cache, logs, artifacts) in `state`, outside cwd.

    variables: project-level CI variables (`--variable`); a value of None unsets a predefined one.
    """
    if not GITLAB_CI_LOCAL.exists():
        raise CIConfigError("gitlab-ci-local is not installed: run `make ci-tools` (npm ci in ci/tools)")
    variables = variables or {}
    command = [str(GITLAB_CI_LOCAL), "--state-dir", os.path.relpath(state, cwd), "--home", str(state), "--no-color"]
    command += ["--ignore-predefined-vars", ",".join(variables), *args]
    for name, value in variables.items():
        command += ["--unset-variable", name] if value is None else ["--variable", f"{name}={value}"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Pipeline:
    """A CI file with its includes resolved: `config` is gitlab-ci-local's preview, what GitLab would evaluate."""

    path: Path
    config: dict
    files: list[Path] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def stages(self) -> list[str]:
        return [s for s in self.config.get("stages", ["build", "test", "deploy"]) if s not in (".pre", ".post")]

    @property
    def variables(self) -> dict[str, str]:
        return job_variables(self.config)

    def jobs(self) -> dict[str, dict]:
        """The visible jobs, each complete (`extends`, `default:`, `!reference` and anchors resolved)."""
        return {k: v for k, v in self.config.items() if k not in NOT_JOBS and isinstance(v, dict) and k[0] != "."}


def load_pipeline(path: Path, projects: dict[str, Path] | None = None, repo_root: Path | None = None) -> Pipeline:
    """Resolve a CI file with gitlab-ci-local, offline.

    projects maps `include: project:` names to local checkouts (e.g. the platform project to this repo);
    repo_root is where `include: local:` paths start (default: the CI file's directory).
    """
    projects, repo_root = projects or {}, (repo_root or path.parent).resolve()
    pipeline = Pipeline(path=path, config={}, files=[path])
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        _walk(pipeline, path, state / "includes", projects, repo_root, None, 0)
        if pipeline.problems:
            return pipeline
        done = gitlab_ci_local(repo_root, state, "--preview", "--file", os.path.relpath(path.resolve(), repo_root))
    if done.returncode != 0 or not done.stdout.startswith("---"):
        pipeline.problems.append(f"{path}: gitlab-ci-local --preview failed: {(done.stderr + done.stdout)[-2000:]}")
        return pipeline
    pipeline.config = yaml.safe_load(done.stdout)
    return pipeline


def _walk(pipeline: Pipeline, file: Path, cache: Path, projects, root: Path, project, depth: int) -> None:
    """Check every include of `file` and put what gitlab-ci-local would download into its cache.

    project is (name, ref) while walking a file of another project: its local includes are that project's files.
    """
    try:
        data = yaml.load(file.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CIConfigError(f"{file}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CIConfigError(f"{file}: a CI file must be a mapping")
    dropped = sorted(set(data.get("default") or {}) - DEFAULT_KEYS)
    if dropped:
        pipeline.problems.append(f"{file}: default: {dropped} is not applied by gitlab-ci-local; set it per job")
    entries = data.get("include") or []
    for entry in entries if isinstance(entries, list) else [entries]:
        entry = {"local": entry} if isinstance(entry, str) else entry
        if depth >= 10:
            pipeline.problems.append(f"{file}: includes nested deeper than GitLab allows")
            return
        if "template" in entry:
            pipeline.templates.append(entry["template"])
            stand_in = GITLAB_TEMPLATES / entry["template"]
            if not stand_in.is_file():
                pipeline.problems.append(f"{file}: unknown GitLab template {entry['template']!r}")
                continue
            target = cache / TEMPLATE_CACHE / entry["template"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(stand_in, target)
            _walk(pipeline, stand_in, cache, projects, root, project, depth + 1)
        elif "local" in entry and project is None:
            target = root / str(entry["local"]).lstrip("/")
            if not target.is_file():
                pipeline.problems.append(f"{file}: include {entry['local']} does not exist")
                continue
            pipeline.files.append(target)
            _walk(pipeline, target, cache, projects, root, None, depth + 1)
        elif "project" in entry or "local" in entry:
            name, ref = (str(entry["project"]), entry.get("ref")) if "project" in entry else project
            if name not in projects:
                pipeline.problems.append(f"{file}: include of project {name!r} that is not known here")
                continue
            if not ref:
                pipeline.problems.append(f"{file}: include of {name!r} without a ref")
            for included in flatten(entry.get("file") or entry.get("local")):
                source = projects[name] / str(included).lstrip("/")
                if not source.is_file():
                    pipeline.problems.append(f"{file}: include {name}:{included} does not exist")
                    continue
                pipeline.files.append(source)
                target = cache / _remote_host(root) / name / str(ref or "HEAD") / str(included).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)
                _walk(pipeline, source, cache, projects, root, (name, ref), depth + 1)
        else:
            pipeline.problems.append(f"{file}: include kind not supported offline: {entry}")


def _remote_host(repo: Path) -> str:
    """The host gitlab-ci-local files project includes under: the origin's, else its fallback gitlab.com."""
    done = subprocess.run(["git", "remote", "get-url", "origin"], cwd=repo, capture_output=True, text=True)
    match = re.match(r"(?:https?://|ssh://)?(?:[^@/\s]+@)?([^/:\s]+)[:/]", done.stdout.strip())
    return match.group(1) if done.returncode == 0 and match else "gitlab.com"


def flatten(lines) -> list[str]:
    """A script as a list of commands (a single string, or lists nested by anchors, flattened)."""
    if lines is None:
        return []
    if isinstance(lines, str):
        return [lines]
    return [line for item in lines for line in flatten(item)]


def job_commands(job: dict) -> list[str]:
    """before_script + script, the commands run in one shell (after_script runs in another)."""
    return flatten(job.get("before_script")) + flatten(job.get("script"))


def job_variables(job: dict) -> dict[str, str]:
    """`variables:` of a job (or of the pipeline) as strings; `{value: ...}` forms read."""
    out = {}
    for key, value in (job.get("variables") or {}).items():
        value = value.get("value", "") if isinstance(value, dict) else value
        out[key] = "" if value is None else str(value)
    return out


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_vars(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def referenced_variables(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VAR.finditer(text)}


def schema_check(paths: list[Path]) -> tuple[bool, str]:
    """Validate CI files against GitLab's CI schema as vendored in check-jsonschema (offline)."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def platform_projects(project: str | None = None) -> dict[str, Path]:
    """The platform project as user-code repos name it in their include (platform/company.yaml) -> this checkout."""
    if project is None:
        from dagster_platform.platform_config import company

        project = company().platform_project
    return {project: ROOT}
