"""`make update-template`: take the platform's template changes; uv.lock is regenerated, never merged as text.

Standard library only, run with the system Python (3.11) before any .venv exists. Steps:
  1. A clean git work tree is required, so that `git diff` afterwards shows exactly what the update changed.
  2. `copier update` (copier pinned in the Makefile, run by this repo's uv): a 3-way merge of the template's
     changes since .copier-answers.yml's `_commit` into this repo, with the recorded answers (`--defaults`)
     and the platform's current facts. uv.lock is in the template's `_skip_if_exists`: never merged as text.
  3. Nothing changed: "already up to date", and nothing else runs.
  4. Conflicts (<<<<<<< markers, .rej files) are listed with how to finish or abandon; exit 1.
  5. `uv lock` regenerates uv.lock from the merged pyproject.toml, then `make lint test check`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = ".copier-answers.yml"
MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)


class Refused(Exception):
    """A message for the user; the command exits 1."""


def git(*args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise Refused(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def recorded() -> dict[str, str]:
    """_src_path and _commit of .copier-answers.yml (plain `key: value` lines: no YAML parser needed)."""
    path = ROOT / ANSWERS
    if not path.is_file():
        cruft = (
            " It was made with cruft: move it to copier first (README, Template updates)."
            * (ROOT / ".cruft.json").is_file()
        )
        raise Refused(f"{ANSWERS} is missing: this repository does not record its template.{cruft}")
    found = re.findall(r"^(_src_path|_commit): *['\"]?(.*?)['\"]?\s*$", path.read_text(), re.MULTILINE)
    return dict(found)


def changed(new_only: bool = False) -> list[str]:
    """Every path that differs from HEAD (tracked or not ignored; new_only: the untracked ones)."""
    status = git("status", "--porcelain", "--untracked-files=all").splitlines()
    return sorted(line[3:] for line in status if not new_only or line.startswith("??"))


def conflicts(paths: list[str]) -> list[str]:
    found = [
        p for p in paths if (ROOT / p).is_file() and MARKER.search((ROOT / p).read_text(errors="replace"))
    ]
    return sorted(found + [p for p in paths if p.endswith(".rej")])


def update(copier: list[str], uv: str) -> bool:
    """True when the template brought changes (then lint, test and check run)."""
    if git("rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise Refused("make update-template needs this repository under git with a first commit (git init).")
    before = recorded()
    dirty = changed()
    if dirty:
        listed = "\n".join(f"  {path}" for path in dirty)
        raise Refused(
            f"Uncommitted changes:\n{listed}\nCommit or stash them first: the template update is merged "
            "into a clean working tree, so that `git diff` afterwards shows exactly what it changed."
        )
    print(f"$ {shlex.join(copier)}", flush=True)
    done = subprocess.run(copier, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:  # copier's traceback: only its last line, the error itself
        git("reset", "-q")
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "Unknown revision" in error:
            raise Refused(
                f"the template commit this repo records ({before.get('_commit')}) is not in "
                f"{before.get('_src_path')}: the repo was generated from uncommitted template changes. Set "
                "_commit in .copier-answers.yml to the platform commit it was generated from, commit that, "
                "and run make update-template again."
            )
        raise Refused(
            f"copier update failed: {error}. To undo what it left: git reset --hard && git clean -fd"
        )
    print(done.stderr, end="", file=sys.stderr, flush=True)
    git(
        "reset", "-q"
    )  # copier stages its result: leave it all in the working tree, plain `git diff` shows it
    after = recorded()
    source, old, new = before.get("_src_path", "?"), before.get("_commit", "?"), after.get("_commit", "?")
    paths = changed()
    if not paths:
        print(f"Already up to date with {source} at {new}.")
        return False
    if changed(new_only=True):
        git(
            "add", "--intent-to-add", "--", *changed(new_only=True)
        )  # new files too appear in plain `git diff`
    print(f"Template {source}: {old} -> {new}. Files changed:")
    print("\n".join(f"  {path}" for path in paths))
    found = conflicts(paths)
    if found:
        listed = "\n".join(f"  {path}" for path in found)
        raise Refused(
            "CONFLICT: the template update overlaps with this repository's own changes in:\n"
            f"{listed}\n"
            "Everything else of the update is applied (not committed); uv.lock is untouched; lint, test and "
            "check did not run.\n"
            "To finish: `git diff`, edit each file above (keep what both sides need, delete the "
            "<<<<<<< ======= >>>>>>> lines; apply a .rej file's hunks by hand and delete it), then "
            "`uv lock`, `make lint test check`, and commit.\n"
            "To abandon the update: git reset --hard && git clean -fd"
        )
    print(f"$ {uv} lock", flush=True)
    if subprocess.run([uv, "lock"], cwd=ROOT).returncode != 0:
        raise Refused(
            "uv lock failed: the merged pyproject.toml's requirements do not resolve (see above). Fix "
            "pyproject.toml, run `uv lock` and `make lint test check`, then commit."
        )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", required=True, help="the uv executable")
    parser.add_argument("--copier", required=True, help="command that runs copier (split like a shell)")
    parser.add_argument(
        "--vcs-ref", default="", help="template branch, tag or commit (default: copier's choice)"
    )
    parser.add_argument("--make", default="make", help="make, to run lint, test and check")
    args = parser.parse_args(argv)
    copier = [
        *shlex.split(args.copier),
        "update",
        "--defaults",
        "--trust",
        "--conflict",
        "inline",
        "--skip-tasks",
    ]
    if args.vcs_ref:
        copier += ["--vcs-ref", args.vcs_ref]
    try:
        if not update(copier, args.uv):
            return 0
    except Refused as refused:
        print(f"make update-template: {refused}", file=sys.stderr)
        return 1
    print("Template update merged and uv.lock regenerated; running lint, test and check.", flush=True)
    if subprocess.run(
        [*shlex.split(args.make), "--no-print-directory", "lint", "test", "check"], cwd=ROOT
    ).returncode:
        print("make update-template: lint, test or check failed on the update (see above).", file=sys.stderr)
        return 1
    print("Template update done and checked: review `git diff`, then commit it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
