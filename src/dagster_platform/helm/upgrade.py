"""The guarded upgrade: which kube context and namespace may be touched, and the commands of
`make platform-upgrade` (helm upgrade --atomic, then Dagster's instance migration on a minor upgrade)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.separation import other_env_files

# Timeout of `helm upgrade --wait` and of the migration Job.
UPGRADE_TIMEOUT = "15m"


class GuardError(Exception):
    """The kube context or namespace does not belong to the environment."""


def kubeconfig_context(kubeconfig: str | None = None) -> tuple[str | None, str | None]:
    """(current context, its namespace) from the kubeconfig kubectl/helm would use."""
    files = (kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")).split(os.pathsep)
    current, contexts = None, {}
    for path in map(Path, files):
        data = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
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
    environment = helm_values.environment_values(env)["environment"]
    want_ctx, want_ns = environment["kubeContext"], environment["namespace"]
    current, ctx_ns = kubeconfig_context(kubeconfig)
    if current is None:
        raise GuardError(f"no current kube context; refusing to touch {env} (expected context {want_ctx!r})")
    for other, values in other_env_files(env).items():
        if current == values["environment"]["kubeContext"]:
            raise GuardError(f"the current kube context {current!r} is {other}'s; refusing to use it for {env}")
        if (namespace or ctx_ns) == values["environment"]["namespace"]:
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


def needs_migration(deployed_app_version: str | None, new_version: str) -> bool:
    """Dagster requires `dagster instance migrate` when the minor version changes (docs)."""

    def minor(version: str | None) -> tuple[int, ...] | None:
        try:
            return tuple(int(p) for p in version.split(".")[:2]) if version else None
        except ValueError:
            return None

    deployed, new = minor(deployed_app_version), minor(new_version)
    return deployed is not None and new is not None and deployed != new


def upgrade_plan(env: str, *, context: str, namespace: str, value_files: list[Path], migrate: bool) -> list[list[str]]:
    """The commands `make platform-upgrade` runs, in order."""
    release, chart = helm_values.RELEASE_NAME, str(helm_values.CHART_DIR)
    target = ["--kube-context", context, "--namespace", namespace]
    files = [arg for f in value_files for arg in ("--values", str(f))]
    plan = [["helm", "upgrade", "--install", release, chart, *target, *files, "--atomic", "--wait"]]
    plan[0] += ["--timeout", UPGRADE_TIMEOUT]
    if not migrate:
        return plan
    replicas = helm_values.environment_values(env)["dagster"]["dagsterWebserver"].get("replicaCount", 1)
    kube = ["kubectl", "--context", context, "--namespace", namespace]
    scale = [*kube, "scale", "deployment"]
    instance = f"app.kubernetes.io/instance={release}"
    webservers = "dagster-webserver,dagster-webserver-read-only"
    job = f"{release}-dagster-webserver-instance-migrate"
    render_job = ["helm", "template", release, chart, *target, *files, "--set", "dagster.migrate.enabled=true"]
    render_job += ["--show-only", "charts/dagster/templates/job-instance-migrate.yaml"]
    return plan + [
        # 1. No run may write to the database while it migrates.
        [*scale, "--replicas=0", "-l", f"{instance},component in ({webservers},dagster-daemon)"],
        # 2. The official chart's migration Job (dagster instance migrate), from the new chart.
        ["sh", "-c", shlex.join(render_job) + " | " + shlex.join([*kube, "apply", "-f", "-"])],
        [*kube, "wait", "--for=condition=complete", f"job/{job}", f"--timeout={UPGRADE_TIMEOUT}"],
        [*kube, "delete", "job", job],
        # 3. Back to the replicas the values ask for.
        [*scale, f"--replicas={replicas}", "-l", f"{instance},component in ({webservers})"],
        [*scale, "--replicas=1", "-l", f"{instance},component=dagster-daemon"],
        [*kube, "rollout", "status", "deployment", "-l", instance, f"--timeout={UPGRADE_TIMEOUT}"],
    ]


def deployed_app_version(context: str, namespace: str) -> str | None:
    command = ["helm", "list", "--kube-context", context, "--namespace", namespace, "--output", "json"]
    command += ["--filter", f"^{helm_values.RELEASE_NAME}$"]
    releases = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout or "[]")
    return releases[0].get("app_version") if releases else None
