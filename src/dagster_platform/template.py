"""Render the user-code template (cookiecutter) and run a rendered repo's own checks."""

from __future__ import annotations

import json
from pathlib import Path

from dagster_platform.paths import TEMPLATE_DIR, uv_executable


def default_answers() -> dict[str, str]:
    return json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())


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


# The user-code repo's local instance (its `make dev`, `make check`): the platform's derived dagster.yaml
# in dev mode, generated here and committed in the template, so rendered repos and `cruft update` carry it.
TEMPLATE_INSTANCE = TEMPLATE_DIR / "{{cookiecutter.project_slug}}" / "dagster.yaml"


def local_instance_text() -> str:
    from dagster_platform.helm_instance import derive_instance, instance_yaml
    from dagster_platform.stack.config import DEFAULT_ENV, header, local_instance

    return instance_yaml(local_instance(derive_instance(DEFAULT_ENV), "dev"), header(DEFAULT_ENV, "dev"))


def _instance_command(args) -> int:
    TEMPLATE_INSTANCE.write_text(local_instance_text())
    print(f"wrote {TEMPLATE_INSTANCE}")
    return 0


def _relock_command(args) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(f"wrote {relock(Path(tmp))}")
    return 0


def register(subparsers) -> None:
    template = subparsers.add_parser("template", help="user-code template helpers")
    actions = template.add_subparsers(dest="action", required=True)
    lock = actions.add_parser("lock", help="regenerate the template's uv.lock from its pyproject.toml")
    lock.set_defaults(func=_relock_command)
    instance = actions.add_parser(
        "instance", help="regenerate the template's dagster.yaml from the platform's instance"
    )
    instance.set_defaults(func=_instance_command)
