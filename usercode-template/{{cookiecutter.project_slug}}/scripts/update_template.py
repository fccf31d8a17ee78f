"""`make update-template`: take the platform's template changes; uv.lock is regenerated, never merged as text.

Standard library only, run with the system Python (3.11) before any .venv exists. Steps:
  1. `cruft update` (non-interactive; the Makefile passes the pinned cruft run by the repo's own uv). cruft
     renders the template at this repo's commit and at the new one and applies the difference with
     `git apply --3way`, falling back to `git apply --reject`: a conflict leaves <<<<<<< markers or a .rej
     file behind and cruft still says it succeeded. pyproject.toml's `[tool.cruft] skip` keeps uv.lock out
     of that diff; a change to uv.lock that comes through anyway (a repo made before the skip, or cruft run
     by hand) is undone: uv.lock goes back to its committed version.
  2. Conflicts (markers, .rej files, unmerged paths) are reported with the files and what to do; exit 1.
     Run again after resolving them: an update in progress (.cruft.json changed, not committed) continues.
  3. `uv lock` regenerates uv.lock from the merged pyproject.toml, keeping this repo's locked versions where
     the new requirements allow them.
The Makefile then runs `make lint test check`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "uv.lock"
CRUFT_STATE = ".cruft.json"
MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)
NOT_SCANNED = {".git", ".venv", ".tools", ".dagster_home", "reports"}


class Refused(Exception):
    """A message for the user; the command exits 1."""


def git(*args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise Refused(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def changed_paths() -> list[str]:
    """Tracked files that differ from HEAD and untracked files that are not ignored."""
    tracked = git("diff", "--name-only", "-z", "HEAD").split("\0")
    untracked = git("ls-files", "--others", "--exclude-standard", "-z").split("\0")
    return sorted({path for path in tracked + untracked if path})


def rejected_hunks() -> list[str]:
    """.rej files that `git apply --reject` left (searched on disk: they may be git-ignored)."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.rej")
        if not NOT_SCANNED.intersection(path.relative_to(ROOT).parts)
    )


def has_markers(path: str) -> bool:
    file = ROOT / path
    return file.is_file() and bool(MARKER.search(file.read_text(errors="replace")))


def conflicts() -> list[str]:
    """One line per conflicted file: markers, unmerged index entries, hunks rejected into a .rej file."""
    unmerged = set(filter(None, git("diff", "--name-only", "-z", "--diff-filter=U").split("\0")))
    found = {path: "conflict markers <<<<<<< ... >>>>>>>" for path in changed_paths() if has_markers(path)}
    for path in unmerged - found.keys():
        found[path] = "unmerged (resolve it, then `git add` it)"
    for rej in rejected_hunks():
        found[rej.removesuffix(".rej")] = f"hunks that did not apply are in {rej}"
    return [f"  {path}: {what}" for path, what in sorted(found.items())]


def restore_lock() -> None:
    """Undo any textual change to uv.lock: it is regenerated from pyproject.toml instead."""
    (ROOT / f"{LOCK}.rej").unlink(missing_ok=True)
    if git("ls-files", "--", LOCK).strip():
        git("checkout", "HEAD", "--", LOCK)
    else:
        (ROOT / LOCK).unlink(missing_ok=True)


def update(cruft: list[str], uv: str) -> None:
    if git("rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise Refused("make update-template needs this repository under git with a first commit (git init).")
    dirty = changed_paths()
    if dirty and CRUFT_STATE not in dirty:
        listed = "\n".join(f"  {path}" for path in dirty)
        raise Refused(
            f"Uncommitted changes:\n{listed}\nCommit or stash them first: the template update is merged "
            "into a clean working tree, so that `git diff` afterwards shows exactly what it changed."
        )
    if dirty:
        print(f"{CRUFT_STATE} is changed but not committed: continuing the template update in progress.")
    else:
        print(f"$ {shlex.join(cruft)}", flush=True)
        if subprocess.run(cruft, cwd=ROOT).returncode != 0:
            raise Refused("cruft update failed (see above); nothing was merged.")
    if LOCK in changed_paths() or (ROOT / f"{LOCK}.rej").exists():
        restore_lock()
        print(f"{LOCK}: the template's lock is not merged as text; it is regenerated from pyproject.toml.")

    found = conflicts()
    if found:
        listed = "\n".join(found)
        steps = []
        if any("<<<<<<<" in line for line in found):
            steps.append("keep what both sides need and delete the <<<<<<< ======= >>>>>>> lines")
        if any(".rej" in line for line in found):
            steps.append("apply the hunks of its .rej file by hand, then delete the .rej file")
        raise Refused(
            "CONFLICT: the template update overlaps with this repository's own changes in:\n"
            f"{listed}\n"
            "Everything else of the update is applied (not committed); uv.lock is untouched; lint, test "
            "and check did not run.\n"
            f"To finish: edit each file above ({'; '.join(steps) or 'resolve it'}), `git add` it, and run "
            "`make update-template` again: it regenerates uv.lock and runs lint, test and check.\n"
            "To abandon the update: `git reset --hard HEAD`, then delete the new files `git status` lists."
        )

    print(f"$ {uv} lock", flush=True)
    if subprocess.run([uv, "lock"], cwd=ROOT).returncode != 0:
        raise Refused(
            "uv lock failed: the merged pyproject.toml's requirements do not resolve (see above). Fix "
            "pyproject.toml, then run `make update-template` again."
        )
    print("Template update merged and uv.lock regenerated; running lint, test and check.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", required=True, help="the uv executable")
    parser.add_argument("--cruft", required=True, help="command that runs cruft (split like a shell)")
    parser.add_argument("--checkout", default="", help="template branch, tag or commit (default: its HEAD)")
    args = parser.parse_args(argv)
    cruft = [*shlex.split(args.cruft), "update", "--skip-apply-ask"]
    if args.checkout:
        cruft += ["--checkout", args.checkout]
    try:
        update(cruft, args.uv)
    except Refused as refused:
        print(f"make update-template: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
