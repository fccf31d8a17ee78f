"""`make new-usercode`: copier asks only what a data engineer knows (each answer checked by its validator in
copier.yml and asked again at once when refused) and creates the repo; platform facts are passed as data, never
asked. Also the `dagster-platform template` subcommands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

from dagster_platform.paths import ROOT
from dagster_platform.platform_config import PlatformConfigError
from dagster_platform.template.render import copy, platform_context, questions, relock


class Refused(Exception):
    """A refusal: printed as one block, exit status 1, nothing written."""


def asked() -> list[str]:
    """The questions copier asks (those not `when: false`), in copier.yml's order."""
    return [key for key, question in questions().items() if question.get("when", True) is not False]


def parse_context(text: str) -> dict[str, str]:
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise Refused(
            f'ERROR: CONTEXT is not JSON ({exc.msg}); example: CONTEXT=\'{{"project_name": "Sales"}}\''
        ) from None
    if not isinstance(given, dict):
        raise Refused('ERROR: CONTEXT must be a JSON object; example: CONTEXT=\'{"project_name": "Sales"}\'')
    keys = asked()
    lines = [
        f"ERROR: {key!r} is a platform setting, not an answer (platform/company.yaml, platform/values/)"
        if key in questions() or key.startswith("_")
        else f"ERROR: {key!r} is not a question of the template; the questions: {', '.join(keys)}"
        for key in sorted(set(given) - set(keys))
    ]
    if lines:
        raise Refused("\n".join([*lines, "Nothing was generated."]))
    return {key: str(value) for key, value in given.items()}


def next_steps(repo: Path, answers: dict[str, object]) -> str:
    platform = answers["platform"]
    location, port = answers["location_name"], platform["grpc_port"]
    try:
        shown = repo.relative_to(Path.cwd())
    except ValueError:
        shown = repo
    return "\n".join(
        [
            f"Created {repo}",
            f"  code location {location}, package {answers['package_name']}, owned by {answers['owner_team']}",
            "",
            "Next steps:",
            f"  cd {shown}",
            "  make dev      # Dagster UI on http://127.0.0.1:3000 with this location",
            "  make test     # the tests CI runs (also: make lint, make check, make fmt)",
            f"  git init -b main && git add -A && git commit -m 'New code location {location}'",
            "  git remote add origin <URL of its new GitLab project> && git push -u origin main",
            "",
            "Register it with the platform before its first merge to main (the deploy job waits for the location",
            "to be LOADED in the webserver, which serves only registered locations): a merge request to the",
            "platform repository adding this entry to platform/code-locations.yaml:",
            f"  - name: {location}",
            f"    team: {answers['owner_team']}",
            f"    port: {port}",
            f"    module: {answers['package_name']}.definitions",
            f"The port is the one the repo's code server serves ({port}, deploy/values-*.yaml); make platform-check",
            "refuses any other.",
        ]
    )


def create(output_dir: Path, answers: dict[str, object], template_url: str, checkout: str | None, ask: bool) -> Path:
    """copier copy (records the template's source and commit in .copier-answers.yml for `copier update`)."""
    from copier.errors import CopierError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # copier's DirtyLocalWarning: said in one line by dirty_source()
            return copy(output_dir, answers, src=template_url, ref=checkout, defaults=not ask)
    except KeyboardInterrupt:  # copier's CopierAnswersInterrupt is a CopierError too: Ctrl-C is not a refusal
        raise
    except (ValueError, FileExistsError, CopierError) as exc:
        message = re.sub(r"^Validation error for question '\w+': ", "", str(exc))  # the validator names it
        raise Refused(f"ERROR: {message}. Nothing was generated.") from None
    except Exception as exc:  # anything else in one line
        raise Refused(f"ERROR: {type(exc).__name__}: {exc}. Nothing was generated.") from None


def dirty_source(template_url: str) -> str | None:
    """A warning when the template is a local checkout with uncommitted changes: copier includes them and records
    a commit that exists only in its own temporary copy, so the new repo's `make update-template` cannot find it."""
    source = Path(template_url)
    if not source.is_dir():
        return None
    status = subprocess.run(["git", "-C", str(source), "status", "--porcelain"], capture_output=True, text=True)
    if status.returncode != 0 or not status.stdout.strip():
        return None
    return (
        f"WARNING: {source} has uncommitted changes: they are included, and the repo records a template commit "
        "that exists nowhere else, so its `make update-template` will refuse. Commit them and generate again, or "
        "set TEMPLATE_URL to the platform's Git URL."
    )


def _new_command(args) -> int:
    try:
        platform = platform_context()
    except PlatformConfigError as exc:
        print(f"new-usercode: {exc}", file=sys.stderr)
        return 2
    facts = platform["platform"]
    try:
        given = parse_context(args.context)  # a bad CONTEXT is refused before anything is asked
        if not args.no_input and not sys.stdin.isatty():
            raise Refused(
                "ERROR: no terminal to ask the questions on; give the answers instead: "
                'NO_INPUT=1 CONTEXT=\'{"project_name": ..., "owner_team": ..., "owner_email": ...}\'. '
                "Nothing was generated."
            )
        if not args.no_input:
            print(
                f"New Dagster code location in {Path(args.output_dir).resolve()}/<location name>. "
                f"{len(asked())} questions; Enter keeps the pre-filled answer (Ctrl-U clears it).\n"
                f"Platform settings (not asked): images {facts['image_registry']}/<location>, environments "
                + ", ".join(f"{env['name']} ({env['namespace']})" for env in facts["environments"])
                + f", gRPC port {facts['grpc_port']}, CI component"
                f" {facts['ci_project']}/usercode@{facts['ci_version']}."
            )
        if args.no_input:  # a question without default and no answer: its validator explains what it expects
            given = {**{key: "" for key in asked() if "default" not in questions()[key]}, **given}
        repo = create(
            Path(args.output_dir).resolve(), {**given, **platform}, args.template_url, args.checkout, not args.no_input
        )
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted. Nothing was generated.", file=sys.stderr)
        return 130
    import yaml

    answers = {**yaml.safe_load((repo / ".copier-answers.yml").read_text()), **platform}
    print(next_steps(repo, answers))
    if warning := dirty_source(args.template_url):
        print(warning, file=sys.stderr)
    return 0


def _relock_command(args) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(f"wrote {relock(Path(tmp))}")
    return 0


def _from_cruft_command(args) -> int:
    from dagster_platform.template.from_cruft import main

    return main(args)


def register(subparsers) -> None:
    template = subparsers.add_parser("template", help="user-code template helpers")
    actions = template.add_subparsers(dest="action", required=True)
    lock = actions.add_parser("lock", help="regenerate the template's uv.lock from its pyproject.toml")
    lock.set_defaults(func=_relock_command)
    new = actions.add_parser("new", help="a new user-code repository from the template, via copier (make new-usercode)")
    new.add_argument("--output-dir", default="..", help="directory the repository is created in")
    new.add_argument("--template-url", default=str(ROOT), help="the platform repository's Git URL or path")
    new.add_argument("--checkout", default="HEAD", help="template ref (branch, tag or commit)")
    new.add_argument("--no-input", action="store_true", help="ask nothing: --context and the defaults")
    new.add_argument("--context", default="", help='answers as JSON, e.g. \'{"project_name": "Sales"}\'')
    new.set_defaults(func=_new_command)
    move = actions.add_parser("from-cruft", help="move a repo generated with cruft to copier (make usercode-to-copier)")
    move.add_argument("repo", help="the user-code repository (a clean git work tree with .cruft.json)")
    move.add_argument("--template-url", default=None, help="the template's Git URL (default: .cruft.json's)")
    move.add_argument("--checkout", default=None, help="template ref (default: copier's: the latest tag or HEAD)")
    move.set_defaults(func=_from_cruft_command)
