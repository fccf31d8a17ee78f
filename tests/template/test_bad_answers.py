"""Every bad answer is refused before anything is kept: a message naming the problem with an example of a
valid answer, a non-zero exit, and no directory left behind."""

import subprocess
import sys
from pathlib import Path

import pytest

from dagster_platform.paths import TEMPLATE_DIR

COOKIECUTTER = [sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE_DIR)]

BAD_ANSWERS = [
    ({"location_name": "Sales_Pipelines"}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
    ({"location_name": "-sales"}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
    ({"location_name": "sales-"}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
    ({"location_name": "s" * 54}, "at most 53 characters", "example: sales-pipelines"),
    ({"project_name": "Sales & Marketing"}, "'sales-&-marketing' is not a Kubernetes", "example: sales-pipelines"),
    ({"location_name": "dagster"}, "is reserved by the platform", "example: sales-pipelines"),
    ({"location_name": "dagster-daemon"}, "is reserved by the platform", "example: sales-pipelines"),
    ({"location_name": "test"}, "is reserved by the platform", "example: sales-pipelines"),
    ({"package_name": "1sales"}, "is not a valid Python package name", "example: sales_pipelines"),
    ({"package_name": "sales-pipelines"}, "is not a valid Python package name", "example: sales_pipelines"),
    ({"package_name": "class"}, "is not a valid Python package name", "example: sales_pipelines"),
    ({"package_name": "dagster"}, "is reserved (it would shadow Dagster)", "example: sales_pipelines"),
    ({"package_name": "tests"}, "is reserved", "example: sales_pipelines"),
    ({"package_name": "json"}, "clashes with an installed or standard-library package", "example: sales_pipelines"),
    ({"package_name": "yaml"}, "clashes with an installed or standard-library package", "example: sales_pipelines"),
    ({"package_name": "requests"}, "clashes with an installed", "example: sales_pipelines"),
    ({"project_slug": "other-dir"}, "must equal location_name", "leave it at its default"),
    ({"owner_team": "Data Platform"}, "must be a team slug", "example: data-platform"),
    ({"owner_email": "nobody"}, "is not an e-mail address", "example: team@example.com"),
    ({"production_namespace": "dagster-acceptance"}, "must differ", "acceptance_namespace"),
    ({"acceptance_namespace": "Dagster_Acc"}, "is not a Kubernetes namespace name", "example: dagster-acceptance"),
    ({"acceptance_db_domain": "prod.db.example.internal"}, "must be separate domains", "db_domain"),
    ({"acceptance_db_domain": "x.prod.db.example.internal"}, "must be separate domains", "db_domain"),
    ({"production_db_domain": "not a domain"}, "is not a DNS domain", "example: prod.db.example.internal"),
    ({"image_registry": "registry.example.org/acme/"}, "without a trailing '/'", "example: registry.gitlab.com"),
    ({"project_name": 'Quote " and \\ backslash'}, "is not a Kubernetes DNS-1123 label", "example: sales-pipelines"),
]


def run_cookiecutter(out: Path, answers: dict[str, str]) -> subprocess.CompletedProcess:
    args = [f"{key}={value}" for key, value in answers.items()]
    return subprocess.run([*COOKIECUTTER, "--output-dir", str(out), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("answers", "problem", "hint"), BAD_ANSWERS, ids=[str(a) for a, _, _ in BAD_ANSWERS])
def test_bad_answer_is_refused_and_nothing_is_written(tmp_path, answers, problem, hint):
    result = run_cookiecutter(tmp_path, answers)
    assert result.returncode != 0
    assert problem in result.stderr
    assert hint in result.stderr
    assert "Nothing was generated" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_all_problems_are_reported_at_once(tmp_path):
    result = run_cookiecutter(tmp_path, {"location_name": "Bad_Name", "package_name": "class", "owner_email": "x"})
    assert result.returncode != 0
    assert result.stderr.count("ERROR: ") == 3
    assert list(tmp_path.iterdir()) == []


def test_existing_repo_is_never_overwritten(tmp_path):
    existing = tmp_path / "example-pipelines"
    existing.mkdir()
    (existing / "my_work.py").write_text("precious = True\n")
    result = run_cookiecutter(tmp_path, {})
    assert result.returncode != 0
    assert "already exists" in result.stdout + result.stderr
    assert [p.name for p in existing.iterdir()] == ["my_work.py"]
    assert (existing / "my_work.py").read_text() == "precious = True\n"


def test_valid_answers_render(tmp_path):
    result = run_cookiecutter(tmp_path, {"project_name": "Sales Pipelines"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sales-pipelines/src/sales_pipelines/definitions.py").exists()
