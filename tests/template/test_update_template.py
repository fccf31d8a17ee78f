"""`make update-template` in a generated repo: real git, real copier, real uv, against a template origin repo.

The origin is a git repo holding the platform's copier.yml and usercode-template/, whose yamllint pin is one
release behind; the user repo is created from it with `dagster-platform template new` (copier), committed,
then gets its own dependency, asset module and README edit. The
template then moves on (yamllint pin bumped, its uv.lock relocked as `dagster-platform template lock` does,
README edited) and the user repo takes the update.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from dagster_platform import generate
from dagster_platform.paths import ROOT, TEMPLATE_DIR, uv_executable
from dagster_platform.template import render as template

pytestmark = pytest.mark.slow

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
    return origin / "usercode-template" / "project"


def relock(origin: Path, monkeypatch) -> None:
    """The platform's `template lock` (template.relock), pointed at the origin's copy of the template."""
    monkeypatch.setattr(template, "ROOT", origin)
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
    shutil.copy(ROOT / "copier.yml", origin / "copier.yml")
    set_yamllint(template_project(origin) / "pyproject.toml", NEW_YAMLLINT, OLD_YAMLLINT)
    relock(origin, monkeypatch)
    run(["git", "init", "-q", "-b", "main"], origin)
    commit(origin, "template with the older yamllint")

    context = json.dumps({"project_name": "Update Demo", "owner_team": "demo", "owner_email": "demo@example.com"})
    run([sys.executable, "-m", "dagster_platform.cli", "template", "new", "--template-url", origin, "--no-input",
         "--output-dir", tmp_path, "--context", context], tmp_path)  # fmt: skip
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

    # Warm the pinned copier the Makefile runs (uv tool run), so make itself can run offline.
    run_uv(["tool", "run", "--from", f"copier=={copier_pin(repo)}", "copier", "--help"], repo)
    return origin, repo


def copier_pin(project: Path) -> str:
    return re.search(r"^COPIER_VERSION := (\S+)$", (project / "Makefile").read_text(), re.MULTILINE).group(1)


def head(origin: Path) -> str:
    return run(["git", "rev-parse", "--short", "HEAD"], origin).stdout.strip()


def answers(repo: Path) -> dict:
    return yaml.safe_load((repo / ".copier-answers.yml").read_text())


def assert_nothing_staged(repo: Path) -> None:
    assert run(["git", "diff", "--cached", "--name-only"], repo).stdout == ""


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
    before = head(origin)
    move_template_on(origin, monkeypatch, README_TEMPLATE_LINE, "## Commands (from the template)\n")

    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # The source, from -> to, and the files changed.
    assert f"Template {origin}: {before} -> {head(origin)}" in output, output[-6000:]
    assert "  README.md\n" in result.stdout and "  pyproject.toml\n" in result.stdout

    assert_lock_is_clean(repo)
    lock = repo / "uv.lock"
    assert locked_version(lock, "yamllint") == NEW_YAMLLINT
    assert locked_version(lock, "text-unidecode") == "1.3"
    readme = (repo / "README.md").read_text()
    assert "## Commands (from the template)" in readme and "## Environments (edited by the team)" in readme
    assert f'"yamllint=={NEW_YAMLLINT}"' in (repo / "pyproject.toml").read_text()
    assert list(repo.rglob("*.rej")) == []
    assert answers(repo)["_commit"] == head(origin) and answers(repo)["_src_path"] == str(origin)
    # The result is plain `git diff`: nothing staged.
    assert_nothing_staged(repo)
    assert "README.md" in run(["git", "diff", "--name-only"], repo).stdout
    # lint, test (with the team's own test of its dependency) and check ran and passed.
    assert "All definitions loaded successfully" in output
    assert "test_ascii_greeting" in (repo / "reports/junit.xml").read_text()
    assert "Template update done" in output


def test_nothing_to_take_says_already_up_to_date_and_runs_nothing_else(scenario):
    origin, repo = scenario
    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Already up to date with {origin} at {head(origin)}." in result.stdout
    assert "lint" not in result.stdout.split("Already up to date")[1]
    assert not (repo / "reports").exists() and not (repo / ".venv").exists()  # no lint, test or check ran
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_a_recorded_commit_the_template_does_not_have_is_refused_in_one_line(scenario):
    """A repo generated from uncommitted template changes records a commit that exists nowhere else."""
    origin, repo = scenario
    # The recorded line, quoted or not: YAML quotes a short hash that reads as a number (e.g. 0172445).
    lines = (repo / ".copier-answers.yml").read_text().splitlines()
    recorded = next(line for line in lines if line.startswith("_commit:"))
    assert answers(repo)["_commit"] == head(origin), recorded
    edit(repo / ".copier-answers.yml", recorded, "_commit: 0123abc")
    commit(repo, "a commit only the render knew")
    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    refusal = [line for line in result.stderr.splitlines() if line.startswith("make update-template:")]
    assert len(refusal) == 1 and "(0123abc) is not in" in refusal[0] and "_commit" in refusal[0], result.stderr
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


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
    conflicted = message.split("\nEverything else")[0]
    assert "README.md" in conflicted and "pyproject.toml" in conflicted and "uv.lock" not in conflicted
    assert "git diff" in message and "commit" in message  # how to finish
    assert "git reset --hard && git clean -fd" in message  # how to abandon
    # uv.lock is exactly the committed one (pyproject.toml holds markers: nothing can lock); no checks ran.
    assert (repo / "uv.lock").read_text() == locked_before
    assert not (repo / "reports").exists()
    assert_nothing_staged(repo)

    # Finishing as the message says: resolve both files, then uv lock.
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
    run_uv(["lock"], repo)
    assert_lock_is_clean(repo)
    assert locked_version(repo / "uv.lock", "yamllint") == NEW_YAMLLINT
    assert locked_version(repo / "uv.lock", "text-unidecode") == "1.3"


def test_abandoning_a_conflicted_update_as_told_restores_the_repo(scenario, monkeypatch):
    origin, repo = scenario
    move_template_on(origin, monkeypatch, README_USER_LINE, "## Environments and secrets\n")
    (template_project(origin) / "NEW_FROM_TEMPLATE.md").write_text("new\n")
    commit(origin, "a new file")
    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    assert "CONFLICT" in result.stderr, result.stdout + result.stderr
    run(["sh", "-c", "git reset --hard && git clean -fd"], repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert not (repo / "NEW_FROM_TEMPLATE.md").exists()


def test_copier_pin_and_lock_exclusion_are_in_the_template():
    """The Makefile's pinned copier is the platform's; uv.lock is never merged (skip_if_exists), regenerated."""
    assert locked_version(ROOT / "uv.lock", "copier") == copier_pin(TEMPLATE_DIR / "project")
    config = yaml.safe_load((TEMPLATE_DIR / "copier.yml").read_text())
    assert "uv.lock" in config["_skip_if_exists"]
    assert config["_answers_file"] == ".copier-answers.yml" and config["_subdirectory"] == "usercode-template/project"
    assert any("uv lock" in task["command"] and "update" in task["when"] for task in config["_tasks"])


def set_platform_default(origin: Path, change) -> list[str]:
    """Edit the origin's copier.yml `platform` default as `make generate` writes it; returns the environments
    before."""
    path = origin / "usercode-template" / "copier.yml"
    config = yaml.safe_load(path.read_text())
    platform = config["platform"]["default"]
    before = [env["name"] for env in platform["environments"]]
    change(platform)
    dumped = "".join(f"\n    {line}" for line in yaml.safe_dump(platform, sort_keys=False).splitlines())
    path.write_text(generate.PLATFORM_DEFAULT.sub(lambda match: match.group(1) + dumped, path.read_text(), count=1))
    assert yaml.safe_load(path.read_text())["platform"]["default"] == platform
    return before


def test_an_environment_the_platform_adds_arrives_with_the_update(scenario, monkeypatch):
    """The platform declares one more environment (its `make generate` rewrites copier.yml's `platform`
    default): `make update-template` brings its deploy values and its place in settings.py, and the repo's
    checks pass."""
    origin, repo = scenario
    added = "update-demo-extra"  # a name of no environment an adopter declares
    before = set_platform_default(
        origin,
        lambda platform: platform["environments"].append(
            {"name": added, "tier": "testing", "namespace": added, "postgres_secret": f"{added}-postgresql",
             "warehouse_domain": f"{added}.example.org", "previews": False}
        ),
    )  # fmt: skip
    assert added not in before
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
    assert "platform" not in answers(repo)  # data, never recorded: each update takes the platform's current facts
    # The repo's own tests ran over every environment, the new one included.
    assert f"[{added}]" in (repo / "reports/junit.xml").read_text()


def test_a_platform_release_moves_the_pinned_component_with_the_update(scenario, monkeypatch):
    """The platform cuts a release (ci/README.md): gitlab.version bumped (`make generate` rewrites copier.yml's
    `platform` default), that commit tagged with it. `make update-template` takes the latest tag: the repo's one
    component include moves to the new version, the tools its jobs fetch with it, and nothing else in the file."""
    origin, repo = scenario
    ci = repo / ".gitlab-ci.yml"
    before = ci.read_text()
    (include,) = yaml.safe_load(before)["include"]
    old = include["component"].rsplit("@", 1)[1]
    major, minor, _ = old.split(".")
    new = f"{major}.{int(minor) + 1}.0"
    run(["git", "tag", old], origin)  # the release the repo was rendered from
    set_platform_default(origin, lambda platform: platform.update(ci_version=new))
    set_yamllint(template_project(origin) / "pyproject.toml", OLD_YAMLLINT, NEW_YAMLLINT)  # what the cache holds
    relock(origin, monkeypatch)
    commit(origin, f"release {new}: gitlab.version (make generate), yamllint bumped")
    run(["git", "tag", new], origin)

    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert ci.read_text() == before.replace(f"@{old}\n", f"@{new}\n")
    assert answers(repo)["_commit"] == new


def test_a_repo_generated_with_cruft_moves_to_copier_then_updates(scenario, monkeypatch):
    """The documented move (make usercode-to-copier REPO=...: dagster-platform template from-cruft): .cruft.json's
    template, commit and answers become .copier-answers.yml, .cruft.json goes, and make update-template works."""
    origin, repo = scenario
    recorded = answers(repo)
    cruft_state = {
        "template": str(origin), "commit": run(["git", "rev-parse", "HEAD"], origin).stdout.strip(),
        "checkout": None, "directory": "usercode-template",
        "context": {"cookiecutter": {**{k: v for k, v in recorded.items() if not k.startswith("_")},
                                     "project_slug": recorded["location_name"], "_platform": {}}},
    }  # fmt: skip
    (repo / ".copier-answers.yml").unlink()
    (repo / ".cruft.json").write_text(json.dumps(cruft_state, indent=2) + "\n")
    commit(repo, "as cruft left it")

    moved = run([sys.executable, "-m", "dagster_platform.cli", "template", "from-cruft", repo], repo, check=False)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert not (repo / ".cruft.json").exists()
    now = answers(repo)
    assert now["_src_path"] == str(origin) and now["_commit"] in (cruft_state["commit"], head(origin))
    assert {k: now[k] for k in recorded if not k.startswith("_")} == {
        k: v for k, v in recorded.items() if not k.startswith("_")
    }
    assert_nothing_staged(repo)
    # The team's own files are untouched by the move; their edits to template files (here the dependency in
    # pyproject.toml) show in `git diff` as removed lines, and they take them back, as the move's message says.
    assert (repo / "src/update_demo/extras/greeting.py").exists()
    assert f'-    "{ADDED}",' in run(["git", "diff", "pyproject.toml"], repo).stdout
    run_uv(["add", "--no-sync", ADDED], repo)
    again = run([sys.executable, "-m", "dagster_platform.cli", "template", "from-cruft", repo], repo, check=False)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    commit(repo, "moved to copier")

    move_template_on(origin, monkeypatch, README_TEMPLATE_LINE, "## Commands (from the template)\n")
    result = run(["make", "--no-print-directory", "update-template"], repo, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "## Commands (from the template)" in (repo / "README.md").read_text()
    assert answers(repo)["_commit"] == head(origin)
