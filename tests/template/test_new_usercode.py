"""`make new-usercode`: README's way to start a repo, through copier so template updates can follow. Driven as a
new user drives it: a terminal (pty), one answer typed at a time, one of them wrong."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dagster_platform.paths import ROOT

from .helpers import converse, platform_facts

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def user_shell_env(**extra: str) -> dict[str, str]:
    """The environment of a user's own shell: no outer make (under `make test` make would print `make[1]:`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return {**env, **extra}


def new_usercode(out, context: dict, tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    env = user_shell_env(**({"TMPDIR": str(tmpdir)} if tmpdir else {}))
    return subprocess.run(
        ["make", "--no-print-directory", "new-usercode", "NO_INPUT=1", f"OUT={out}", f"CONTEXT={json.dumps(context)}",
         f"TEMPLATE_URL={ROOT}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def leftovers(temp: Path) -> list[str]:
    """What is left in the temp dir (TMPDIR of make), except uv's own empty process lock (`uv run`)."""
    return sorted(
        p.name for p in temp.iterdir() if not (re.fullmatch(r"uv-[0-9a-f]+\.lock", p.name) and p.stat().st_size == 0)
    )


def test_new_user_is_asked_six_questions_and_a_bad_answer_is_asked_again_at_once(tmp_path):
    out, temp = tmp_path / "repos", tmp_path / "tmp"
    out.mkdir()
    temp.mkdir()
    enter, clear = "\r", "\x15"  # Ctrl-U: copier shows the default in the input line
    make = shutil.which("make")
    command = [make, "--no-print-directory", "-C", str(ROOT), "new-usercode", f"OUT={out}", f"TEMPLATE_URL={ROOT}"]
    status, shown = converse(
        tmp_path,
        command,
        [
            ("Project name", clear + "Sales Pipelines" + enter),
            ("Code location name", enter),
            ("Python package name", clear + "sales-pipelines" + enter),
            ("is not a valid Python package name", clear + "sales_pipelines" + enter),
            ("Owning team", "sales-analytics" + enter),
            ("Team e-mail", "secret-sales@example.org" + enter),
            ("One-line description", enter),
        ],
        timeout=180,
        env=user_shell_env(TMPDIR=str(temp)),
    )
    transcript = ANSI.sub("", shown.replace("\r\n", "\n"))
    print(transcript)  # the whole session, for `pytest -s`
    assert status == 0, transcript[-3000:]
    assert "Traceback" not in transcript
    # Refused right away, naming the answer, and the same question again (before the team is asked).
    refusal = transcript.index("package_name 'sales-pipelines' is not a valid Python package name")
    assert refusal < transcript.index("Owning team"), transcript
    # Platform facts are stated, never asked: the company's and every environment's.
    facts = platform_facts()
    stated = transcript.split("Project name")[0]
    for fact in (facts["image_registry"], str(facts["grpc_port"]), facts["ci_project"]):
        assert fact in stated, fact
    for env in facts["environments"]:
        assert f"{env['name']} ({env['namespace']})" in stated, env
    repo = out / "sales-pipelines"
    assert f"Created {repo}" in transcript
    for step in (f"cd {repo}", "make dev", "make test", "git init", "git push", "platform/code-locations.yaml"):
        assert step in transcript, step
    assert "  - name: sales-pipelines\n    team: sales-analytics\n" in transcript
    assert f"    port: {facts['grpc_port']}\n    module: sales_pipelines.definitions\n" in transcript
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert (answers["package_name"], answers["owner_team"]) == ("sales_pipelines", "sales-analytics")
    assert "platform" not in answers  # data, never recorded: an update takes the platform's current facts
    assert sorted(p.name for p in (repo / "deploy").iterdir()) == sorted(
        f"values-{env['name']}.yaml" for env in facts["environments"]
    )
    # Nothing of ours in the temp dir: no template clone, no answers.
    assert leftovers(temp) == []
    assert not any("secret-sales" in p.read_text(errors="replace") for p in temp.rglob("*") if p.is_file())


def test_new_usercode_records_the_template_for_updates(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    context = {"project_name": "Copier Demo", "owner_team": "demo", "owner_email": "demo@example.com"}
    result = new_usercode(tmp_path / "out", context, tmpdir=temp)
    assert result.returncode == 0, result.stdout + result.stderr
    repo = tmp_path / "out" / "copier-demo"
    assert (repo / "src/copier_demo/definitions.py").exists()
    assert f"Created {repo}\n" in result.stdout
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(ROOT) and answers["_commit"]
    assert answers["location_name"] == "copier-demo" and answers["owner_team"] == "demo"
    assert not (repo / ".cruft.json").exists()
    assert leftovers(temp) == []


def test_new_usercode_refuses_bad_answers_in_one_block_and_writes_nothing(tmp_path):
    context = {"project_name": "Sales Pipelines", "owner_team": "sales", "owner_email": "sales-at-example"}
    result = new_usercode(tmp_path, context)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert ours == [
        "ERROR: owner_email 'sales-at-example' is not an e-mail address; example: sales@example.com. "
        "Nothing was generated."
    ]
    assert list(tmp_path.iterdir()) == []


def test_new_usercode_never_overwrites_an_existing_repo(tmp_path):
    (tmp_path / "sales-pipelines").mkdir()
    context = {"project_name": "Sales Pipelines", "owner_team": "sales", "owner_email": "sales@example.com"}
    result = new_usercode(tmp_path, context)
    assert result.returncode != 0
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["sales-pipelines"]


def test_ctrl_c_during_the_questions_stops_in_one_line_and_writes_nothing(tmp_path):
    """copier's interrupt is a CopierError too: it must read as an interrupt, not as a refused answer."""
    out = tmp_path / "repos"
    out.mkdir()
    command = [shutil.which("make"), "--no-print-directory", "-C", str(ROOT), "new-usercode", f"OUT={out}",
               f"TEMPLATE_URL={ROOT}"]  # fmt: skip
    status, shown = converse(tmp_path, command, [("Project name", "\x03")], env=user_shell_env())
    lines = [line for line in ANSI.sub("", shown).splitlines() if "Interrupted" in line or "ERROR" in line]
    assert lines == ["Interrupted. Nothing was generated."], shown[-2000:]
    assert status != 0 and list(out.iterdir()) == []
