"""`dagster-platform dagster-upgrade` (make dagster-upgrade), run for real on a fresh clone of this repo.

The clone gets this working tree's `src/` (the code under test) committed on top, and the command runs with the
clone's `src/` first on PYTHONPATH, so `paths.ROOT` is the clone: the real work tree is never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dagster_platform.paths import ROOT, dagster_version, uv_executable

OLD = dagster_version()
TEMPLATE_LOCK = "usercode-template/project/uv.lock"
CORE = ("dagster", "dagster-webserver", "dagster-dg-cli")
LIBRARIES = ("dagster-postgres", "dagster-k8s", "dagster-aws")
# Every file that states the version and that the command moves (locks by uv, Chart.lock by helm: left).
EDITED = [
    "pyproject.toml",
    "platform/local/platform-canary/pyproject.toml",
    "usercode-template/copier.yml",
    "helm/dagster-platform/Chart.yaml",
    "platform/values/base.yaml",
    "templates/usercode/template.yml",
    "README.md",
    "helm/README.md",
]
LOCKS = ["uv.lock", "platform/local/platform-canary/uv.lock", TEMPLATE_LOCK]
LEFT = ["helm/dagster-platform/Chart.lock", "helm/dagster-chart-keys.yaml"]
# Where the version is history or test data, not a pin: never rewritten.
# docs/upgrade.md: the restore drill's recorded transcript (versions as they were when it ran).
# Files that name a Dagster version as history, which an upgrade must not rewrite: tests, the guard's examples, the
# upgrade doc, and docs/bench.md's results block (figures measured on the version it names, written by make bench).
HISTORY = ("tests/", "src/dagster_platform/ci/version_guard.py", "docs/upgrade.md", "docs/bench.md")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def libraries_version(core: str) -> str:
    major, minor, patch = core.split(".")
    return f"0.{int(minor) + 16}.{patch}"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def make_clone(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(ROOT), str(repo))
    shutil.rmtree(repo / "src" / "dagster_platform")
    shutil.copytree(ROOT / "src" / "dagster_platform", repo / "src" / "dagster_platform")
    git(repo, "add", "src")
    git(repo, "commit", "-q", "--allow-empty", "-m", "the working tree's src under test")
    return repo


def clone_env(repo: Path, **extra: str) -> dict[str, str]:
    uv_dir = str(Path(uv_executable()).parent)  # the main tree's bootstrapped uv when none is on PATH
    return {
        **os.environ,
        "PYTHONPATH": str(repo / "src"),
        "PATH": f"{uv_dir}{os.pathsep}{os.environ['PATH']}",
        **extra,
    }


def upgrade(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagster_platform.cli", "dagster-upgrade", *args],
        cwd=repo,
        env=clone_env(repo, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def status(repo: Path) -> str:
    return git(repo, "status", "--porcelain", "--untracked-files=all")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """One clone for the commands that must change nothing (each test asserts that it did not)."""
    repo = make_clone(tmp_path_factory.mktemp("upgrade"))
    root = subprocess.run(
        [sys.executable, "-c", "from dagster_platform.paths import ROOT; print(ROOT)"],
        env=clone_env(repo),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert root == str(repo)  # the command under test edits the clone, never this work tree
    return repo


@pytest.fixture(scope="module")
def fake_pypi():
    """PyPI's JSON API on loopback, publishing every version asked for: the fast tests stay offline."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"releases": {v: [{"yanked": False}] for v in published}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    published = {"1.13.26", "0.29.26", "1.12.0", "0.28.0"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    server.shutdown()


def older_published_release() -> str:
    """The newest Dagster release on PyPI older than the platform's (1.13.27 -> 1.13.26)."""
    with urllib.request.urlopen("https://pypi.org/pypi/dagster/json", timeout=60) as response:
        releases = json.load(response)["releases"]

    def key(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))

    final = [v for v, files in releases.items() if re.fullmatch(r"1\.\d+\.\d+", v) and files]
    return max((v for v in final if key(v) < key(OLD)), key=key)


# -- (a) the dry run ---------------------------------------------------------------------------------------
def test_dry_run_lists_every_file_that_states_the_version_and_changes_nothing(tmp_path, fake_pypi):
    repo = make_clone(tmp_path)
    # A new location under platform/ (as platform/ops will be) is found without being named anywhere.
    extra = repo / "platform" / "ops" / "extra"
    extra.mkdir(parents=True)
    canary = repo / "platform" / "local" / "platform-canary"
    (extra / "pyproject.toml").write_text((canary / "pyproject.toml").read_text().replace("platform-canary", "extra"))
    shutil.copy(canary / "uv.lock", extra / "uv.lock")
    git(repo, "add", "platform/ops")
    git(repo, "commit", "-q", "-m", "another location")

    done = upgrade(repo, "--version", "1.13.26", "--dry-run", DAGSTER_PLATFORM_PYPI=fake_pypi)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"dagster-upgrade: dagster {OLD} -> 1.13.26, libraries {libraries_version(OLD)} -> 0.29.26")
    named = re.findall(r"^  ([^\s:]+)", out, re.M)
    assert set(EDITED + LOCKS + LEFT + ["platform/ops/extra/pyproject.toml", "platform/ops/extra/uv.lock"]) <= set(
        named
    ), out
    # Every file in the repo that states the version is either moved by the command, left with a reason, or history.
    stating = git(repo, "grep", "-l", "-E", rf"\b({re.escape(OLD)}|{re.escape(libraries_version(OLD))})\b").split()
    assert [f for f in stating if f not in named and not f.startswith(HISTORY)] == []
    assert "1 step left" not in out and "nothing changed" in out.splitlines()[-1]
    assert "helm dependency update helm/dagster-platform" in out
    assert status(repo) == ""


# -- (b) refusals: one line, exit 2, nothing changed -------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("1.13", "is not a Dagster release version 1.MINOR.PATCH"),
        ("v1.13.26", "is not a Dagster release version 1.MINOR.PATCH"),
        ("1.13.26rc1", "is not a Dagster release version 1.MINOR.PATCH"),
        ("2.0.0", "is not a Dagster release version 1.MINOR.PATCH"),
        (OLD, f"the platform is already on dagster {OLD}"),
    ],
)
def test_refuses_a_malformed_or_the_current_version(clone, version, says):
    done = upgrade(clone, "--version", version)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("dagster-upgrade: ") and says in done.stderr
    assert status(clone) == ""


def test_refuses_offline_saying_it_needs_pypi(clone):
    done = upgrade(clone, "--version", "1.13.26", DAGSTER_PLATFORM_PYPI="http://127.0.0.1:9/pypi")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1
    assert "cannot reach PyPI to check that dagster 1.13.26 is published" in done.stderr
    assert status(clone) == ""


def test_refuses_a_dirty_file_it_would_edit(clone):
    values = clone / "platform" / "values" / "base.yaml"
    edited = values.read_text() + "# work in progress\n"
    values.write_text(edited)
    try:
        done = upgrade(clone, "--version", "1.13.26", DAGSTER_PLATFORM_PYPI="http://127.0.0.1:9/pypi")
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == (
            "dagster-upgrade: uncommitted changes in files it would edit: platform/values/base.yaml; "
            "commit or stash them first (the upgrade must be one reviewable change)\n"
        )
        assert status(clone) == " M platform/values/base.yaml\n" and values.read_text() == edited
    finally:
        git(clone, "checkout", "--", "platform/values/base.yaml")


def test_a_failing_lock_step_restores_every_file(clone, fake_pypi, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text("#!/bin/sh\necho 'error: simulated resolver failure' >&2\nexit 1\n")
    (bin_dir / "uv").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = upgrade(clone, "--version", "1.13.26", DAGSTER_PLATFORM_PYPI=fake_pypi, PATH=path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("dagster-upgrade: a lock step failed (CalledProcessError")
    assert done.stderr.splitlines()[-1].endswith("every file restored, nothing changed")
    assert "Traceback" not in done.stderr
    assert status(clone) == ""


@pytest.mark.slow
def test_refuses_a_version_not_on_pypi(clone):
    done = upgrade(clone, "--version", "1.13.999")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1
    assert "not published on PyPI (or yanked): dagster==1.13.999, dagster-aws==0.29.999" in done.stderr
    # It names where one can go today: a release whose every pinned package is on PyPI (the platform's own, at least).
    newest = re.search(r"the newest release whose packages are all published is (1\.\d+\.\d+)", done.stderr)
    assert newest, done.stderr
    assert tuple(map(int, newest[1].split("."))) >= tuple(map(int, dagster_version().split(".")))
    assert status(clone) == ""


# -- (c) a real upgrade ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_upgrade_moves_every_pin_relocks_with_uv_and_leaves_the_chart_lock_step(tmp_path):
    new = older_published_release()
    new_lib = libraries_version(new)
    repo = make_clone(tmp_path)
    stating = set(git(repo, "grep", "-l", "-E", rf"\b({re.escape(OLD)}|{re.escape(libraries_version(OLD))})\b").split())
    done = upgrade(repo, "--version", new)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout

    # Every file that stated the version moved, except the two left (printed) and history; nothing else changed.
    changed = set(git(repo, "diff", "--name-only").split())
    assert set(EDITED + LOCKS) <= changed
    assert changed == {f for f in stating if f not in LEFT and not f.startswith(HISTORY)}
    assert all(f in out for f in changed)
    for lock in (f for f in changed if f.endswith("uv.lock")):
        packages = tomllib.loads((repo / lock).read_text())["package"]
        locked = {p["name"]: p["version"] for p in packages if "version" in p}
        assert locked["dagster"] == new, lock
        assert locked["dagster-postgres"] == new_lib, lock
    diff_stat = out[out.index("git diff --stat:") : out.index("next:")]
    assert all(Path(f).name in diff_stat for f in changed)
    assert (
        "1 step left (network): helm/dagster-platform/Chart.lock: `helm dependency update helm/dagster-platform`"
        in (out)
    )
    assert out.splitlines()[-1] == (
        "dagster-upgrade: done, 1 step left: helm/dagster-platform/Chart.lock needs the network (step 1)"
    )

    # The drift checks, run on the clone (its src first on PYTHONPATH: ROOT is the clone).
    def clone_pytest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *args],
            cwd=repo,
            env=clone_env(repo),
            capture_output=True,
            text=True,
            timeout=600,
        )

    versions = clone_pytest("tests/test_versions.py")
    assert versions.returncode == 0, versions.stdout
    assert "4 passed" in versions.stdout
    # What is left fails where the output says it does, and only there: Chart.lock (network) and the chart keys.
    chart = clone_pytest("tests/helm/test_chart.py", "-rf")
    failed = sorted(re.findall(r"^FAILED tests/helm/test_chart.py::(\w+)", chart.stdout, re.M))
    assert failed == [
        "test_chart_lock_digest_is_helms_hash_of_chart_yaml_and_lock",
        "test_helm_accepts_the_committed_lock_and_rejects_a_stale_one",
        "test_official_chart_is_pinned_to_the_platform_dagster_version",
        "test_the_offline_list_of_chart_keys_is_for_the_pinned_chart",
    ], chart.stdout
