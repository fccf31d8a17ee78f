"""Read GitLab CI files the way GitLab does, offline: includes, `default:`, `extends:`, anchors, `!reference`.

Only what our checks need: the effective jobs of a pipeline (included files merged under the including
file, hashes deep-merged and arrays replaced), their scripts flattened, and variables expanded. Includes of
GitLab's own templates (`include: template:`) cannot be read offline; they are listed, not resolved.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dagster_platform.mappings import deep_merge
from dagster_platform.paths import ROOT

# Top-level keys that are not jobs.
RESERVED = {
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "spec",
    "pages:deploy",
}
# Keys `default:` passes to every job that does not set them.
DEFAULT_KEYS = {
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
}
# GitLab templates we include; they exist on every GitLab instance but not here.
KNOWN_GITLAB_TEMPLATES = {"Jobs/Container-Scanning.gitlab-ci.yml"}


class Reference(list):
    """A `!reference [job, key]` tag, resolved after loading."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!reference", lambda loader, node: Reference(loader.construct_sequence(node)))


class CIConfigError(Exception):
    pass


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CIConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CIConfigError(f"{path}: a CI file must be a mapping")
    return data


def _include_entries(include) -> list[dict]:
    if include is None:
        return []
    entries = include if isinstance(include, list) else [include]
    return [{"local": entry} if isinstance(entry, str) else entry for entry in entries]


@dataclass
class Pipeline:
    """A CI file with its includes resolved: `config` is what GitLab would evaluate."""

    path: Path
    config: dict
    files: list[Path] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def stages(self) -> list[str]:
        return list(self.config.get("stages", ["build", "test", "deploy"]))

    @property
    def variables(self) -> dict[str, str]:
        return {k: _variable_value(v) for k, v in (self.config.get("variables") or {}).items()}

    def jobs(self) -> dict[str, dict]:
        """Effective visible jobs: `extends` resolved, `default:` applied, `!reference` replaced."""
        raw = {k: v for k, v in self.config.items() if k not in RESERVED and isinstance(v, dict)}
        default = self.config.get("default") or {}
        resolved: dict[str, dict] = {}

        def resolve(name: str, seen: tuple[str, ...] = ()) -> dict:
            if name in seen:
                raise CIConfigError(f"{self.path}: extends cycle {' -> '.join((*seen, name))}")
            if name not in raw:
                raise CIConfigError(f"{self.path}: job {seen[-1]!r} extends unknown {name!r}")
            job = raw[name]
            parents = job.get("extends", [])
            parents = [parents] if isinstance(parents, str) else parents
            merged: dict = {}
            for parent in parents:
                merged = deep_merge(merged, resolve(parent, (*seen, name)))
            merged = deep_merge(merged, {k: v for k, v in job.items() if k != "extends"})
            return merged

        for name in raw:
            if name.startswith("."):
                continue
            job = resolve(name)
            for key in DEFAULT_KEYS:
                if key not in job and key in default:
                    job[key] = copy.deepcopy(default[key])
            resolved[name] = self._resolve_references(job)
        return resolved

    def _resolve_references(self, value):
        if isinstance(value, Reference):
            target = self.config
            for key in value:
                target = target[key]
            return self._resolve_references(target)
        if isinstance(value, dict):
            return {k: self._resolve_references(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve_references(v) for v in value]
        return value


def _variable_value(value) -> str:
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)


def load_pipeline(path: Path, projects: dict[str, Path] | None = None, repo_root: Path | None = None) -> Pipeline:
    """Load a CI file and resolve its includes.

    projects maps `include: project:` names to local checkouts (e.g. the platform project to this repo);
    repo_root is where `include: local:` paths start (default: the CI file's directory).
    """
    projects = projects or {}
    repo_root = repo_root or path.parent
    pipeline = Pipeline(path=path, config={}, files=[path])

    def expand(file_path: Path, root: Path, depth: int) -> dict:
        data = load_yaml(file_path)
        merged: dict = {}
        for entry in _include_entries(data.get("include")):
            if depth > 10:
                pipeline.problems.append(f"{file_path}: includes nested deeper than GitLab allows")
                break
            if "template" in entry:
                pipeline.templates.append(entry["template"])
                if entry["template"] not in KNOWN_GITLAB_TEMPLATES:
                    pipeline.problems.append(f"{file_path}: unknown GitLab template {entry['template']!r}")
                continue
            if "local" in entry:
                target_root, target = root, root / str(entry["local"]).lstrip("/")
            elif "project" in entry:
                project = str(entry["project"])
                if project not in projects:
                    pipeline.problems.append(f"{file_path}: include of project {project!r} that is not known here")
                    continue
                if not entry.get("ref"):
                    pipeline.problems.append(f"{file_path}: include of {project!r} without a ref")
                files = entry.get("file")
                files = [files] if isinstance(files, str) else files or []
                for name in files:
                    target = projects[project] / str(name).lstrip("/")
                    if not target.is_file():
                        pipeline.problems.append(f"{file_path}: include {project}:{name} does not exist")
                        continue
                    pipeline.files.append(target)
                    merged = deep_merge(merged, expand(target, projects[project], depth + 1))
                continue
            else:
                pipeline.problems.append(f"{file_path}: include kind not supported here: {entry}")
                continue
            if not target.is_file():
                pipeline.problems.append(f"{file_path}: include {entry['local']} does not exist")
                continue
            pipeline.files.append(target)
            merged = deep_merge(merged, expand(target, target_root, depth + 1))
        return deep_merge(merged, {k: v for k, v in data.items() if k != "include"})

    pipeline.config = expand(path, repo_root, 0)
    return pipeline


def flatten(lines) -> list[str]:
    """A script as GitLab runs it: nested lists (from anchors) flattened, one entry per command."""
    if lines is None:
        return []
    if isinstance(lines, str):
        return [lines]
    flat: list[str] = []
    for line in lines:
        flat.extend(flatten(line))
    return flat


def job_commands(job: dict) -> list[str]:
    """before_script + script, the commands run in one shell (after_script runs in another)."""
    return flatten(job.get("before_script")) + flatten(job.get("script"))


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_vars(value: str, env: dict[str, str], keep_unknown: bool = True) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in env:
            return env[name]
        return match.group(0) if keep_unknown else ""

    return _VAR.sub(replace, value)


def referenced_variables(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VAR.finditer(text)}


def schema_check(paths: list[Path]) -> tuple[bool, str]:
    """Validate CI files against GitLab's CI schema as vendored in check-jsonschema (offline)."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


# The platform project as user-code repos name it in their include (cookiecutter default).
def platform_projects(project: str | None = None) -> dict[str, Path]:
    import json

    if project is None:
        project = json.loads((ROOT / "usercode-template" / "cookiecutter.json").read_text())["_platform_ci_project"]
    return {project: ROOT}
