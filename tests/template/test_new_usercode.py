"""`make new-usercode`: README's way to start a repo, through cruft so template updates can follow."""

import json
import subprocess

import pytest

from dagster_platform.paths import ROOT

pytestmark = pytest.mark.slow


def new_usercode(out, context: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "new-usercode", "NO_INPUT=1", f"OUT={out}", f"CONTEXT={json.dumps(context)}",
         f"TEMPLATE_URL={ROOT}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_new_usercode_records_the_template_for_updates(tmp_path):
    result = new_usercode(tmp_path, {"project_name": "Cruft Demo"})
    assert result.returncode == 0, result.stdout + result.stderr
    repo = tmp_path / "cruft-demo"
    assert (repo / "src/cruft_demo/definitions.py").exists()
    cruft = json.loads((repo / ".cruft.json").read_text())
    assert cruft["directory"] == "usercode-template"
    assert cruft["context"]["cookiecutter"]["location_name"] == "cruft-demo"
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    check = subprocess.run([ROOT / ".venv/bin/cruft", "check"], cwd=repo, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_new_usercode_refuses_bad_answers_and_writes_nothing(tmp_path):
    result = new_usercode(tmp_path, {"project_name": "Bad", "location_name": "Bad_Name"})
    assert result.returncode != 0
    assert "is not a Kubernetes DNS-1123 label" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []
