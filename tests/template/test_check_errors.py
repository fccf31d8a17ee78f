"""A generated repo's `make check` when the definitions do not load: one short block with the exception type and
message, the file and line in the repo, and the next step; no colour codes in a file, no repeated traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dagster_platform.template.render import render

from .helpers import run_make

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[")
MAX_LINES = 15


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = render(tmp_path_factory.mktemp("check-errors"), {"project_name": "Check Errors"})
    result = run_make(repo, "install")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


def syntax_error(text: str) -> str:
    return text + "\ndef broken(:\n    pass\n"


def missing_import(text: str) -> str:
    return text.replace("import dagster as dg\n", "import dagster as dg\nimport polars_not_installed\n", 1)


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        (syntax_error, "SyntaxError: invalid syntax", "def broken(:"),
        (missing_import, "ModuleNotFoundError: No module named 'polars_not_installed'", "import polars_not_installed"),
    ],
    ids=["syntax-error", "missing-import"],
)
def test_make_check_names_the_cause_once_in_a_short_block(repo, change, error, code):
    module = repo / "src" / "check_errors" / "defs" / "orders.py"
    original = module.read_text()
    changed = change(original)
    assert changed != original
    line = changed.splitlines().index(code) + 1
    module.write_text(changed)
    try:
        result = run_make(repo, "check")
    finally:
        module.write_text(original)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert not ANSI.search(output), output
    assert len(output.splitlines()) <= MAX_LINES, output
    assert f"src/check_errors/defs/orders.py:{line}" in output, output
    assert output.count(error) == 1, output  # the cause once: no traceback per link of the exception chain
    assert "Traceback" not in output and "Stack Trace" not in output, output
    assert "fix it, then run make check again" in output, output

    # Fixed, the same command passes again.
    fixed = run_make(repo, "check")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "All definitions loaded successfully." in fixed.stdout
