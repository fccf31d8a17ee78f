"""`make update-template` in a generated repo: real git, real cruft, real uv, against a template origin repo.

The origin is a git copy of usercode-template whose yamllint pin is one release behind; the user repo is
created from it with cruft, committed, then gets its own dependency, asset module and README edit. The
template then moves on (yamllint pin bumped, its uv.lock relocked as `dagster-platform template lock` does,
README edited) and the user repo takes the update.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from dagster_platform.paths import ROOT, TEMPLATE_DIR, uv_executable
from dagster_platform.template import render as template

pytestmark = pytest.mark.slow

CRUFT = ROOT / ".venv" / "bin" / "cruft"
OLD_YAMLLINT, NEW_YAMLLINT = "1.37.1", "1.38.0"
ADDED = "text-unidecode==1.3"  # the user's own dependency: tiny, pure Python
MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)
README_TEMPLATE_LINE = "## Commands\n"
README_USER_LINE = "## Environments\n"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
TIMEOUT = 900  # generous: 2 cores shared with other test runs


def environment(offline: bool) -> dict[str, str]:
    env = {**os.environ, **GIT_IDENTITY}
    env.pop("VIRTUAL_ENV", None)  # the generated repo must not borrow the platform's virtualenv
    # The documented setup has no uv on PATH (make bootstraps it into .tools/); here the platform's copy is
    # put first on PATH so the repo's Makefile finds it instead of installing another one.
    env["PATH"] = f"{Path(uv_executable()).parent}{os.pathsep}{env['PATH']}"
    if offline:
        env["UV_OFFLINE"] = "1"
    else:
        env.pop("UV_OFFLINE", None)
    return env


def run(cmd: list, cwd: Path, offline: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=environment(offline), capture_output=True, text=True, timeout=TIMEOUT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_uv(args: list, cwd: Path) -> None:
    """uv from the warm cache, going to the index only for what is not cached yet (first run)."""
    if run([uv_executable(), *args], cwd, offline=True, check=False).returncode != 0:
        run([uv_executable(), *args], cwd, offline=False)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def template_project(origin: Path) -> Path:
    return origin / "usercode-template" / "{{cookiecutter.project_slug}}"


def relock(origin: Path, monkeypatch) -> None:
    """The platform's `template lock` (template.relock), pointed at the origin's copy of the template."""
    monkeypatch.setattr(template, "TEMPLATE_DIR", origin / "usercode-template")
    monkeypatch.setattr(template, "TEMPLATE_LOCK", template_project(origin) / "uv.lock")
    with monkeypatch.context() as patch:
        patch.setenv("UV_OFFLINE", "1")
        work = origin.parent / "relock"
        try:
            template.relock(work / "offline")
        except subprocess.CalledProcessError:  # the pin is not in the uv cache yet: ask the index once
            patch.delenv("UV_OFFLINE")
            template.relock(work / "online")
        shutil.rmtree(work)


def set_yamllint(pyproject: Path, old: str, new: str) -> None:
    edit(pyproject, f'"yamllint=={old}"', f'"yamllint=={new}"')


def locked_version(lock: Path, name: str) -> str | None:
    return next((p["version"] for p in tomllib.loads(lock.read_text())["package"] if p["name"] == name), None)


@pytest.fixture
def scenario(tmp_path, monkeypatch):
    """(origin, user repo) with the user's changes committed and the template not yet moved on."""
    origin = tmp_path / "origin"
    shutil.copytree(TEMPLATE_DIR, origin / "usercode-template", ignore=shutil.ignore_patterns("__pycache__"))
    set_yamllint(template_project(origin) / "pyproject.toml", NEW_YAMLLINT, OLD_YAMLLINT)
    relock(origin, monkeypatch)
    run(["git", "init", "-q", "-b", "main"], origin)
    commit(origin, "template with the older yamllint")

    context = json.dumps({"project_name": "Update Demo"})
    run([CRUFT, "create", origin, "--directory", "usercode-template", "--no-input", "--output-dir", tmp_path,
         "--extra-context", context], tmp_path)  # fmt: skip
    repo = tmp_path / "update-demo"
    run(["git", "init", "-q", "-b", "main"], repo)
    commit(repo, "generated from the template")

    # The user's own work: a dependency (pyproject.toml + uv.lock), a module using it with its test, a README edit.
    run_uv(["add", "--no-sync", ADDED], repo)
    extras = repo / "src/update_demo/extras"
    extras.mkdir()
    (extras / "__init__.py").write_text("")
    (extras / "greeting.py").write_text(
        "import dagster as dg\nfrom text_unidecode import unidecode\n\n\n@dg.asset\ndef ascii_greeting() -> str:\n"
        '    return unidecode("Grüße")\n'
    )
    (repo / "tests/test_greeting.py").write_text(
        "from update_demo.extras.greeting import ascii_greeting\n\n\n"
        "def test_ascii_greeting():\n"
        '    assert ascii_greeting() == "Grusse"\n'
    )
    edit(repo / "README.md", README_USER_LINE, "## Environments (edited by the team)\n")
    commit(repo, "our asset, its dependency and README")

    # Warm the pinned cruft the Makefile runs (uv tool run), so make itself can run offline.
    makefile = (repo / "Makefile").read_text()
    cruft_version = re.search(r"^CRUFT_VERSION := (\S+)$", makefile, re.MULTILINE).group(1)
    run_uv(["tool", "run", f"cruft@{cruft_version}", "--help"], repo)
    return origin, repo


def move_template_on(origin: Path, monkeypatch, readme_old: str, readme_new: str) -> None:
    set_yamllint(template_project(origin) / "pyproject.toml", OLD_YAMLLINT, NEW_YAMLLINT)
    relock(origin, monkeypatch)
    edit(template_project(origin) / "README.md", readme_old, readme_new)
    commit(origin, "template: yamllint bumped, README edited")


def assert_lock_is_clean(repo: Path) -> None:
    lock = repo / "uv.lock"
    assert not MARKER.search(lock.read_text())
    assert not (repo / "uv.lock.rej").exists()
    check = run([uv_executable(), "lock", "--check"], repo, check=False)
    assert check.returncode == 0, check.stderr


def test_update_merges_relocks_and_checks(scenario, monkeypatch):
    origin, repo = scenario
    move_template_on(origin, monkeypatch, README_TEMPLATE_LINE, "## Commands (from the template)\n")

    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    assert_lock_is_clean(repo)
    lock = repo / "uv.lock"
    assert locked_version(lock, "yamllint") == NEW_YAMLLINT
    assert locked_version(lock, "text-unidecode") == "1.3"
    readme = (repo / "README.md").read_text()
    assert "## Commands (from the template)" in readme and "## Environments (edited by the team)" in readme
    assert f'"yamllint=={NEW_YAMLLINT}"' in (repo / "pyproject.toml").read_text()
    assert list(repo.rglob("*.rej")) == []
    cruft_state = json.loads((repo / ".cruft.json").read_text())
    assert cruft_state["commit"] == run(["git", "rev-parse", "HEAD"], origin).stdout.strip()
    # lint, test (with the team's own test of its dependency) and check ran and passed.
    assert "All definitions loaded successfully" in output
    assert "test_ascii_greeting" in (repo / "reports/junit.xml").read_text()
    assert "Template update done" in output


def test_overlapping_edits_stop_with_one_conflict_message(scenario, monkeypatch):
    origin, repo = scenario
    # The template edits the very README line the team edited, and the team pinned yamllint's line too.
    edit(repo / "pyproject.toml", f'"yamllint=={OLD_YAMLLINT}",', f'"yamllint=={OLD_YAMLLINT}",  # keep: CI image')
    commit(repo, "note on the yamllint pin")
    locked_before = (repo / "uv.lock").read_text()
    move_template_on(origin, monkeypatch, README_USER_LINE, "## Environments and secrets\n")

    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-6000:]
    assert result.stderr.count("CONFLICT") == 1, output[-6000:]
    message = result.stderr[result.stderr.index("CONFLICT") :]
    assert "README.md" in message and "pyproject.toml" in message and "make update-template" in message
    assert "uv.lock:" not in message
    # uv.lock is exactly the committed one (pyproject.toml holds markers: nothing can lock); no checks ran.
    assert (repo / "uv.lock").read_text() == locked_before
    assert not (repo / "uv.lock.rej").exists()
    assert not (repo / "reports").exists()

    # Resolving both files and running the update again continues it: the lock is regenerated.
    for name in ("README.md", "pyproject.toml"):
        path = repo / name
        kept = []
        side = None
        for line in path.read_text().splitlines(keepends=True):
            if line.startswith("<<<<<<<"):
                side = "ours"
            elif line.startswith(("|||||||", "=======")) and side:
                side = "theirs" if line.startswith("=======") else "base"
            elif line.startswith(">>>>>>>"):
                side = None
            elif side in (None, "theirs"):  # take the template's side
                kept.append(line)
        path.write_text("".join(kept))
        run(["git", "add", name], repo)
    script = [
        "python3", "scripts/update_template.py", "--uv", uv_executable(), "--cruft", "false",
    ]  # fmt: skip
    resumed = run(script, repo, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "continuing the template update" in resumed.stdout
    assert_lock_is_clean(repo)
    assert locked_version(repo / "uv.lock", "yamllint") == NEW_YAMLLINT
    assert locked_version(repo / "uv.lock", "text-unidecode") == "1.3"


def test_a_repo_without_the_lock_skip_gets_a_regenerated_lock(scenario, monkeypatch):
    """A repo made before `[tool.cruft] skip`: cruft merges uv.lock as text (here with conflicts); undone."""
    origin, repo = scenario
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text[: text.index("[tool.cruft]")])
    commit(repo, "as made before the skip")
    move_template_on(origin, monkeypatch, README_TEMPLATE_LINE, "## Commands (from the template)\n")

    makefile = (repo / "Makefile").read_text()
    cruft_version = re.search(r"^CRUFT_VERSION := (\S+)$", makefile, re.MULTILINE).group(1)
    script = ["python3", "scripts/update_template.py", "--uv", uv_executable(),
              "--cruft", f"{uv_executable()} tool run cruft@{cruft_version}"]  # fmt: skip
    result = run(script, repo, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uv.lock: the template's lock is not merged as text" in result.stdout
    assert_lock_is_clean(repo)
    assert locked_version(repo / "uv.lock", "yamllint") == NEW_YAMLLINT
    assert locked_version(repo / "uv.lock", "text-unidecode") == "1.3"
    assert run(["git", "diff", "--name-only", "--diff-filter=U"], repo).stdout == ""


def test_cruft_pin_and_lock_skip_are_in_the_template():
    """The Makefile's pinned cruft is the platform's; uv.lock is kept out of cruft's diff."""
    project = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
    makefile = (project / "Makefile").read_text()
    pinned = re.search(r"^CRUFT_VERSION := (\S+)$", makefile, re.MULTILINE).group(1)
    assert locked_version(ROOT / "uv.lock", "cruft") == pinned
    cruft_config = tomllib.loads((project / "pyproject.toml").read_text().replace("{{", "").replace("}}", ""))
    assert "uv.lock" in cruft_config["tool"]["cruft"]["skip"]


def test_an_environment_the_platform_adds_arrives_with_the_update(scenario, monkeypatch):
    """The platform declares one more environment (its `make generate` rewrites cookiecutter.json's `_platform`):
    `make update-template` brings its deploy values and its place in settings.py, and the repo's checks pass."""
    origin, repo = scenario
    answers_file = origin / "usercode-template" / "cookiecutter.json"
    answers = json.loads(answers_file.read_text())
    before = [env["name"] for env in answers["_platform"]["environments"]]
    added = "update-demo-extra"  # a name of no environment an adopter declares
    assert added not in before
    answers["_platform"]["environments"].append(
        {"name": added, "tier": "testing", "namespace": added, "postgres_secret": f"{added}-postgresql",
         "warehouse_domain": f"{added}.example.org", "previews": False}
    )  # fmt: skip
    answers_file.write_text(json.dumps(answers, indent=2) + "\n")
    set_yamllint(template_project(origin) / "pyproject.toml", OLD_YAMLLINT, NEW_YAMLLINT)  # what the cache holds
    relock(origin, monkeypatch)
    commit(origin, "platform: one more environment (make generate), yamllint bumped")

    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert sorted(p.name for p in (repo / "deploy").iterdir()) == sorted(f"values-{n}.yaml" for n in [*before, added])
    values = (repo / "deploy" / f"values-{added}.yaml").read_text()
    assert f"postgresqlSecretName: {added}-postgresql\n" in values and f"value: {added}\n" in values
    settings = (repo / "src/update_demo/settings.py").read_text()
    assert f'    "{added}",\n)' in settings and f'    "{added}": "{added}.example.org",\n' in settings
    recorded = json.loads((repo / ".cruft.json").read_text())["context"]["cookiecutter"]["_platform"]
    assert [env["name"] for env in recorded["environments"]] == [*before, added]
    # The repo's own tests ran over every environment, the new one included.
    assert f"[{added}]" in (repo / "reports/junit.xml").read_text()
