"""GitLab CI files as GitLab evaluates them, read through gitlab-ci-local (pinned in ci/tools/package-lock.json).

`gitlab-ci-local --preview` resolves includes, `default:`, `extends:`, anchors and `!reference` into the
effective pipeline; runner.py uses its `--list-json` (rules) and `--force-shell-executor` (job scripts).
What stays here, and why:
- the include walk: gitlab-ci-local fetches `include: component|project|template|remote` over the network (git
  clone, HTTPS). Offline, we resolve a component or `project:` of the platform to a local checkout (this repo: its
  templates/ at the pinned version) and GitLab's own templates to stand-ins in ci/tools/gitlab-templates/ (the real
  ones live on gitlab.com; our checks leave the template job's own keys alone), seed gitlab-ci-local's include
  cache with them, and report every include that cannot be found, not only the first. gitlab-ci-local then
  resolves the component itself: `spec: inputs` defaults, types and required inputs; what it does not check
  and GitLab refuses, an input the component does not declare, is refused here in GitLab's words;
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


def seed_includes(
    path: Path, state: Path, projects: dict[str, Path] | None = None, repo_root: Path | None = None
) -> Pipeline:
    """Check every include of `path` and seed gitlab-ci-local's include cache in `state` (config not read yet).

    projects maps the platform project's path (as a component or `include: project:` names it) to a local
    checkout (e.g. this repo); repo_root is where `include: local:` paths start (default: the CI file's directory).
    """
    pipeline = Pipeline(path=path, config={}, files=[path])
    _walk(pipeline, path, state / "includes", projects or {}, (repo_root or path.parent).resolve(), None, 0)
    return pipeline


def load_pipeline(path: Path, projects: dict[str, Path] | None = None, repo_root: Path | None = None) -> Pipeline:
    """Resolve a CI file with gitlab-ci-local, offline (seed_includes, then `gitlab-ci-local --preview`)."""
    repo_root = (repo_root or path.parent).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        pipeline = seed_includes(path, state, projects, repo_root)
        if pipeline.problems:
            return pipeline
        done = gitlab_ci_local(repo_root, state, "--preview", "--file", os.path.relpath(path.resolve(), repo_root))
    if done.returncode != 0 or not done.stdout.startswith("---"):
        pipeline.problems.append(f"{path}: gitlab-ci-local --preview failed: {refusal(done.stderr + done.stdout)}")
        return pipeline
    pipeline.config = yaml.safe_load(done.stdout)
    return pipeline


# gitlab-ci-local names a component by its place in the include cache; the message names its address instead.
_CACHED_COMPONENT = re.compile(
    r"[^\s`]*includes/[^/\s]+/(?P<project>\S+)/(?P<version>[^/\s]+)/templates/(?P<name>[^/\s]+)"
    r"(?:/template)?\.yml"
)
INVALID = "This GitLab CI configuration is invalid"


def refusal(output: str) -> str:
    """gitlab-ci-local's own refusal line(s) when it gave one (its git remote notes left out), else its output's end."""
    lines = [line.strip() for line in output.splitlines() if INVALID in line]
    text = "\n".join(lines) if lines else output[-2000:]
    return _CACHED_COMPONENT.sub(lambda m: f"component {m['project']}/{m['name']}@{m['version']}", text)


def _documents(file: Path) -> list:
    try:
        return list(yaml.load_all(file.read_text(), Loader=_Loader))  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CIConfigError(f"{file}: invalid YAML: {exc}") from exc


def _spec_and_config(file: Path) -> tuple[dict, object]:
    """A CI file's `spec:` header (empty when it has none) and its configuration document."""
    docs = _documents(file)
    if len(docs) == 2 and isinstance(docs[0], dict) and "spec" in docs[0]:
        return docs[0]["spec"] or {}, docs[1]
    if len(docs) != 1:
        raise CIConfigError(f"{file}: a CI file is one YAML document, or a `spec:` header and one after `---`")
    return {}, docs[0]


# include: component: <host>/<project path>/<component name>@<version>
_COMPONENT = re.compile(r"^(?P<host>[^/\s]+)/(?P<project>[^@\s]+)/(?P<name>[^/@\s]+)@(?P<version>\S+)$")
_PARTIAL = re.compile(r"^(~latest|\d+(\.\d+)?)$")


def _component(pipeline: Pipeline, file: Path, entry: dict, cache: Path, projects, root: Path, depth: int) -> None:
    """An `include: component:` of a known project: its file checked and put where gitlab-ci-local looks for it."""
    address = str(entry["component"])
    match = _COMPONENT.match(address)
    if match is None:
        pipeline.problems.append(f"{file}: component {address!r} is not <host>/<project>/<name>@<version>")
        return
    project, name, version = match["project"], match["name"], match["version"]
    if project not in projects:
        pipeline.problems.append(f"{file}: include of component project {project!r} that is not known here")
        return
    if _PARTIAL.match(version):
        pipeline.problems.append(f"{file}: component {address}: pin a full release, e.g. @1.4.0 (not {version})")
        return
    candidates = [Path("templates") / f"{name}.yml", Path("templates") / name / "template.yml"]
    found = next((c for c in candidates if (projects[project] / c).is_file()), None)
    if found is None:
        pipeline.problems.append(f"{file}: component {address}: {project} has no {' or '.join(map(str, candidates))}")
        return
    source = projects[project] / found
    spec, _ = _spec_and_config(source)
    declared = (spec.get("inputs") or {}) if isinstance(spec, dict) else {}
    unknown = sorted(set(entry.get("inputs") or {}) - set(declared))
    if unknown:  # GitLab's own refusal; gitlab-ci-local would ignore them
        pipeline.problems.append(f"{file}: component {address}: unknown input arguments: {', '.join(unknown)}")
        return
    pipeline.files.append(source)
    target = cache / _remote_host(root) / project / version / found
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    _walk(pipeline, source, cache, projects, root, (project, version), depth + 1)


def _walk(pipeline: Pipeline, file: Path, cache: Path, projects, root: Path, project, depth: int) -> None:
    """Check every include of `file` and put what gitlab-ci-local would download into its cache.

    project is (name, ref) while walking a file of another project: its local includes are that project's files.
    """
    _, data = _spec_and_config(file)
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
        if "component" in entry:
            _component(pipeline, file, entry, cache, projects, root, depth)
        elif "template" in entry:
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
    """Validate CI files against GitLab's CI schema as vendored in check-jsonschema (offline).

    A component file is two YAML documents (the `spec:` header, then the configuration): each is validated, and
    named `<file> (document N)` in the output."""
    with tempfile.TemporaryDirectory() as tmp:
        files, names = [], {}
        for path in paths:
            texts = re.split(r"(?m)^---[ \t]*$", path.read_text())
            if len(texts) == 1:
                files.append(str(path))
                continue
            for number, text in enumerate(texts, 1):
                if yaml.load(text, Loader=_Loader) is None:  # noqa: S506 - nothing before a leading `---`
                    continue
                part = Path(tmp) / f"{len(files)}-{path.stem}-{number}.yml"
                part.write_text(text)
                files.append(str(part))
                names[str(part)] = f"{path} (document {number})"
        command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", *files]
        result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    for part, name in names.items():
        output = output.replace(part, name)
    return result.returncode == 0, output


def platform_projects(project: str | None = None) -> dict[str, Path]:
    """The platform project as user-code repos name it in their component include (company.yaml) -> this checkout."""
    if project is None:
        from dagster_platform.platform_config import company

        project = company().platform_project
    return {project: ROOT}
