"""`make new-usercode`: ask only what a data engineer knows, check each answer as it is given, create the repo
with cruft; and the `dagster-platform template` subcommands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from dagster_platform.paths import ROOT
from dagster_platform.platform_config import PlatformConfigError
from dagster_platform.template.render import (
    default_answers,
    platform_context,
    relock,
    validators,
)

QUESTIONS = {
    "project_name": "Project name, human-readable",
    "location_name": "Code location name, a Kubernetes name",
    "package_name": "Python package name",
    "owner_team": "Owning team (owner of every asset): its slug, as in its GitLab group or on-call rota; lowercase "
    "letters, digits, '-' or '_'",
    "owner_email": "Team e-mail for alerts",
    "description": "One-line description",
}


class Refused(Exception):
    """A refusal: printed as one block, exit status 1, nothing written."""


def derived_default(key: str, answers: dict[str, str]) -> str | None:
    """What cookiecutter.json would derive for `key` from the earlier answers."""
    if key == "location_name":
        return answers["project_name"].strip().lower().replace(" ", "-").replace("_", "-")
    if key == "package_name":
        return answers["location_name"].replace("-", "_")
    if key == "description":
        return f"Dagster code location {answers['location_name']}"
    return None


def ask(checks, given: dict[str, str], read=input, write=print) -> dict[str, str]:
    """One question at a time (those CONTEXT does not answer); a refused answer is explained in one line
    and asked again at once."""
    answers: dict[str, str] = {}
    for key, question in QUESTIONS.items():
        if key in given:
            answers[key] = given[key]
            continue
        default = derived_default(key, answers)
        # Without a default: the template's one example of the answer (the hook's EXAMPLES, which every refusal
        # of that answer names too); Enter then gives an empty answer, refused as required.
        hint = f" [{default}]" if default else f" (e.g. {checks.EXAMPLES[key]})"
        while True:
            try:
                value = read(f"{question}{hint}: ").strip()
            except EOFError:
                raise Refused("ERROR: no answer (end of input). Nothing was generated.") from None
            value = value or default or ""
            problem = checks.FIELDS[key](value)
            if problem is None:
                answers[key] = value
                break
            write(f"  ! {problem}")
    return answers


def complete_answers(given: dict[str, str], platform: dict[str, object]) -> dict[str, object]:
    """The full context cookiecutter will see: given answers, derived defaults, the platform's settings."""
    answers = dict(given)
    for key in QUESTIONS:
        if key not in answers:
            default = derived_default(key, answers)
            answers[key] = default if default is not None else default_answers()[key]
    answers.setdefault("project_slug", answers["location_name"])
    return {**answers, **platform}


def parse_context(text: str) -> dict[str, str]:
    try:
        given = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise Refused(
            f'ERROR: CONTEXT is not JSON ({exc.msg}); example: CONTEXT=\'{{"project_name": "Sales"}}\''
        ) from None
    if not isinstance(given, dict):
        raise Refused('ERROR: CONTEXT must be a JSON object; example: CONTEXT=\'{"project_name": "Sales"}\'')
    unknown = sorted(set(given) - set(QUESTIONS) - {"project_slug"})
    lines = [
        f"ERROR: {key!r} is a platform setting, not an answer (platform/company.yaml, platform/values/)"
        if key.startswith("_")
        else f"ERROR: {key!r} is not a question of the template; the questions: {', '.join(QUESTIONS)}"
        for key in unknown
    ]
    if lines:
        raise Refused("\n".join([*lines, "Nothing was generated."]))
    return {key: str(value) for key, value in given.items()}


def next_steps(repo: Path, answers: dict[str, object]) -> str:
    platform = answers["_platform"]
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
            f"    image: {platform['image_registry']}/{location}",
            f"    port: {port}",
            f"    module: {answers['package_name']}.definitions",
            f"The port is the one the repo's code server serves ({port}, deploy/values-*.yaml); make platform-check",
            "refuses any other.",
        ]
    )


def create(output_dir: Path, answers: dict[str, object], template_url: str, checkout: str | None) -> Path:
    """cruft create (records the template for `cruft update`), with every temporary file removed after."""
    import shutil
    import tempfile

    from cruft import create as cruft_create

    target = output_dir / str(answers["location_name"])
    if target.exists():
        raise Refused(f"ERROR: {target} already exists; choose another location name or OUT. Nothing was generated.")
    output_dir.mkdir(parents=True, exist_ok=True)
    # cruft clones the template into a temporary directory and cookiecutter renders the hook, answers
    # included, into a temporary file it never deletes: both land in a private directory removed here.
    private = Path(tempfile.mkdtemp(prefix="new-usercode-"))
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(private), str(private)
    try:
        return Path(
            cruft_create(
                template_url,
                output_dir=output_dir,
                extra_context=answers,
                no_input=True,
                directory="usercode-template",
                checkout=checkout,
            )
        )
    except Exception as exc:  # the hook printed its refusal already; anything else in one line
        from cookiecutter.exceptions import FailedHookException

        if isinstance(exc, FailedHookException):
            raise Refused("Nothing was generated (the template refused the answers above).") from None
        raise Refused(f"ERROR: {type(exc).__name__}: {exc}. Nothing was generated.") from None
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        shutil.rmtree(private, ignore_errors=True)


def _new_command(args) -> int:
    checks = validators()
    try:
        platform = platform_context()
    except PlatformConfigError as exc:
        print(f"new-usercode: {exc}", file=sys.stderr)
        return 2
    # What the platform files declare but the template cannot render (e.g. an environment without
    # global.postgresqlSecretName): refused before a question is asked, one line each.
    unusable = checks.platform_problems(platform)
    if unusable:
        print("\n".join(f"new-usercode: {problem}" for problem in unusable), file=sys.stderr)
        return 2
    facts = platform["_platform"]
    try:
        if args.no_input:
            answers = complete_answers(parse_context(args.context), platform)
        else:
            given = parse_context(args.context)  # a bad CONTEXT is refused before anything is asked
            print(
                f"New Dagster code location in {Path(args.output_dir).resolve()}/<location name>. "
                f"{len(QUESTIONS)} questions; Enter takes the [default].\n"
                f"Platform settings (not asked): images {facts['image_registry']}/<location>, environments "
                + ", ".join(f"{env['name']} ({env['namespace']})" for env in facts["environments"])
                + f", gRPC port {facts['grpc_port']}, CI {facts['ci_project']}@{facts['ci_ref']}."
            )
            answers = complete_answers({**given, **ask(checks, given)}, platform)
        found = checks.problems(answers)
        if found:
            raise Refused(checks.refusal(found))
        repo = create(Path(args.output_dir).resolve(), answers, args.template_url, args.checkout)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted. Nothing was generated.", file=sys.stderr)
        return 130
    print(next_steps(repo, answers))
    return 0


def _relock_command(args) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(f"wrote {relock(Path(tmp))}")
    return 0


def register(subparsers) -> None:
    template = subparsers.add_parser("template", help="user-code template helpers")
    actions = template.add_subparsers(dest="action", required=True)
    lock = actions.add_parser("lock", help="regenerate the template's uv.lock from its pyproject.toml")
    lock.set_defaults(func=_relock_command)
    new = actions.add_parser("new", help="a new user-code repository from the template, via cruft (make new-usercode)")
    new.add_argument("--output-dir", default="..", help="directory the repository is created in")
    new.add_argument("--template-url", default=str(ROOT), help="the platform repository's Git URL or path")
    new.add_argument("--checkout", default=None, help="template ref (branch, tag or commit)")
    new.add_argument("--no-input", action="store_true", help="ask nothing: --context and the defaults")
    new.add_argument("--context", default="", help='answers as JSON, e.g. \'{"project_name": "Sales"}\'')
    new.set_defaults(func=_new_command)
