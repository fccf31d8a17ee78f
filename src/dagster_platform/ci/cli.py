"""CLI for the CI/CD tooling: check the pipelines, run a job here, and the guards the pipelines call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dagster_platform.ci import scan_gate, smoke, version_guard
from dagster_platform.paths import ROOT


def _pipeline(repo: Path | None):
    """(kind, pipeline, files to schema-check): the platform's own (and its user-code component), or a user-code
    repo's."""
    from dagster_platform.ci.config import load_pipeline, platform_projects

    if repo is None:
        from dagster_platform.generate import COMPONENT

        files = [ROOT / ".gitlab-ci.yml", COMPONENT]
        return "platform", load_pipeline(files[0]), files
    pipeline = load_pipeline(repo / ".gitlab-ci.yml", projects=platform_projects(), repo_root=repo)
    return "usercode", pipeline, [repo / ".gitlab-ci.yml"]


def check_command(args: argparse.Namespace) -> int:
    from dagster_platform.ci.config import schema_check
    from dagster_platform.ci.policy import check, shellcheck
    from dagster_platform.generate import drift

    kind, pipeline, files = _pipeline(args.repo)
    ok, output = schema_check(files)
    problems = [] if ok else [f"GitLab CI schema: {output}"]
    problems += drift()  # the per-environment jobs come from the platform's files: stale copies first
    problems += [f"{kind}: {p}" for p in check(pipeline, kind)]
    problems += [f"{kind}: shellcheck: {p}" for p in shellcheck(pipeline)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"ci-check: OK: {', '.join(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f) for f in files)}")
    return 0


def run_job_command(args: argparse.Namespace) -> int:
    from dagster_platform.ci.runner import run_job

    _, pipeline, _ = _pipeline(args.repo)
    variables = dict(v.split("=", 1) for v in args.var)
    context = {"pipeline_source": args.source, "branch": args.branch}
    try:
        result = run_job(pipeline, args.job, args.repo or ROOT, overrides=variables, **context)
    except RuntimeError as exc:
        print(f"ci-run-job: {exc}", file=sys.stderr)
        return 1
    print(result.output)
    if result.missing_artifacts:
        print(f"ci-run-job: declared artifacts missing: {result.missing_artifacts}", file=sys.stderr)
    print(f"ci-run-job: {args.job}: {'OK' if result.ok else 'FAILED'}", file=sys.stderr)
    return 0 if result.ok else 1


def register(subparsers) -> None:
    for tool in (version_guard, smoke, scan_gate):
        name = tool.__name__.rsplit(".", 1)[1].replace("_", "-")
        parser = subparsers.add_parser(name, help=tool.__doc__.splitlines()[0], description=tool.__doc__)
        tool.add_arguments(parser)
        parser.set_defaults(func=tool.run)

    parser = subparsers.add_parser("ci-check", help="GitLab CI files: GitLab schema (offline), our rules, shellcheck")
    parser.add_argument("--repo", type=Path, help="a user-code repo (default: the platform repo's own CI files)")
    parser.set_defaults(func=check_command)

    parser = subparsers.add_parser("ci-run-job", help="run one CI job here with gitlab-ci-local's shell executor")
    parser.add_argument("job")
    parser.add_argument("--repo", type=Path, help="a user-code repo (default: the platform repo)")
    parser.add_argument("--source", default="merge_request_event", help="CI_PIPELINE_SOURCE (default: MR)")
    parser.add_argument("--branch", default="feature", help="branch of the pipeline (default: feature)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="project-level variable")
    parser.set_defaults(func=run_job_command)
