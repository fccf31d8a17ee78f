"""Render the user-code template (cookiecutter) and regenerate the files the platform maintains in it
(its uv.lock; its dagster.yaml is the local runtime's: `dagster-platform local-instance`); the platform facts
it is rendered with."""

from __future__ import annotations

import json
from pathlib import Path

from dagster_platform.paths import TEMPLATE_DIR, uv_executable

HOOK = TEMPLATE_DIR / "hooks" / "pre_gen_project.py"


def default_answers() -> dict[str, str]:
    return json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())


def platform_context() -> dict[str, object]:
    """The template's private variable `_platform` as this platform repository's company and environment files
    define it (generate.template_platform: the same value cookiecutter.json carries as its default)."""
    from dagster_platform import platform_config
    from dagster_platform.generate import template_platform

    return {"_platform": template_platform(platform_config.company(), platform_config.environments())}


def validators():
    """The template's own answer checks (its pre_gen hook, imported unrendered): one set for both."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("usercode_template_answers", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(output_dir: Path, answers: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Render the template non-interactively into output_dir; returns the new repo's path.

    Answers are validated by the template's pre-generation hook, which raises before anything is written.
    """
    from cookiecutter.main import cookiecutter  # imported here: `make dev` starts faster without it

    output_dir.mkdir(parents=True, exist_ok=True)
    return Path(
        cookiecutter(
            str(TEMPLATE_DIR),
            no_input=True,
            extra_context=answers or {},
            output_dir=str(output_dir),
            overwrite_if_exists=overwrite,
        )
    )


# The template's uv.lock is generated, not hand-written: render with a sentinel location name, lock,
# and put the Jinja variable back where the sentinel stands (the project's own entry in the lock).
LOCK_SENTINEL = "zz-lock-sentinel"
TEMPLATE_LOCK = TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "uv.lock"


def relock(work_dir: Path) -> Path:
    """Regenerate usercode-template/{{cookiecutter.project_slug}}/uv.lock from the template's pyproject."""
    import subprocess

    repo = render(work_dir, {"project_name": LOCK_SENTINEL, "package_name": "lock_sentinel"})
    subprocess.run([uv_executable(), "lock"], cwd=repo, check=True)
    text = (repo / "uv.lock").read_text()
    if "{{" in text or "{%" in text:
        raise RuntimeError("the generated lock contains Jinja syntax; it cannot be templated safely")
    TEMPLATE_LOCK.write_text(text.replace(LOCK_SENTINEL, "{{ cookiecutter.location_name }}"))
    return TEMPLATE_LOCK
