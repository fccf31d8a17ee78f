"""`dagster-platform dagster-upgrade --version X.Y.Z` (make dagster-upgrade): move every copy of the platform's one
Dagster version at once, regenerate the uv locks, and say what is left.

The version is stated once, in pyproject.toml (`paths.dagster_version()`); tests/test_versions.py, tests/helm and
tests/ci fail when a copy drifts. This command is the other half: it finds every copy (PINNED below), refuses
before writing anything when it cannot do all of them, writes every text edit, regenerates each uv.lock (the
platform's, the template's through `template/render.py: relock`, each `platform/**` location's), and restores
every file it touched when a lock step fails. Two things it does not do by itself:

- helm/dagster-platform/Chart.lock: `helm dependency update` resolves the chart against the official chart
  repository; run here when `helm` is on PATH and the repository answers, otherwise printed as the step left.
- helm/dagster-chart-keys.yaml `version`: it attests that someone compared the key list with the new chart's
  values.yaml; setting it mechanically would make tests/helm/test_chart.py pass without that comparison, so it is
  left as it is and printed as a follow-up step (that test fails until then, as intended).

It is a cross-flow command (template, helm, CI, platform locations), so it sits next to cli.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dagster_platform import paths

PROG = "dagster-upgrade"
# The PyPI JSON API; DAGSTER_PLATFORM_PYPI points it elsewhere (tests: an unreachable address).
PYPI = os.environ.get("DAGSTER_PLATFORM_PYPI", "https://pypi.org/pypi")
HELM_REPO = "https://dagster-io.github.io/helm"
CHART_DIR = Path("helm") / "dagster-platform"
CHART_LOCK = CHART_DIR / "Chart.lock"
CHART_KEYS = Path("helm") / "dagster-chart-keys.yaml"
TEMPLATE_PYPROJECT = Path("usercode-template") / "project" / "pyproject.toml"
TEMPLATE_LOCK = Path("usercode-template") / "project" / "uv.lock"


class Refusal(Exception):
    """One line on stderr, exit status 2, nothing written."""


def libraries_version(core: str) -> str:
    """paths.libraries_version, refusing a malformed version in one line."""
    libraries = paths.libraries_version(core)
    if libraries is None:
        raise Refusal(f"{core!r} is not a Dagster release version 1.MINOR.PATCH (e.g. 1.13.28)")
    return libraries


# -- where the version lives -------------------------------------------------------------------------------
@dataclass
class Edit:
    path: Path  # relative to the repo root
    group: str
    what: list[str]
    old: str
    new: str


@dataclass
class Plan:
    old: str
    new: str
    old_lib: str
    new_lib: str
    edits: list[Edit] = field(default_factory=list)
    locks: list[tuple[Path, str]] = field(default_factory=list)  # (lock file, how it is regenerated)
    packages: dict[str, str] = field(default_factory=dict)  # every pinned distribution -> its new version


# (group, files (glob relative to the root), pattern with groups (prefix)(version)(suffix), what it is, required)
# A required entry that matches nothing means the copy has drifted: the command refuses rather than guess.
def _pin(plan: Plan) -> str:
    versions = "|".join(re.escape(v) for v in (plan.old, plan.old_lib))
    return rf"""(?P<pre>["'](?P<name>dagster(?:-[a-z0-9-]+)?)==)(?P<ver>{versions})(?P<post>["'])"""


def _pinned(plan: Plan) -> list[tuple[str, list[str], str, str, bool]]:
    core, lib = re.escape(plan.old), re.escape(plan.old_lib)
    return [
        ("pins", ["pyproject.toml"], _pin(plan), "pin", True),
        ("pins", ["platform/*/pyproject.toml"], _pin(plan), "pin", False),
        ("pins", [str(TEMPLATE_PYPROJECT)], _pin(plan), "pin", False),
        (
            "pins",
            ["usercode-template/copier.yml"],
            rf"(?m)^(?P<pre>(?P<name>dagster(?:_libraries)?_version):\n(?:  .*\n)*?  default: \")"
            rf'(?P<ver>{core}|{lib})(?P<post>")',
            "default",
            True,
        ),
        (
            "chart and images",
            [str(CHART_DIR / "Chart.yaml")],
            rf'(?m)^(?P<pre>(?P<name>appVersion):\s*"?)(?P<ver>{core})(?P<post>"?)\s*$',
            "appVersion",
            True,
        ),
        (
            "chart and images",
            [str(CHART_DIR / "Chart.yaml")],
            rf"(?m)^(?P<pre>\s+(?P<name>version):\s*)(?P<ver>{core})(?P<post>)\s*$",
            "dependency dagster",
            True,
        ),
        (
            "chart and images",
            ["platform/values/*.yaml"],
            rf'(?m)^(?P<pre>\s*(?P<name>tag):\s*"?)(?P<ver>{core})(?P<post>"?)\s*$',
            "image tag",
            True,
        ),
        (
            "CI",
            [".gitlab-ci.yml", "ci/*.yml", "ci/*.yaml", "templates/*/template.yml"],
            rf'(?m)^(?P<pre>\s*(?P<name>[A-Z][A-Z0-9_]*):\s*"?)(?P<ver>{core})(?P<post>"?)\s*$',
            "variable",
            True,
        ),
        ("Dockerfiles", ["Dockerfile", "*/Dockerfile", "*.Dockerfile"], _pin(plan), "pin", False),
        (
            "Dockerfiles",
            ["Dockerfile", "*/Dockerfile", "*.Dockerfile"],
            rf"(?P<pre>\b(?P<name>[A-Z_]*DAGSTER[A-Z_]*VERSION)=)(?P<ver>{core}|{lib})(?P<post>\b)",
            "ARG/ENV",
            False,
        ),
        # Docs: only sentences that state the current version; measured figures and narratives are history.
        (
            "docs (current version only)",
            ["README.md"],
            rf"(?P<pre>(?P<name>One Dagster version everywhere): \*\*)(?P<ver>{core})(?P<post>\*\* \(libraries )",
            "headline version",
            False,
        ),
        (
            "docs (current version only)",
            ["README.md"],
            rf"(?P<pre>\*\*[0-9.]+\*\* \((?P<name>libraries) )(?P<ver>{lib})(?P<post>\))",
            "headline libraries",
            False,
        ),
        (
            "docs (current version only)",
            ["platform/*.md"],
            rf"(?P<pre>`(?P<name>dagster(?:-[a-z0-9-]+)?)==)(?P<ver>{core}|{lib})(?P<post>`)",
            "pin",
            False,
        ),
        (
            "docs (current version only)",
            ["helm/README.md"],
            rf"(?P<pre>(?P<name>official `dagster` chart) `)(?P<ver>{core})(?P<post>`)",
            "chart dependency",
            False,
        ),
    ]


def _repo_files(root: Path) -> list[str]:
    """Every file git sees (committed or new, not ignored): no virtualenvs, caches or rendered repos."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise Refusal(f"{root} is not a git work tree (git ls-files: {done.stderr.strip()})")
    return sorted({f for f in done.stdout.split("\0") if f and (root / f).is_file()})


def _files(root: Path, listing: list[str], pattern: str) -> list[Path]:
    # fnmatch's `*` crosses `/`: "platform/*/pyproject.toml" is every pyproject.toml at any depth below platform/.
    return [root / f for f in listing if fnmatch.fnmatchcase(f, pattern) and not f.endswith(".lock")]


def _substitute(text: str, pattern: str, plan: Plan, what: str) -> tuple[str, list[str]]:
    """text with every match moved to the new version, and what each match was (a package, a key, a kind)."""
    names: list[str] = []

    def swap(m: re.Match) -> str:
        version = plan.new if m["ver"] == plan.old else plan.new_lib
        if what == "pin":
            plan.packages[m["name"]] = version
        names.append(m["name"] if what in ("pin", "default", "variable") else what)
        return f"{m['pre']}{version}{m['post']}"

    return re.sub(pattern, swap, text), names


def plan_upgrade(root: Path, old: str, new: str) -> tuple[Plan, dict[Path, str]]:
    """Every edit, computed in memory: (plan, {relative path: new text}). Refuses when a required copy is missing."""
    plan = Plan(old, new, libraries_version(old), libraries_version(new))
    texts: dict[Path, str] = {}
    listing = _repo_files(root)
    by_file: dict[Path, Edit] = {}
    for group, globs, pattern, what, required in _pinned(plan):
        hits = 0
        for pattern_glob in globs:
            for path in _files(root, listing, pattern_glob):
                rel = path.relative_to(root)
                text = texts.get(rel, path.read_text())
                changed, names = _substitute(text, pattern, plan, what)
                if not names:
                    continue
                hits += len(names)
                texts[rel] = changed
                edit = by_file.setdefault(rel, Edit(rel, group, [], plan.old, plan.new))
                edit.what += names
        if required and not hits:
            where = ", ".join(globs)
            raise Refusal(
                f"{where} states no {what} at dagster {plan.old} / {plan.old_lib}: it has drifted from pyproject.toml; "
                "fix it first (pytest tests/test_versions.py tests/helm/test_chart.py tests/ci/test_structure.py)"
            )
    plan.edits = list(by_file.values())
    # Locks: each project whose pins move, regenerated by uv after the text edits are written.
    for edit in plan.edits:
        if (
            edit.path.name == "pyproject.toml"
            and edit.path != TEMPLATE_PYPROJECT
            and (root / edit.path).parent.joinpath("uv.lock").exists()
        ):
            plan.locks.append((edit.path.parent / "uv.lock", "uv lock"))
    if (root / TEMPLATE_LOCK).exists():
        plan.locks.append((TEMPLATE_LOCK, "via `dagster-platform template lock`"))
    return plan, texts


# -- refusals ----------------------------------------------------------------------------------------------
def check_clean(root: Path, rel_paths: list[Path]) -> None:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", *map(str, rel_paths)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise Refusal(f"git status failed in {root}: {' '.join(done.stderr.split())}")
    dirty = [line[3:] for line in done.stdout.splitlines()]
    if dirty:
        raise Refusal(
            f"uncommitted changes in files it would edit: {', '.join(dirty)}; commit or stash them first "
            "(the upgrade must be one reviewable change)"
        )


def _releases(name: str, version: str = "") -> dict[str, list]:
    """{version: files} of `name` on PyPI (404: none). Refuses when PyPI is unreachable."""
    # The per-release endpoint (PYPI/<name>/<version>/json) answers 404 through some mirrors and proxies even for
    # published releases; the project's own document lists every release with its files, and is what we read.
    url = f"{PYPI}/{name}/json"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (https or a test's override)
            return json.load(response).get("releases", {})
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {}
        raise Refusal(f"PyPI answered {exc.code} for {url}; try again later") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason, what = getattr(exc, "reason", exc), " ".join(filter(None, (name, version)))
        raise Refusal(
            f"cannot reach PyPI to check that {what} is published ({url}: {reason}); "
            "this command needs the network (PyPI) for the check and for uv lock"
        ) from None


def _published(releases: dict[str, list], version: str) -> bool:
    """A release with a file that is not yanked."""
    return any(not f.get("yanked") for f in releases.get(version) or [])


def newest_complete(plan: Plan, releases: dict[str, dict[str, list]]) -> str | None:
    """The newest Dagster release 1.M.P whose every pinned distribution is published (core packages at 1.M.P,
    the libraries at 0.(M+16).P): what `make dagster-upgrade` can move to today."""
    library = {name for name, version in plan.packages.items() if version == plan.new_lib}
    candidates = sorted((v for v in releases.get("dagster", {}) if re.fullmatch(r"1\.\d+\.\d+", v)), key=_key)
    for core in reversed(candidates):
        wanted = {name: libraries_version(core) if name in library else core for name in plan.packages}
        if all(_published(releases[name], version) for name, version in wanted.items()):
            return core
    return None


def check_published(plan: Plan) -> None:
    names = sorted({*plan.packages, "dagster"})
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        found = pool.map(lambda n: _releases(n, plan.packages.get(n, "")), names)
        releases = dict(zip(names, found, strict=True))
    missing = [
        f"{n}=={plan.packages[n]}" for n in sorted(plan.packages) if not _published(releases[n], plan.packages[n])
    ]
    if missing:
        newest = newest_complete(plan, releases)
        hint = f"the newest release whose packages are all published is {newest}" if newest else "see PyPI"
        raise Refusal(
            f"not published on PyPI (or yanked): {', '.join(missing)}; {hint} "
            "(https://pypi.org/project/dagster/#history)"
        )


# -- the lock steps ----------------------------------------------------------------------------------------
def _uv_lock(root: Path, project_dir: Path) -> None:
    subprocess.run([paths.uv_executable(), "lock"], cwd=root / project_dir, check=True)


def _template_lock() -> None:
    from dagster_platform.template.render import relock

    with tempfile.TemporaryDirectory() as tmp:
        relock(Path(tmp))


def locked(lock_file: Path) -> dict[str, str]:
    lock = tomllib.loads(lock_file.read_text())
    return {pkg["name"]: pkg["version"] for pkg in lock.get("package", []) if "version" in pkg}


def chart_lock_step(root: Path, new: str, run: bool) -> str | None:
    """Run `helm dependency update` when it can be; else return the step left (one line)."""
    command = f"helm dependency update {CHART_DIR}"
    why = f"needs the network: it resolves dagster {new} in {HELM_REPO}"
    helm = shutil.which("helm")
    if not run:
        return f"{CHART_LOCK}: `{command}` ({why}; run here only when `helm` is on PATH and the repository answers)"
    if helm:
        try:
            urllib.request.urlopen(f"{HELM_REPO}/index.yaml", timeout=10).close()  # noqa: S310
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return f"{CHART_LOCK}: `{command}` ({why}, unreachable here: {getattr(exc, 'reason', exc)})"
        done = subprocess.run([helm, "dependency", "update", str(CHART_DIR)], cwd=root, capture_output=True, text=True)
        if done.returncode == 0:
            return None
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return f"{CHART_LOCK}: `{command}` failed here ({last})"
    return f"{CHART_LOCK}: `{command}` ({why}; no `helm` on PATH here)"


# -- the command -------------------------------------------------------------------------------------------
def _git_stat(root: Path, rel_paths: list[Path]) -> str:
    done = subprocess.run(
        ["git", "diff", "--stat", "--", *map(str, rel_paths)], cwd=root, capture_output=True, text=True
    )
    return done.stdout.rstrip()


def _summary(plan: Plan, say: Callable[[str], None]) -> None:
    width = max((len(str(e.path)) for e in plan.edits), default=0) + 2
    for group in dict.fromkeys(e.group for e in plan.edits):
        say(f"{group}:")
        for e in (e for e in plan.edits if e.group == group):
            say(f"  {str(e.path):<{width}}{', '.join(e.what)}")


def upgrade(root: Path, new: str, dry_run: bool, say: Callable[[str], None] = print) -> int:
    try:
        old = paths.dagster_version()
    except RuntimeError as exc:
        raise Refusal(str(exc)) from None
    libraries_version(new)  # refuses a malformed version
    if new == old:
        raise Refusal(f"the platform is already on dagster {old} (pyproject.toml); nothing to do")
    plan, texts = plan_upgrade(root, old, new)
    touched = [e.path for e in plan.edits] + [lock for lock, _ in plan.locks] + [CHART_LOCK]
    check_clean(root, touched)
    check_published(plan)

    direction = "downgrade" if _key(new) < _key(old) else "upgrade"
    on_pypi = ", ".join(f"{n}=={v}" for n, v in sorted(plan.packages.items()))
    say(f"{PROG}: dagster {old} -> {new}, libraries {plan.old_lib} -> {plan.new_lib} ({direction}; on PyPI: {on_pypi})")
    if dry_run:
        say("dry run: nothing is written. It would edit:")
    _summary(plan, say)
    say("locks, regenerated with uv:")
    for lock, how in plan.locks:
        say(f"  {lock}  ({how})")
    say("not rewritten (history): bench/results/, docs/bench.md's measured figures, tests' literal versions")
    keys_step = (
        f"{CHART_KEYS}: `version` stays {old} until the key list is compared with dagster {new}'s "
        f"helm/dagster/values.yaml (its header says how), then set `version: {new}`; tests/helm/test_chart.py "
        "fails until then, on purpose (setting it here would claim a comparison nobody made)"
    )
    if dry_run:
        say("left for after the run:")
        say(f"  {chart_lock_step(root, new, run=False)}")
        say(f"  {keys_step}")
        say(f"dry run: {len(plan.edits)} files to edit, {len(plan.locks)} locks to regenerate; nothing changed")
        return 0

    originals = {rel: (root / rel).read_bytes() for rel in touched if (root / rel).exists()}
    started = time.monotonic()
    try:
        for rel, text in texts.items():
            (root / rel).write_text(text)
        for lock, _how in plan.locks:
            say(f"{PROG}: locking {lock} ...")
            sys.stdout.flush()
            if lock == TEMPLATE_LOCK:
                _template_lock()
            else:
                _uv_lock(root, lock.parent)
            versions = locked(root / lock)
            wrong = {n: versions.get(n) for n, v in plan.packages.items() if n in versions and versions[n] != v}
            if versions.get("dagster") != new or wrong:
                raise RuntimeError(f"{lock} locks {wrong or {'dagster': versions.get('dagster')}}, not the new pins")
    except (Exception, KeyboardInterrupt) as exc:
        for rel, data in originals.items():
            (root / rel).write_bytes(data)
        sys.stdout.flush()
        detail = f"exit {exc.returncode}, output above" if isinstance(exc, subprocess.CalledProcessError) else exc
        print(
            f"{PROG}: a lock step failed ({type(exc).__name__}: {detail}); every file restored, nothing changed",
            file=sys.stderr,
        )
        return 1
    say(f"{PROG}: {len(plan.locks)} locks regenerated in {time.monotonic() - started:.0f} s")

    chart_left = chart_lock_step(root, new, run=True)
    changed = [e.path for e in plan.edits] + [lock for lock, _ in plan.locks] + [CHART_LOCK]
    say("git diff --stat:")
    say(_git_stat(root, changed))
    say("next:")
    steps = [f"1 step left (network): {chart_left}"] if chart_left else []
    steps += [
        keys_step,
        "review: git diff; then `make test` (it re-syncs .venv from the new uv.lock first)",
        f'commit it all as one change: git add <the files above> && git commit -m "Dagster {new}" -- <the files above>',
    ]
    for number, step in enumerate(steps, 1):
        say(f"  {number}. {step}")
    if chart_left:
        say(f"{PROG}: done, 1 step left: {CHART_LOCK} needs the network (step 1)")
    else:
        say(f"{PROG}: done; {CHART_LOCK} updated by helm")
    return 0


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _command(args) -> int:
    try:
        return upgrade(paths.ROOT, args.version.strip(), args.dry_run)
    except Refusal as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        PROG, help="move the platform's one Dagster version everywhere (pins, template, chart, images, CI, locks)"
    )
    parser.add_argument("--version", required=True, help="the new Dagster core version, e.g. 1.13.28")
    parser.add_argument("--dry-run", action="store_true", help="list every file it would change; write nothing")
    parser.set_defaults(func=_command)
