"""Version guard: a user-code repo locks a Dagster no newer than the platform runs, and at most one minor older.

The webserver and daemon of the platform talk to every code server over gRPC; a code location built on a
newer Dagster than the platform is not supported, so its pipeline stops before building an image. Older code
keeps running against a schema the platform's upgrade migrated (docs/upgrade.md), for one minor release: a
repo still on the minor before the previous one is refused until it takes the template update.

Standard library only: user-code pipelines run this file straight from a checkout of the platform repo
(`PYTHONPATH=<platform>/src python3 -m dagster_platform.ci.version_guard ...`), without installing the platform.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from pathlib import Path

from dagster_platform import ci
from dagster_platform.paths import dagster_version

# PEP 440 subset that Dagster releases use: 1.13.27, 1.14.0rc1, 1.13.0.post1, 1.14.0.dev0
_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|rc)[-_.]?(?P<pre_n>\d+))?"
    r"(?:[-_.]?post[-_.]?(?P<post>\d+))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d+))?$",
    re.IGNORECASE,
)
_PRE_ORDER = {"a": 0, "b": 1, "rc": 2}


class VersionGuardError(Exception):
    """The lock cannot be checked, or its Dagster is newer than the platform's."""


def version_key(version: str) -> tuple:
    """A sortable key for a PEP 440 version (the subset above); raises VersionGuardError otherwise."""
    match = _VERSION.match(version.strip())
    if not match:
        raise VersionGuardError(f"cannot compare version {version!r}: not a PEP 440 release version")
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    # dev < pre-release < final < post; a pure .devN sorts before any pre-release of that release.
    if match["pre"]:
        pre = (_PRE_ORDER[match["pre"].lower()], int(match["pre_n"]))
    elif match["dev"] and not match["post"]:
        pre = (-1, 0)
    else:
        pre = (3, 0)
    post = int(match["post"]) if match["post"] else -1
    dev = int(match["dev"]) if match["dev"] else float("inf")
    return (tuple(release), pre, post, dev)


def locked_version(lock_path: Path, package: str = "dagster") -> str:
    """The version of `package` in a uv.lock file."""
    try:
        lock = tomllib.loads(lock_path.read_text())
    except FileNotFoundError as exc:
        raise VersionGuardError(f"{lock_path}: no such lock file (run `uv lock` and commit it)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise VersionGuardError(f"{lock_path}: not a valid uv.lock (TOML): {exc}") from exc
    versions = {
        str(entry.get("version"))
        for entry in lock.get("package", [])
        if entry.get("name") == package and entry.get("version")
    }
    if not versions:
        raise VersionGuardError(f"{lock_path}: {package} is not locked; a code location must depend on it")
    if len(versions) > 1:
        raise VersionGuardError(f"{lock_path}: {package} is locked at several versions: {sorted(versions)}")
    return versions.pop()


def oldest_supported(platform_version: str) -> str:
    """The first release of the minor before the platform's (1.13.27 -> 1.12.0)."""
    version_key(platform_version)  # refuses what is not a version
    major, minor = ([int(p) for p in _VERSION.match(platform_version.strip())["release"].split(".")] + [0])[:2]
    return f"{major}.{max(minor - 1, 0)}.0"


def check(lock_path: Path, platform_version: str, package: str = "dagster") -> str:
    """Return a success message, or raise VersionGuardError naming both versions."""
    repo_version = locked_version(lock_path, package)
    if version_key(repo_version) > version_key(platform_version):
        raise VersionGuardError(
            f"{lock_path} locks {package}=={repo_version}, newer than the platform's {package}=={platform_version}. "
            f"Lock {package}=={platform_version} or older (uv lock --upgrade-package {package}=={platform_version}),"
            " or upgrade the platform first."
        )
    oldest = oldest_supported(platform_version)
    if version_key(repo_version) < version_key(oldest):
        raise VersionGuardError(
            f"{lock_path} locks {package}=={repo_version}, more than one minor release behind the platform's "
            f"{package}=={platform_version}, whose database schema it was not written for. Take the platform's "
            f"template update (`make update-template`) or lock {package}>={oldest}."
        )
    relation = "equal to" if version_key(repo_version) == version_key(platform_version) else "older than"
    return f"OK: {package}=={repo_version} in {lock_path} is {relation} the platform's {package}=={platform_version}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lock", type=Path, default=Path("uv.lock"), help="the repo's uv.lock (default: ./uv.lock)")
    parser.add_argument(
        "--platform-version",
        default=os.environ.get("DAGSTER_PLATFORM_VERSION"),
        help="the platform's Dagster version (default: $DAGSTER_PLATFORM_VERSION; in the platform repo, its pin)",
    )
    parser.add_argument("--package", default="dagster", help="package to compare (default: dagster)")


def run(args: argparse.Namespace) -> int:
    platform_version = args.platform_version
    if not platform_version:
        try:  # in a checkout of the platform repo: its one pin in pyproject.toml
            platform_version = dagster_version()
        except (OSError, RuntimeError):
            print("version-guard: give --platform-version or set DAGSTER_PLATFORM_VERSION", file=sys.stderr)
            return 2
    try:
        print(check(args.lock, platform_version, args.package))
    except VersionGuardError as exc:
        print(f"version-guard: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return ci.main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
