"""Render the user-code template (cookiecutter) and regenerate the files the platform maintains in it
(its uv.lock; its dagster.yaml is the local runtime's: `dagster-platform local-instance`); the platform facts
it is rendered with."""

from __future__ import annotations

import json
from pathlib import Path

from dagster_platform.helm.values import ENVIRONMENTS
from dagster_platform.paths import TEMPLATE_DIR, usercode_settings, uv_executable

HOOK = TEMPLATE_DIR / "hooks" / "pre_gen_project.py"


def default_answers() -> dict[str, str]:
    return json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())


def platform_context() -> dict[str, object]:
    """The template's private variables as this platform repository's own settings define them."""
    from dagster_platform.helm.values import environment_values

    settings = usercode_settings()
    context: dict[str, object] = {
        "_image_registry": settings["image_registry"],
        "_platform_ci_project": settings["ci_project"],
        "_platform_ci_ref": settings["ci_ref"],
        "_grpc_port": int(settings["grpc_port"]),
    }
    for env in ENVIRONMENTS:
        values = environment_values(env)
        context[f"_{env}_namespace"] = values["environment"]["namespace"]
        context[f"_{env}_postgres_secret"] = values["global"]["postgresqlSecretName"]
        context[f"_{env}_db_domain"] = settings["warehouse_domains"][env]
    return context


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
