"""`make new-usercode`: README's way to start a repo, through cruft so template updates can follow. Driven as a
new user drives it: a terminal (pty), one answer typed at a time, one of them wrong."""

import contextlib
import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from dagster_platform.paths import ROOT

from .helpers import platform_facts

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


class Terminal:
    """`make new-usercode` on a pseudo-terminal: read what it prints, type answers."""

    def __init__(self, out: Path, tmpdir: Path):
        self.master, slave = pty.openpty()
        env = user_shell_env(TMPDIR=str(tmpdir), TERM="dumb")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "new-usercode", f"OUT={out}", f"TEMPLATE_URL={ROOT}"],
            cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.seen, self.pos = "", 0

    def read_until(self, text: str, timeout: float = 20) -> str:
        """What was printed since the last match, up to and including `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.pos :]:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            chunk = b""
            if ready:
                with contextlib.suppress(OSError):  # OSError: the child closed the terminal
                    chunk = os.read(self.master, 4096)
            if not chunk:
                raise AssertionError(f"no {text!r} within {timeout} s; got:\n{self.seen}")
            self.seen += ANSI.sub("", chunk.decode(errors="replace").replace("\r\n", "\n"))
        end = self.seen.index(text, self.pos) + len(text)
        part, self.pos = self.seen[self.pos : end], end
        return part

    def type(self, value: str) -> str:
        """Type an answer and Enter; returns its echo."""
        os.write(self.master, value.encode() + b"\n")
        return self.read_until("\n", timeout=10)

    def answer(self, prompt: str, value: str, timeout: float = 20) -> None:
        self.read_until(prompt, timeout)
        self.type(value)

    def finish(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"still running after {timeout} s:\n{self.seen}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += ANSI.sub("", chunk.decode(errors="replace").replace("\r\n", "\n"))
        self.proc.wait(timeout=30)
        os.close(self.master)
        return self.seen


def test_new_user_is_asked_six_questions_and_a_bad_answer_is_asked_again_at_once(tmp_path):
    out, temp = tmp_path / "repos", tmp_path / "tmp"
    out.mkdir()
    temp.mkdir()
    term = Terminal(out, temp)
    # The first question waits for make, uv and the platform's settings; every other one must come at once.
    term.answer("Project name, human-readable (e.g. Sales Pipelines): ", "Sales Pipelines", timeout=60)
    term.answer("Code location name, a Kubernetes name [sales-pipelines]: ", "")
    term.answer("Python package name [sales_pipelines]: ", "sales-pipelines")
    # Refused right away, in one line, and the same question again — not after the last question.
    after_bad = term.read_until("Python package name [sales_pipelines]: ", timeout=10)
    assert after_bad.startswith("  ! package_name 'sales-pipelines' is not a valid Python package name"), after_bad
    assert after_bad.count("\n") == 1
    term.type("")
    term.answer(
        "Owning team (owner of every asset): its slug, as in its GitLab group or on-call rota; lowercase letters, "
        "digits, '-' or '_' (e.g. sales-analytics): ",
        "sales-analytics",
    )
    term.answer("Team e-mail for alerts (e.g. sales@example.com): ", "secret-sales@example.org")
    term.answer("One-line description [Dagster code location sales-pipelines]: ", "")
    transcript = term.finish()
    print(transcript)  # the whole session, for `pytest -s`
    assert term.proc.returncode == 0, transcript
    assert "Traceback" not in transcript
    # Platform facts are stated, never asked: the company's and every environment's.
    facts = platform_facts()
    stated = transcript.split("Project name")[0]
    for fact in (facts["image_registry"], str(facts["grpc_port"]), facts["ci_project"]):
        assert fact in stated, fact
    for env in facts["environments"]:
        assert f"{env['name']} ({env['namespace']})" in stated, env
    assert transcript.count("? ") == 0 and transcript.count(": ") >= 6
    repo = out / "sales-pipelines"
    assert f"Created {repo}" in transcript
    for step in (f"cd {repo}", "make dev", "make test", "git init", "git push", "platform/code-locations.yaml"):
        assert step in transcript, step
    assert "  - name: sales-pipelines\n    team: sales-analytics\n" in transcript
    assert f"    port: {facts['grpc_port']}\n    module: sales_pipelines.definitions\n" in transcript
    cruft = json.loads((repo / ".cruft.json").read_text())["context"]["cookiecutter"]
    assert (cruft["package_name"], cruft["owner_team"]) == ("sales_pipelines", "sales-analytics")
    assert cruft["_platform"] == facts  # recorded; `cruft update` takes the newer template's own
    assert sorted(p.name for p in (repo / "deploy").iterdir()) == sorted(
        f"values-{env['name']}.yaml" for env in facts["environments"]
    )
    # Nothing of ours in the temp dir: no rendered hook with the answers, no template clone.
    assert leftovers(temp) == []
    assert not any("secret-sales" in p.read_text(errors="replace") for p in temp.rglob("*") if p.is_file())


def test_new_usercode_records_the_template_for_updates(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = new_usercode(tmp_path / "out", {"project_name": "Cruft Demo"}, tmpdir=temp)
    assert result.returncode == 0, result.stdout + result.stderr
    repo = tmp_path / "out" / "cruft-demo"
    assert (repo / "src/cruft_demo/definitions.py").exists()
    assert result.stdout.startswith(f"Created {repo}\n")
    cruft = json.loads((repo / ".cruft.json").read_text())
    assert cruft["directory"] == "usercode-template"
    assert cruft["context"]["cookiecutter"]["location_name"] == "cruft-demo"
    assert leftovers(temp) == []
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    check = subprocess.run([ROOT / ".venv/bin/cruft", "check"], cwd=repo, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_new_usercode_refuses_bad_answers_in_one_block_and_writes_nothing(tmp_path):
    result = new_usercode(tmp_path, {"project_name": "Sales Pipelines", "owner_email": "sales-at-example"})
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert ours == [
        "ERROR: owner_email 'sales-at-example' is not an e-mail address; example: sales@example.com",
        "Nothing was generated. Fix the answers above and run the template again.",
    ]
    assert list(tmp_path.iterdir()) == []


def test_new_usercode_never_overwrites_an_existing_repo(tmp_path):
    (tmp_path / "sales-pipelines").mkdir()
    result = new_usercode(tmp_path, {"project_name": "Sales Pipelines"})
    assert result.returncode != 0
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["sales-pipelines"]
