"""The version guard: a repo may not lock a dagster newer than the platform's."""

import subprocess
import sys

import pytest

from dagster_platform.ci import version_guard
from dagster_platform.ci.version_guard import (
    VersionGuardError,
    check,
    locked_version,
    oldest_supported,
    version_key,
)
from dagster_platform.cli import main as cli
from dagster_platform.paths import ROOT, TEMPLATE_DIR, dagster_version

TEMPLATE_LOCK = TEMPLATE_DIR / "project" / "uv.lock"


def lock_with(tmp_path, version: str, name: str = "dagster"):
    lock = tmp_path / "uv.lock"
    lock.write_text(
        "version = 1\n"
        f'[[package]]\nname = "{name}"\nversion = "{version}"\nsource = {{ registry = "https://pypi.org/simple" }}\n'
        '[[package]]\nname = "dagster-pipes"\nversion = "9.9.9"\nsource = { registry = "https://pypi.org/simple" }\n'
    )
    return lock


def test_template_lock_matches_the_platform():
    assert locked_version(TEMPLATE_LOCK) == dagster_version()
    assert check(TEMPLATE_LOCK, dagster_version()).startswith("OK:")


def test_newer_lock_fails_naming_both_versions(tmp_path):
    lock = lock_with(tmp_path, "1.14.0")
    with pytest.raises(VersionGuardError) as error:
        check(lock, "1.13.27")
    assert "dagster==1.14.0" in str(error.value)
    assert "platform's dagster==1.13.27" in str(error.value)


@pytest.mark.parametrize("repo_version", ["1.13.27", "1.13.26", "1.12.9", "1.13.27rc1", "1.13.27.dev0"])
def test_equal_or_older_lock_passes(tmp_path, repo_version):
    assert check(lock_with(tmp_path, repo_version), "1.13.27").startswith("OK:")


def test_one_minor_behind_passes_from_its_first_release(tmp_path):
    assert check(lock_with(tmp_path, "1.12.0"), "1.13.27").startswith("OK:")


@pytest.mark.parametrize("repo_version", ["1.12.0rc1", "1.11.16", "1.11.99", "0.15.8"])
def test_more_than_one_minor_behind_fails_with_the_fix(tmp_path, repo_version):
    lock = lock_with(tmp_path, repo_version)
    with pytest.raises(VersionGuardError) as error:
        check(lock, "1.13.27")
    assert str(error.value) == (
        f"{lock} locks dagster=={repo_version}, more than one minor release behind the platform's dagster==1.13.27, "
        "whose database schema it was not written for. Take the platform's template update (`make update-template`) "
        "or lock dagster>=1.12.0."
    )


def test_oldest_supported_is_the_previous_minors_first_release():
    assert [oldest_supported(v) for v in ("1.13.27", "1.14.0rc1", "2.0.0", "2.1")] == [
        "1.12.0",
        "1.13.0",
        "2.0.0",
        "2.0.0",
    ]


@pytest.mark.parametrize("repo_version", ["1.13.28", "1.13.28rc1", "1.13.27.post1", "2.0.0", "1.13.100"])
def test_newer_versions_fail(tmp_path, repo_version):
    with pytest.raises(VersionGuardError, match="newer than the platform"):
        check(lock_with(tmp_path, repo_version), "1.13.27")


def test_version_ordering():
    order = ["1.13.9", "1.13.10.dev1", "1.13.10a1", "1.13.10b2", "1.13.10rc1", "1.13.10", "1.13.10.post1", "1.14"]
    assert sorted(order, key=version_key) == order
    assert version_key("1.14") == version_key("1.14.0")
    with pytest.raises(VersionGuardError, match="not a PEP 440"):
        version_key("latest")


def test_lock_without_dagster_fails(tmp_path):
    with pytest.raises(VersionGuardError, match="dagster is not locked"):
        check(lock_with(tmp_path, "1.0.0", name="pandas"), "1.13.27")


def test_missing_lock_fails(tmp_path):
    with pytest.raises(VersionGuardError, match="no such lock file"):
        check(tmp_path / "uv.lock", "1.13.27")


def test_cli_exit_codes(tmp_path, capsys):
    newer = lock_with(tmp_path, "1.99.0")
    assert cli(["version-guard", "--lock", str(newer), "--platform-version", "1.13.27"]) == 1
    assert "dagster==1.99.0" in capsys.readouterr().err
    # Without --platform-version, inside the platform: its own pin.
    assert cli(["version-guard", "--lock", str(TEMPLATE_LOCK)]) == 0


def test_without_a_platform_version_or_pin_is_an_error(tmp_path, monkeypatch, capsys):
    """Outside a platform checkout (no pyproject.toml to read the pin from), the version must be given."""

    def no_pin():
        raise FileNotFoundError("pyproject.toml")

    monkeypatch.delenv("DAGSTER_PLATFORM_VERSION", raising=False)
    monkeypatch.setattr(version_guard, "dagster_version", no_pin)
    assert version_guard.main(["--lock", str(TEMPLATE_LOCK)]) == 2
    assert "give --platform-version or set DAGSTER_PLATFORM_VERSION" in capsys.readouterr().err


def test_runs_standalone_with_the_standard_library_only(tmp_path):
    """CI runs the module from a bare checkout with a plain python3: no platform install, no third-party import."""
    lock = lock_with(tmp_path, "1.99.0")
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from dagster_platform.ci.version_guard import main; sys.exit(main(sys.argv[2:]))",
            str(ROOT / "src"),
            "--lock",
            str(lock),
            "--platform-version",
            "1.13.27",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert "newer than the platform's dagster==1.13.27" in done.stderr
