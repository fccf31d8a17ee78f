"""The guarded upgrade: which kube context and namespace may be touched, and the steps of
`make platform-upgrade`: a pg_dump backup Job to the object store, the registry written into the workspace
ConfigMap (previews kept), helm upgrade --atomic, then Dagster's instance migration on a minor upgrade; the
recovery steps printed when one of them fails."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.policies import OPS_DEPLOYMENT
from dagster_platform.helm.separation import other_env_files

# Timeout of `helm upgrade --wait` and of the backup and migration Jobs.
UPGRADE_TIMEOUT = "15m"
WAIT_TIMEOUT = f"--timeout={UPGRADE_TIMEOUT}"
WEBSERVER_COMPONENTS = "dagster-webserver,dagster-webserver-read-only"
WEBSERVERS = f"component in ({WEBSERVER_COMPONENTS})"


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


# A labelled command of the upgrade: (what it does, argv). The label names the step when it fails.
Step = tuple[str, list[str]]

SYNC = "write the registry into the workspace ConfigMap"
SCALED_DOWN = "scale the webservers and the daemon to 0"
SCALED_UP = "scale the daemon back up"
MIGRATION = "apply the migration Job"


def _kube(context: str, namespace: str) -> list[str]:
    return ["kubectl", "--context", context, "--namespace", namespace]


def scale_up_steps(env: str, context: str, namespace: str) -> list[Step]:
    """Back to the replicas the values ask for (also what a failed upgrade restores)."""
    replicas = helm_values.environment_values(env)["dagster"]["dagsterWebserver"].get("replicaCount", 1)
    scale = [*_kube(context, namespace), "scale", "deployment"]
    instance = f"app.kubernetes.io/instance={helm_values.RELEASE_NAME}"
    return [
        ("scale the webservers back up", [*scale, f"--replicas={replicas}", "-l", f"{instance},{WEBSERVERS}"]),
        (SCALED_UP, [*scale, "--replicas=1", "-l", f"{instance},component=dagster-daemon"]),
    ]


def sync_step(env: str, context: str, namespace: str) -> Step:
    """The registry part of the workspace ConfigMap replaced, the live previews kept: the same command (and the
    same read-modify-write at the read resourceVersion) the preview jobs run, so neither loses the other's
    change. Production: refused while a preview is in it. Before `helm upgrade`, so the webserver and daemon
    pods it rolls (registry hash annotation) start with the new workspace."""
    values = helm_values.environment_values(env)
    command = [sys.executable, "-m", "dagster_platform.ci.previews", "sync", "--env", env]
    command += ["--context", context, "--namespace", namespace]
    command += ["--registry-json", helm_values.registry_json(helm_values.load_code_locations())]
    limit = helm_values.get_path(values, "previews.maxPerLocation")
    return SYNC, command + (["--max-per-location", str(limit)] if limit else [])


def upgrade_steps(
    env: str, *, context: str, namespace: str, value_files: list[Path], migrate: bool, ops_image_tag: str = ""
) -> list[Step]:
    """The steps `make platform-upgrade` runs after the backup, in order: the workspace sync, helm upgrade, and
    the migration when `migrate`."""
    release, chart = helm_values.RELEASE_NAME, str(helm_values.CHART_DIR)
    target = ["--kube-context", context, "--namespace", namespace]
    files = [arg for f in value_files for arg in ("--values", str(f))]
    if ops_image_tag:  # the ops location's image, built by the same platform pipeline (platform/ops/)
        files += ["--set", f"{OPS_DEPLOYMENT}.image.tag={ops_image_tag}"]
    upgrade = ["helm", "upgrade", "--install", release, chart, *target, *files, "--atomic", "--wait"]
    steps = [sync_step(env, context, namespace), ("helm upgrade", [*upgrade, "--timeout", UPGRADE_TIMEOUT])]
    if not migrate:
        return steps
    kube = _kube(context, namespace)
    instance = f"app.kubernetes.io/instance={release}"
    all_core = f"{instance},component in ({WEBSERVER_COMPONENTS},dagster-daemon)"
    job = f"{release}-dagster-webserver-instance-migrate"
    render_job = ["helm", "template", release, chart, *target, *files, "--set", "dagster.migrate.enabled=true"]
    render_job += ["--show-only", "charts/dagster/templates/job-instance-migrate.yaml"]
    apply_job = shlex.join(render_job) + " | " + shlex.join([*kube, "apply", "-f", "-"])
    return steps + [
        # 1. No run may write to the database while it migrates.
        (SCALED_DOWN, [*kube, "scale", "deployment", "--replicas=0", "-l", all_core]),
        # 2. The official chart's migration Job (dagster instance migrate), from the new chart.
        (MIGRATION, ["sh", "-c", apply_job]),
        ("wait for the migration Job", [*kube, "wait", "--for=condition=complete", f"job/{job}", WAIT_TIMEOUT]),
        ("delete the migration Job", [*kube, "delete", "job", job]),
        # 3. Back to the replicas the values ask for.
        *scale_up_steps(env, context, namespace),
        ("wait for the rollout", [*kube, "rollout", "status", "deployment", "-l", instance, WAIT_TIMEOUT]),
    ]


# -- the backup: pg_dump (custom format) of the environment's database to its object store ----------
BACKUP_PREFIX = "backups"
BACKUP_DEADLINE_SECONDS = 1800
BACKUP_STEPS = ("apply the backup Job", "wait for the backup Job")
# pg_dump's and pg_restore's flags, shared by the backup Job, the recovery line and the local restore drill
# (local/upgrade_drill.py, `make upgrade-drill`), so the drill proves the commands the cluster path runs.
PG_DUMP_FLAGS = ("--format=custom", "--no-owner")
PG_RESTORE_FLAGS = ("--clean", "--if-exists", "--no-owner")


def backup_name(now: datetime | None = None) -> str:
    return "dagster-backup-" + (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def backup_location(env: str, name: str) -> tuple[str, str, str]:
    """(bucket, key, endpoint URL) of the dump: the environment's compute-log bucket, under backups/."""
    s3 = helm_values.environment_values(env)["dagster"]["computeLogManager"]["config"]["s3ComputeLogManager"]
    return s3["bucket"], f"{BACKUP_PREFIX}/{env}/{name}.dump", s3.get("endpointUrl", "")


UPLOAD = (
    "import os, boto3; "
    "boto3.client('s3', endpoint_url=os.environ['ENDPOINT'] or None)"
    ".upload_file('/dump/db.dump', os.environ['BUCKET'], os.environ['KEY']); "
    "print('uploaded s3://' + os.environ['BUCKET'] + '/' + os.environ['KEY'])"
)


def backup_job(env: str, name: str) -> dict[str, Any]:
    """The backup Job: pg_dump (postgres image) into an emptyDir, then boto3 (the Dagster image) uploads it.

    Host, database and user come from `dagster.postgresql`, the password from the Secret
    `global.postgresqlSecretName` (key `postgresql-password`, the official chart's convention), the
    object store's credentials from `objectStore.credentialsSecretName` (empty: workload identity).
    """
    values = helm_values.environment_values(env)
    dagster, pg = values["dagster"], values["dagster"]["postgresql"]
    bucket, key, endpoint = backup_location(env, name)
    web = dagster["dagsterWebserver"]
    password = {"name": values["global"]["postgresqlSecretName"], "key": "postgresql-password"}
    pg_env = {
        "PGHOST": pg["postgresqlHost"],
        "PGPORT": str(pg.get("service", {}).get("port", 5432)),
        "PGDATABASE": pg["postgresqlDatabase"],
        "PGUSER": pg["postgresqlUsername"],
        "PGSSLMODE": (pg.get("postgresqlParams") or {}).get("sslmode", "prefer"),
    }
    common = {
        "securityContext": web["securityContext"],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "volumeMounts": [{"name": "dump", "mountPath": "/dump"}],
    }
    dump = {
        "name": "pg-dump",
        "image": f"{pg['image']['repository']}:{pg['image']['tag']}",
        "command": ["pg_dump", *PG_DUMP_FLAGS, "--file=/dump/db.dump"],
        "env": [{"name": k, "value": v} for k, v in pg_env.items()]
        + [{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": password}}],
        **common,
    }
    upload = {
        "name": "upload",
        "image": f"{web['image']['repository']}:{web['image']['tag']}",
        "command": ["python", "-c", UPLOAD],
        "env": [{"name": k, "value": v} for k, v in {"BUCKET": bucket, "KEY": key, "ENDPOINT": endpoint}.items()],
        **common,
    }
    credentials = (values.get("objectStore") or {}).get("credentialsSecretName")
    if credentials:
        upload["envFrom"] = [{"secretRef": {"name": credentials}}]
    labels = {"app.kubernetes.io/instance": helm_values.RELEASE_NAME, "component": "dagster-backup"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": values["environment"]["namespace"], "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": BACKUP_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": web["podSecurityContext"],
                    "volumes": [{"name": "dump", "emptyDir": {}}],
                    "initContainers": [dump],
                    "containers": [upload],
                },
            },
        },
    }


def backup_steps(env: str, *, context: str, namespace: str, name: str, manifest: Path) -> list[Step]:
    """Write the backup Job to `manifest`; the steps that apply it and wait for it."""
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(yaml.safe_dump(backup_job(env, name), sort_keys=False))
    kube = _kube(context, namespace)
    apply, wait = BACKUP_STEPS
    return [
        (apply, [*kube, "apply", "-f", str(manifest)]),
        (wait, [*kube, "wait", "--for=condition=complete", f"job/{name}", WAIT_TIMEOUT]),
    ]


def recovery(env: str, *, context: str, namespace: str, name: str, migrated: bool, synced: bool = False) -> str:
    """How to get back (one line; docs/upgrade.md): roll the release back, and restore the dump if the
    migration had started (not before: the dump is older than the runs since). After the sync, the workspace
    ConfigMap (not part of the release) holds this commit's registry: a rollback leaves it so."""
    rollback = f"`helm rollback {helm_values.RELEASE_NAME} --kube-context {context} --namespace {namespace}`"
    workspace = ""
    if synced:
        workspace = "; the workspace ConfigMap already lists this commit's registry (helm rollback keeps it): "
        workspace += "rerun the upgrade, or upgrade from the previous commit to restore both"
    if not migrated:
        deployed = "if `helm history` shows the new revision deployed"
        return f"the database was not migrated; {deployed}: {rollback}{workspace}"
    bucket, key, endpoint = backup_location(env, name)
    pg = helm_values.environment_values(env)["dagster"]["postgresql"]
    restore = f"aws s3 cp s3://{bucket}/{key} db.dump --endpoint-url {endpoint} && "
    restore += f"pg_restore {' '.join(PG_RESTORE_FLAGS)} -h {pg['postgresqlHost']} -U {pg['postgresqlUsername']} "
    restore += f"-d {pg['postgresqlDatabase']} db.dump"
    return f"to recover: restore the backup with `{restore}`, then {rollback} (docs/upgrade.md){workspace}"


def deployed_app_version(context: str, namespace: str) -> str | None:
    command = ["helm", "list", "--kube-context", context, "--namespace", namespace, "--output", "json"]
    command += ["--filter", f"^{helm_values.RELEASE_NAME}$"]
    releases = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout or "[]")
    return releases[0].get("app_version") if releases else None
