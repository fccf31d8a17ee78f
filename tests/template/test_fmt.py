"""`make fmt` in a rendered repo fixes what `make lint` refuses, SQL included (sqlfluff fix)."""

import subprocess

import pytest

from dagster_platform.template.render import render

from .helpers import run_make

pytestmark = pytest.mark.slow

BAD_SQL = "select order_date,count(*) as order_count\n  from raw_orders   group by order_date\n"


def test_make_fmt_fixes_badly_formatted_sql(tmp_path):
    repo = render(tmp_path, {"project_name": "Fmt Check"})  # its own repo: the shared renders stay without .venv
    sql = repo / "src/fmt_check/defs/sql/bad_style.sql"
    sql.write_text(BAD_SQL)
    result = run_make(repo, "install")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sqlfluff_lint = [str(repo / ".venv/bin/sqlfluff"), "lint", "src"]
    before = subprocess.run(sqlfluff_lint, cwd=repo, capture_output=True, text=True, timeout=300)
    assert before.returncode != 0 and "bad_style.sql" in before.stdout  # what `make lint` fails on
    result = run_make(repo, "fmt")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert sql.read_text() != BAD_SQL
    assert "\nfrom raw_orders\ngroup by order_date\n" in sql.read_text()
    after = subprocess.run(sqlfluff_lint, cwd=repo, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stdout
