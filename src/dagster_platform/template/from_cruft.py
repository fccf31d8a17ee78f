"""`make usercode-to-copier REPO=<path>`: move a user-code repo generated with cruft to copier, once.

Reads `.cruft.json` (template, commit, the answers in context.cookiecutter), writes `.copier-answers.yml`
(`_src_path`, `_commit` and the answers copier asks), removes `.cruft.json`, then re-renders the repo with the
template's current version (`copier recopy`): copier cannot render the cookiecutter-era template at the old commit,
so there is no base for a 3-way merge this once. The result is left in the working tree (nothing staged): `git
diff` shows it, and where the repo had its own changes to template files they appear as removed lines, taken back
with `git checkout -p -- <file>`. From then on `make update-template` (copier update) merges 3-way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import yaml

from dagster_platform.paths import uv_executable
from dagster_platform.template.render import ANSWERS_FILE, platform_context

CRUFT_STATE = ".cruft.json"


class Refused(Exception):
    """One message, exit status 1."""


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode:
        raise Refused(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout


def copier_answers(cruft_state: dict, asked: list[str], src: str | None = None) -> dict[str, object]:
    """.copier-answers.yml's content for a repo cruft recorded as `cruft_state`."""
    context = cruft_state.get("context", {}).get("cookiecutter", {})
    missing = [key for key in ("template", "commit") if not cruft_state.get(key)]
    if missing:
        raise Refused(f"{CRUFT_STATE} records no {' or '.join(missing)}: it is not cruft's state file")
    return {
        "_commit": cruft_state["commit"],
        "_src_path": src or cruft_state["template"],
        **{key: context[key] for key in asked if key in context},
    }


def migrate(repo: Path, src: str | None = None, ref: str | None = None) -> list[str]:
    """Move `repo` to copier; returns the files the re-render changed."""
    from copier import run_recopy

    from dagster_platform.template.new import asked

    state_file = repo / CRUFT_STATE
    if not state_file.is_file():
        raise Refused(f"{state_file} not found: {repo} was not generated with cruft (or is moved already)")
    if _git(repo, "status", "--porcelain"):
        raise Refused(f"{repo} has uncommitted changes: commit or stash them first")
    answers = copier_answers(json.loads(state_file.read_text()), asked(), src)
    (repo / ANSWERS_FILE).write_text(yaml.safe_dump(answers, sort_keys=True))
    state_file.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_recopy(
            str(repo),
            data=platform_context(),
            defaults=True,
            overwrite=True,
            unsafe=True,
            skip_tasks=True,
            quiet=True,
            vcs_ref=ref,
        )
    _git(repo, "reset", "-q")
    subprocess.run([uv_executable(), "lock", "--quiet"], cwd=repo, check=False)
    status = _git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    new = [line[3:] for line in status if line.startswith("??")]
    if new:
        _git(repo, "add", "--intent-to-add", "--", *new)  # new files too appear in plain `git diff`
    return sorted(line[3:] for line in status)


def main(args) -> int:
    repo = Path(args.repo).resolve()
    try:
        changed = migrate(repo, args.template_url, args.checkout)
    except Refused as exc:
        print(f"usercode-to-copier: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # copier's errors, in one line
        print(f"usercode-to-copier: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{repo} now takes template updates with copier ({ANSWERS_FILE}; {CRUFT_STATE} removed).")
    print("Re-rendered with the template's current version; files changed:")
    print("\n".join(f"  {path}" for path in changed))
    print(
        "Review `git diff`: your own changes to template files show as removed lines; take them back with\n"
        "`git checkout -p -- <file>`. Then `make lint test check`, commit; later updates: `make update-template`."
    )
    return 0
