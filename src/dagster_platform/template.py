"""Render the user-code template (cookiecutter) and run a rendered repo's own checks."""

from __future__ import annotations

import json
from pathlib import Path

from cookiecutter.main import cookiecutter

from dagster_platform.paths import TEMPLATE_DIR


def default_answers() -> dict[str, str]:
    return json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())


def render(output_dir: Path, answers: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Render the template non-interactively into output_dir; returns the new repo's path.

    Answers are validated by the template's pre-generation hook, which raises before anything is written.
    """
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
