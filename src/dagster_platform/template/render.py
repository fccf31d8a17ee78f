"""Render the user-code template (copier) and regenerate the files the platform maintains in it (its uv.lock; its
dagster.yaml is the local runtime's: `dagster-platform local-instance`); the platform facts it is rendered with."""

from __future__ import annotations

import functools
import shutil
import tempfile
import warnings
from copy import deepcopy
from pathlib import Path

import yaml

from dagster_platform.paths import ROOT, TEMPLATE_DIR, TEMPLATE_PROJECT, uv_executable

COPIER_YML = TEMPLATE_DIR / "copier.yml"
ANSWERS_FILE = ".copier-answers.yml"


def questions() -> dict[str, dict]:
    """copier.yml's questions (its `_` settings left out)."""
    return deepcopy(_questions(COPIER_YML.read_text()))


@functools.cache  # by content: parsing copier.yml (~40 ms) was most of a refused answer's time, once per question
def _questions(text: str) -> dict[str, dict]:
    return {key: value for key, value in yaml.safe_load(text).items() if not key.startswith("_")}


def platform_context() -> dict[str, object]:
    """The template's data `platform` as this platform repository's company and environment files define it
    (generate.template_platform: the same value copier.yml carries as its default)."""
    from dagster_platform import platform_config
    from dagster_platform.generate import template_platform

    return {"platform": template_platform(platform_config.company(), platform_config.environments())}


def copy(
    output_dir: Path,
    answers: dict | None = None,
    src: str | Path | None = None,
    ref: str | None = "HEAD",
    defaults: bool = True,
) -> Path:
    """copier copy of the template at `src` (default: this platform repository, ROOT; `ref`: a branch, tag or
    commit) into output_dir/<location_name>; returns that path. `answers` are passed as data; with `defaults`
    nothing is asked (copier then checks every answer with its validator and refuses the first wrong one)."""
    from copier import run_copy  # imported here: `make dev` starts faster without it

    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".rendering-", dir=output_dir))
    try:
        worker = run_copy(
            str(src or ROOT),
            staging,
            data=dict(answers or {}),
            defaults=defaults,
            vcs_ref=ref,
            unsafe=True,  # the template's own _tasks
            quiet=True,
        )
        target = output_dir / str(worker.answers.combined["location_name"])
        if target.exists():
            raise FileExistsError(f"{target} already exists; choose another location name or output directory")
        staging.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The example location's answers copier.yml cannot default (a team is the data engineer's to name): the team
# platform/code-locations.yaml registers the example under.
EXAMPLE_ANSWERS = {"owner_team": "data-platform", "owner_email": "data-platform@example.com"}


def render(output_dir: Path, answers: dict | None = None) -> Path:
    """Render this checkout's template (its working tree, uncommitted changes included) non-interactively into
    output_dir/<location_name>; returns the new repo's path. A refused answer raises before anything is kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copier's DirtyLocalWarning: the working tree is what is rendered
        return copy(output_dir, {**EXAMPLE_ANSWERS, **(answers or {})})


# The template's uv.lock is generated, not hand-written: render with a sentinel location name, lock,
# and put the Jinja variable back where the sentinel stands (the project's own entry in the lock).
LOCK_SENTINEL = "zz-lock-sentinel"
TEMPLATE_LOCK = TEMPLATE_PROJECT / "uv.lock"


def relock(work_dir: Path) -> Path:
    """Regenerate usercode-template/project/uv.lock from the template's pyproject."""
    import subprocess

    repo = render(work_dir, {"project_name": LOCK_SENTINEL, "package_name": "lock_sentinel"})
    subprocess.run([uv_executable(), "lock"], cwd=repo, check=True)
    text = (repo / "uv.lock").read_text()
    if "{{" in text or "{%" in text:
        raise RuntimeError("the generated lock contains Jinja syntax; it cannot be templated safely")
    TEMPLATE_LOCK.write_text(text.replace(LOCK_SENTINEL, "{{ location_name }}"))
    return TEMPLATE_LOCK
