"""`dagster-platform platform ...`: values, render, check, diff and upgrade of one environment.

The Makefile's platform-* targets and CI call these; tests call the same functions.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import paths
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.checks import check_environment, official_chart_present, render_environment
from dagster_platform.helm.engine import HelmEngine, HelmEngineError, strip_source

# Timeout of `helm upgrade --wait` and of the migration Job.
UPGRADE_TIMEOUT = "15m"


class GuardError(Exception):
    """The kube context or namespace does not belong to the environment."""


def manifests_text(objects: list[dict[str, Any]]) -> str:
    docs = []
    for obj in objects:
        docs.append(f"# Source: {obj.get('__source__')}\n" + yaml.safe_dump(strip_source(obj), sort_keys=True))
    return "---\n".join(docs)


# ---------------------------------------------------------------------------------------------
# kube context / namespace guard
# ---------------------------------------------------------------------------------------------
def kubeconfig_context(kubeconfig: str | None = None) -> tuple[str | None, str | None]:
    """(current context, its namespace) from the kubeconfig kubectl/helm would use."""
    files = (kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")).split(os.pathsep)
    current, contexts = None, {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            continue
        data = yaml.safe_load(path.read_text()) or {}
        current = current or data.get("current-context")
        for ctx in data.get("contexts") or []:
            contexts.setdefault(ctx.get("name"), (ctx.get("context") or {}).get("namespace"))
    return current, contexts.get(current)


def guard(
    env: str, *, namespace: str | None = None, kubeconfig: str | None = None, read_only: bool = False
) -> tuple[str, str]:
    """(kube context, namespace) to use for `env`, or GuardError when they belong elsewhere.

    read_only (diff): any context except another environment's is accepted (CI diffs through
    read-only agent contexts); writes (upgrade) need exactly `environment.kubeContext`.
    """
    values = helm_values.environment_values(env)
    want_ctx = values["environment"]["kubeContext"]
    want_ns = values["environment"]["namespace"]
    current, ctx_ns = kubeconfig_context(kubeconfig)
    if current is None:
        raise GuardError(f"no current kube context; refusing to touch {env} (expected context {want_ctx!r})")
    others = {
        other: helm_values.load_yaml(helm_values.VALUES_DIR / f"{other}.yaml")["environment"]
        for other in helm_values.ENVIRONMENTS
        if other != env
    }
    for other, identity in others.items():
        if current == identity["kubeContext"]:
            raise GuardError(f"the current kube context {current!r} is {other}'s; refusing to use it for {env}")
        if (namespace or ctx_ns) == identity["namespace"]:
            raise GuardError(f"namespace {namespace or ctx_ns!r} is {other}'s; refusing to use it for {env}")
    if current != want_ctx and not read_only:
        raise GuardError(
            f"the current kube context is {current!r}, but {env} lives in {want_ctx!r}; refusing "
            f"(switch with `kubectl config use-context {want_ctx}`)"
        )
    namespace = namespace or ctx_ns or want_ns
    if namespace != want_ns:
        raise GuardError(f"namespace {namespace!r} is not {env}'s namespace {want_ns!r}; refusing")
    return current, namespace


# ---------------------------------------------------------------------------------------------
# upgrade plan
# ---------------------------------------------------------------------------------------------
def _minor(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = version.split(".")
    try:
        return tuple(int(p) for p in parts[:2])
    except ValueError:
        return None


def needs_migration(deployed_app_version: str | None, new_version: str) -> bool:
    """Dagster requires `dagster instance migrate` when the minor version changes (docs)."""
    deployed, new = _minor(deployed_app_version), _minor(new_version)
    return deployed is not None and new is not None and deployed != new


def upgrade_plan(
    env: str, *, context: str, namespace: str, value_files: list[Path], migrate: bool, helm: str = "helm"
) -> list[list[str]]:
    """The commands `make platform-upgrade` runs, in order."""
    release = helm_values.RELEASE_NAME
    chart = str(helm_values.CHART_DIR)
    target = ["--kube-context", context, "--namespace", namespace]
    files = [arg for f in value_files for arg in ("--values", str(f))]
    upgrade = [helm, "upgrade", "--install", release, chart, *target, *files]
    upgrade += ["--atomic", "--wait", "--timeout", UPGRADE_TIMEOUT]
    plan = [upgrade]
    if migrate:
        values = helm_values.environment_values(env)
        kube = ["kubectl", "--context", context, "--namespace", namespace]
        components = "dagster-webserver,dagster-webserver-read-only,dagster-daemon"
        selector = f"app.kubernetes.io/instance={release},component in ({components})"
        job = f"{release}-dagster-webserver-instance-migrate"
        plan += [
            # 1. No run may write to the database while it migrates.
            [*kube, "scale", "deployment", "--replicas=0", "-l", selector],
            # 2. The official chart's migration Job (dagster instance migrate), from the new chart.
            [
                "sh",
                "-c",
                shlex.join(
                    [helm, "template", release, chart, *target, *files]
                    + ["--set", "dagster.migrate.enabled=true"]
                    + ["--show-only", "charts/dagster/templates/job-instance-migrate.yaml"]
                )
                + " | "
                + shlex.join([*kube, "apply", "-f", "-"]),
            ],
            [*kube, "wait", "--for=condition=complete", f"job/{job}", f"--timeout={UPGRADE_TIMEOUT}"],
            [*kube, "delete", "job", job],
            # 3. Back to the replicas the values ask for.
            [
                *kube,
                "scale",
                "deployment",
                f"--replicas={values['dagster']['dagsterWebserver'].get('replicaCount', 1)}",
                "-l",
                f"app.kubernetes.io/instance={release},component in (dagster-webserver,dagster-webserver-read-only)",
            ],
            [
                *kube,
                "scale",
                "deployment",
                "--replicas=1",
                "-l",
                f"app.kubernetes.io/instance={release},component=dagster-daemon",
            ],
            [
                *kube,
                "rollout",
                "status",
                "deployment",
                "-l",
                f"app.kubernetes.io/instance={release}",
                f"--timeout={UPGRADE_TIMEOUT}",
            ],
        ]
    return plan


def deployed_app_version(context: str, namespace: str) -> str | None:
    out = subprocess.run(
        ["helm", "list", "--kube-context", context, "--namespace", namespace, "--output", "json"]
        + ["--filter", f"^{helm_values.RELEASE_NAME}$"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    releases = json.loads(out or "[]")
    return releases[0].get("app_version") if releases else None


# ---------------------------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------------------------
def _envs(arg: str) -> list[str]:
    return list(helm_values.ENVIRONMENTS) if arg == "all" else [arg]


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
    try:
        instance = helm_instance.derive_instance(args.env)
    except helm_instance.InstanceTranslationError as exc:
        print(f"platform instance: {args.env}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(helm_instance.instance_yaml(instance, INSTANCE_HEADER.format(env=args.env)))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    try:
        objects = render_environment(args.env, full=args.full)
    except HelmEngineError as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 1
    text = manifests_text(objects)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"{len(objects)} objects -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    engine = HelmEngine()
    failed = False
    for env in _envs(args.env):
        problems = check_environment(env, full=args.full, engine=engine)
        scope = "full render (official chart + platform templates)" if args.full else "platform templates"
        if problems:
            failed = True
            print(f"{env}: {len(problems)} problem(s) [{engine.name}, {scope}]", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"{env}: ok [{engine.name}, {scope}]")
    return 1 if failed else 0


def cmd_deps(args: argparse.Namespace) -> int:
    engine = HelmEngine()
    try:
        engine.dependency_build(helm_values.CHART_DIR)
    except (HelmEngineError, subprocess.CalledProcessError) as exc:
        print(f"helm dependency build failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(engine.dependency_status(helm_values.CHART_DIR)))
    return 0


def _guarded(args: argparse.Namespace) -> tuple[str, str] | None:
    try:
        return guard(args.env, namespace=args.namespace, kubeconfig=args.kubeconfig, read_only=args.read_only)
    except GuardError as exc:
        print(f"refusing: {exc}", file=sys.stderr)
        return None


def cmd_diff(args: argparse.Namespace) -> int:
    args.read_only = True
    target = _guarded(args)
    if target is None:
        return 2
    context, namespace = target
    files = helm_values.write_generated(args.env)
    helm = shutil.which("helm")
    if helm is None:
        print("helm-diff needs the helm binary (and the cluster); not found on PATH", file=sys.stderr)
        return 1
    plugins = subprocess.run([helm, "plugin", "list"], capture_output=True, text=True, check=False).stdout
    values_args = [arg for f in files for arg in ("--values", str(f))]
    target_args = ["--kube-context", context, "--namespace", namespace]
    if any(line.split()[:1] == ["diff"] for line in plugins.splitlines()):
        cmd = [helm, "diff", "upgrade", helm_values.RELEASE_NAME, str(helm_values.CHART_DIR)]
        return subprocess.run(cmd + target_args + values_args + ["--allow-unreleased"], check=False).returncode
    # No helm-diff: rendered manifests against the last release's manifests.
    last = subprocess.run(
        [helm, "get", "manifest", helm_values.RELEASE_NAME, *target_args], capture_output=True, text=True, check=False
    ).stdout
    new = subprocess.run(
        [helm, "template", helm_values.RELEASE_NAME, str(helm_values.CHART_DIR), *target_args, *values_args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sys.stdout.writelines(
        difflib.unified_diff(
            last.splitlines(keepends=True), new.splitlines(keepends=True), "last release", "this checkout"
        )
    )
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    args.read_only = False
    target = _guarded(args)
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
    files = helm_values.write_generated(args.env)
    new_version = paths.dagster_version()
    if args.migrate == "auto":
        deployed = None if args.dry_run else deployed_app_version(context, namespace)
        migrate = needs_migration(deployed, new_version)
    else:
        migrate = args.migrate == "always"
    plan = upgrade_plan(args.env, context=context, namespace=namespace, value_files=files, migrate=migrate)
    for cmd in plan:
        print("+ " + " ".join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
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


def register(subparsers: argparse._SubParsersAction) -> None:
    platform = subparsers.add_parser("platform", help="Helm values, render, checks, diff and upgrade per environment")
    sub = platform.add_subparsers(dest="platform_command", required=True)
    env_choices = [*helm_values.ENVIRONMENTS]

    p = sub.add_parser("values", help="write the generated values layer; print the -f arguments")
    p.add_argument("--env", required=True, choices=[*env_choices, "all"])
    p.add_argument("--out", help=f"directory (default {helm_values.GENERATED_DIR})")
    p.set_defaults(func=cmd_values)

    p = sub.add_parser("instance", help="print the dagster.yaml the cluster's processes of one environment read")
    p.add_argument("--env", required=True, choices=env_choices)
    p.set_defaults(func=cmd_instance)

    p = sub.add_parser("render", help="render the manifests of one environment")
    p.add_argument("--env", required=True, choices=env_choices)
    p.add_argument("--full", action="store_true", help="require the official chart (after `platform deps`)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("check", help="all guardrail policies, Kubernetes schemas and helm lint")
    p.add_argument("--env", required=True, choices=[*env_choices, "all"])
    p.add_argument("--full", action="store_true", help="with the official chart (CI)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("deps", help="helm dependency build (fetch the official chart pinned in Chart.lock)")
    p.set_defaults(func=cmd_deps)

    for name, func, text in (
        ("diff", cmd_diff, "helm-diff (or rendered diff) against the deployed release"),
        ("upgrade", cmd_upgrade, "guarded helm upgrade --install --atomic --wait, with instance migration"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--env", required=True, choices=env_choices)
        p.add_argument("--namespace", help="defaults to the context's namespace, else the environment's")
        p.add_argument("--kubeconfig", help="defaults to $KUBECONFIG, else ~/.kube/config")
        if name == "upgrade":
            p.add_argument("--dry-run", action="store_true", help="print the commands only")
            p.add_argument(
                "--migrate",
                choices=["auto", "always", "never"],
                default="auto",
                help="auto: migrate when the deployed Dagster minor version differs",
            )
        p.set_defaults(func=func)

    p = sub.add_parser("postgres-setup", help="print the psql commands for platform/postgres/*.sql")
    p.add_argument("--env", required=True, choices=env_choices)
    p.set_defaults(func=cmd_postgres_setup)
