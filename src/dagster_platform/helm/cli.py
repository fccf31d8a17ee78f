"""`dagster-platform platform ...`: values, render, check, diff and upgrade of one environment.

The Makefile's platform-* targets and CI call these; tests call the same functions.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from dagster_platform import paths, platform_config
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import upgrade
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.checks import check_environment, official_chart_present, render_environment
from dagster_platform.helm.engine import HelmEngine, HelmEngineError, strip_source
from dagster_platform.helm.upgrade import GuardError, guard


def _envs(arg: str) -> list[str]:
    """Every declared environment (promotion order) for `all`, else the one named (refused when undeclared)."""
    if arg == "all":
        return platform_config.environment_names()
    return [platform_config.environment(arg).name]


def cmd_values(args: argparse.Namespace) -> int:
    for env in _envs(args.env):
        files = helm_values.write_generated(env, Path(args.out) if args.out else None)
        print(" ".join(f"--values {f}" for f in files))
    return 0


INSTANCE_HEADER = (
    "# dagster.yaml of {env}: what the official chart writes into the instance ConfigMap for these values,\n"
    "# derived from platform/instance/instance.yaml + platform/values/{{base,{env}}}.yaml. Do not edit; the\n"
    "# local stack and `make dev` run this file with the substitutions listed in docs/stack.md.\n"
)


def cmd_instance(args: argparse.Namespace) -> int:
    instance = helm_instance.derive_instance(args.env)
    sys.stdout.write(helm_instance.instance_yaml(instance, INSTANCE_HEADER.format(env=args.env)))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    objects = render_environment(args.env, full=args.full)
    text = "---\n".join(
        f"# Source: {obj.get('__source__')}\n" + yaml.safe_dump(strip_source(obj), sort_keys=True) for obj in objects
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"{len(objects)} objects -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    engine = HelmEngine()
    scope = "full render (official chart + platform templates)" if args.full else "platform templates"
    failed = False
    for env in _envs(args.env):
        problems = check_environment(env, full=args.full, engine=engine)
        failed = failed or bool(problems)
        if problems:
            print(f"{env}: {len(problems)} problem(s) [{engine.name}, {scope}]", file=sys.stderr)
            print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        else:
            print(f"{env}: ok [{engine.name}, {scope}]")
    return 1 if failed else 0


def cmd_deps(args: argparse.Namespace) -> int:
    engine = HelmEngine()
    engine.dependency_build(helm_values.CHART_DIR)
    print(json.dumps(engine.dependency_status(helm_values.CHART_DIR)))
    return 0


def _guarded(args: argparse.Namespace, *, read_only: bool) -> tuple[str, str] | None:
    try:
        return guard(args.env, namespace=args.namespace, kubeconfig=args.kubeconfig, read_only=read_only)
    except GuardError as exc:
        print(f"refusing: {exc}", file=sys.stderr)
        return None


def cmd_diff(args: argparse.Namespace) -> int:
    target = _guarded(args, read_only=True)
    if target is None:
        return 2
    context, namespace = target
    files = helm_values.write_generated(args.env)
    helm = shutil.which("helm")
    if helm is None:
        print("helm-diff needs the helm binary (and the cluster); not found on PATH", file=sys.stderr)
        return 1
    release, chart = helm_values.RELEASE_NAME, str(helm_values.CHART_DIR)
    target = ["--kube-context", context, "--namespace", namespace, *(a for f in files for a in ("--values", str(f)))]
    plugins = subprocess.run([helm, "plugin", "list"], capture_output=True, text=True).stdout
    if any(line.split()[:1] == ["diff"] for line in plugins.splitlines()):
        return subprocess.run([helm, "diff", "upgrade", release, chart, *target, "--allow-unreleased"]).returncode
    # No helm-diff: rendered manifests against the last release's manifests (`get` takes no --values).
    last = subprocess.run([helm, "get", "manifest", release, *target[:4]], capture_output=True, text=True).stdout
    new = subprocess.run([helm, "template", release, chart, *target], capture_output=True, text=True, check=True)
    diff = difflib.unified_diff(last.splitlines(True), new.stdout.splitlines(True), "last release", "this checkout")
    sys.stdout.writelines(diff)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    target = _guarded(args, read_only=False)
    if target is None:
        return 2
    context, namespace = target
    full = not args.dry_run or official_chart_present()
    problems = check_environment(args.env, full=full)
    if not full:
        print("dry run without the official chart: checked the platform templates only", file=sys.stderr)
    if problems:
        print("refusing: the checks fail:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if not args.ops_image_tag and not args.dry_run:
        print(
            "refusing: no --ops-image-tag (OPS_IMAGE_TAG=...): the tag of the platform/ops image the platform "
            "pipeline built for this commit (CI: $CI_COMMIT_SHA); without it the ops location would not deploy",
            file=sys.stderr,
        )
        return 2
    files = helm_values.write_generated(args.env)
    new_version = paths.dagster_version()
    where = {"context": context, "namespace": namespace}
    name = upgrade.backup_name()
    manifest = helm_values.GENERATED_DIR / args.env / f"{name}.yaml"
    steps = upgrade.backup_steps(args.env, **where, name=name, manifest=manifest)
    print(f"backup Job {name} -> s3://{'/'.join(upgrade.backup_location(args.env, name)[:2])} ({manifest})")
    migrate = args.migrate == "always"
    if args.migrate == "auto" and not args.dry_run:
        try:
            migrate = upgrade.needs_migration(upgrade.deployed_app_version(context, namespace), new_version)
        except (OSError, subprocess.CalledProcessError, ValueError) as exc:
            print(f"platform upgrade: reading the deployed version (helm list) failed: {exc}", file=sys.stderr)
            return 1
    tag = args.ops_image_tag or ("<OPS_IMAGE_TAG>" if args.dry_run else "")
    plan = upgrade.upgrade_steps(args.env, **where, value_files=files, migrate=migrate, ops_image_tag=tag)
    if args.dry_run:
        if args.migrate == "auto":  # the deployed version is not read in a dry run: show both branches
            when = f"[only if the deployed Dagster minor differs from {'.'.join(new_version.split('.')[:2])}] "
            migration = upgrade.upgrade_steps(args.env, **where, value_files=files, migrate=True, ops_image_tag=tag)
            migration = migration[len(plan) :]
            plan += [(label, [when + cmd[0], *cmd[1:]]) for label, cmd in migration]
        for _, cmd in steps + plan:
            print("+ " + " ".join(cmd), flush=True)
        return 0
    return _run_upgrade(args.env, steps + plan, where, name)


def _run_upgrade(env: str, steps: list[upgrade.Step], where: dict[str, str], name: str) -> int:
    """Run the steps; when one fails, scale back up if scaled down and print one line: the step, the way back."""
    scaled_down = migrating = synced = False
    for label, cmd in steps:
        print("+ " + " ".join(cmd), flush=True)
        try:
            code = subprocess.run(cmd).returncode
            reason = f"exit {code}"
        except OSError as exc:
            code, reason = 127, f"{cmd[0]}: {exc.strerror}"
        scaled_down = scaled_down or label == upgrade.SCALED_DOWN
        migrating = migrating or label == upgrade.MIGRATION
        if code == 0:
            scaled_down = scaled_down and label != upgrade.SCALED_UP
            synced = synced or label == upgrade.SYNC
            continue
        restored = ""
        if scaled_down:
            back = [subprocess.run(c).returncode == 0 for _, c in upgrade.scale_up_steps(env, **where)]
            restored = "; webservers and daemon scaled back up" if all(back) else "; SCALING BACK UP FAILED too"
        if label in upgrade.BACKUP_STEPS:
            way_back = f"nothing was changed; see `kubectl logs job/{name}`"
        elif label == upgrade.SYNC:
            way_back = "the release and the workspace ConfigMap are unchanged (the line above says why)"
        else:
            way_back = upgrade.recovery(env, **where, name=name, migrated=migrating, synced=synced)
        print(f"platform upgrade: step '{label}' failed ({reason}){restored}; {way_back}", file=sys.stderr)
        return 1
    return 0


def cmd_postgres_setup(args: argparse.Namespace) -> int:
    """The psql command that applies platform/postgres/*.sql for `env` (variables from its values)."""
    values = helm_values.environment_values(args.env)
    pg = values["dagster"]["postgresql"]
    variables = {
        "database": pg["postgresqlDatabase"],
        "app_user": pg["postgresqlUsername"],
        "owner_role": f"{pg['postgresqlDatabase']}_owner",
        "readonly_role": f"{pg['postgresqlDatabase']}_readonly",
    }
    for sql in sorted((paths.PLATFORM_DIR / "postgres").glob("*.sql")):
        cmd = ["psql", "-h", pg["postgresqlHost"], "-v", "ON_ERROR_STOP=1"]
        cmd += [arg for k, v in variables.items() for arg in ("-v", f"{k}={v}")]
        db = variables["database"] if sql.name.startswith("2") else "postgres"
        print(" ".join([*cmd, "-d", db, "-f", str(sql.relative_to(paths.ROOT))]))
    return 0


def _one_line(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A mistake in a platform file or a refusal by Helm ends the command in one line, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            if getattr(args, "env", "all") != "all":
                platform_config.environment(args.env)  # undeclared: refused before anything runs
            return func(args)
        except platform_config.PlatformConfigError as exc:  # a platform file or argument: fix it, nothing ran
            print(f"platform {args.platform_command}: {exc}", file=sys.stderr)
            return 2
        except HelmEngineError as exc:
            print(f"platform {args.platform_command}: {exc}", file=sys.stderr)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    platform = subparsers.add_parser("platform", help="Helm values, render, checks, diff and upgrade per environment")
    sub = platform.add_subparsers(dest="platform_command", required=True)
    # --env: a declared environment (platform/values/<env>.yaml), checked when the command runs so an undeclared
    # one is refused in the platform's one-line form; `all` where marked.
    one, all_ = "ENV", "ENV|all"
    commands = {  # name: (function, help, --env form)
        "values": (cmd_values, "write the generated values layer; print the -f arguments", all_),
        "instance": (cmd_instance, "print the dagster.yaml the cluster's processes of one environment read", one),
        "render": (cmd_render, "render the manifests of one environment", one),
        "check": (cmd_check, "all guardrail policies, Kubernetes schemas and helm lint", all_),
        "deps": (cmd_deps, "helm dependency build (fetch the official chart pinned in Chart.lock)", None),
        "diff": (cmd_diff, "helm-diff (or rendered diff) against the deployed release", one),
        "upgrade": (cmd_upgrade, "guarded backup, helm upgrade --atomic --wait and instance migration", one),
        "postgres-setup": (cmd_postgres_setup, "print the psql commands for platform/postgres/*.sql", one),
    }
    p = {}
    for name, (func, text, envs) in commands.items():
        p[name] = sub.add_parser(name, help=text)
        p[name].set_defaults(func=_one_line(func))
        if envs:
            p[name].add_argument("--env", required=True, metavar=envs)
    p["values"].add_argument("--out", help=f"directory (default {helm_values.GENERATED_DIR})")
    p["render"].add_argument("--full", action="store_true", help="require the official chart (after `platform deps`)")
    p["render"].add_argument("--out", help="write to this file instead of stdout")
    p["check"].add_argument("--full", action="store_true", help="with the official chart (CI)")
    for name in ("diff", "upgrade"):
        p[name].add_argument("--namespace", help="defaults to the context's namespace, else the environment's")
        p[name].add_argument("--kubeconfig", help="defaults to $KUBECONFIG, else ~/.kube/config")
    p["upgrade"].add_argument(
        "--dry-run", action="store_true", help="print every step (the migration marked conditional); call nothing"
    )
    p["upgrade"].add_argument(
        "--ops-image-tag", default="", help="tag of the platform/ops image this pipeline built (CI: the commit SHA)"
    )
    p["upgrade"].add_argument(
        "--migrate",
        choices=["auto", "always", "never"],
        default="auto",
        help="auto: migrate when the deployed Dagster minor version differs",
    )
