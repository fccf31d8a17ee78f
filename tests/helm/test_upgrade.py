"""`dagster-platform platform upgrade` run for real against stub `helm` and `kubectl` executables that
record their argv: backup before anything changes, the registry written into the workspace ConfigMap (by
`previews sync`, which the stub kubectl answers: no ConfigMap yet, then created) before helm upgrade, the
migration order, replicas restored and one line with the way back when a step fails, and a dry run that lists
every step and calls nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from dagster_platform.ci import previews
from dagster_platform.helm import upgrade
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.values import GENERATED_DIR
from dagster_platform.paths import dagster_version

from .helpers import COMPANY, ENVS, declared
from .test_environments import kubeconfig

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [ -n "$STUB_FAIL" ]; then
  case "$*" in *"$STUB_FAIL"*) echo "stub: failing on purpose" >&2; exit 1;; esac
fi
if [ "$1" = list ]; then echo "[{\\"app_version\\": \\"$STUB_DEPLOYED\\"}]"; fi
case "$*" in
  *"get configmap"*) echo 'Error from server (NotFound): configmaps "dagster-workspace" not found' >&2; exit 1;;
  *"create -f -"*) cat > "$STUB_LOG.configmap.json";;
esac
exit 0
"""

# The full checks of a real upgrade need the official chart (`make platform-deps`, not downloadable
# here); everything else is the command as `make platform-upgrade` runs it.
WITHOUT_CHART = (
    "import sys; from dagster_platform.helm import cli; cli.check_environment = lambda env, full: []; "
    "from dagster_platform.cli import main; sys.exit(main(sys.argv[1:]))"
)
MIGRATE_JOB = "job/dagster-dagster-webserver-instance-migrate"


OPS_TAG = "0123abcd"  # the platform/ops image the platform pipeline built (CI: $CI_COMMIT_SHA)
# The environment upgraded here: the first one main deploys to, as its own values name it.
ENV = ENVS[0]
OWN = declared(ENV)
VALUES = helm_values.environment_values(ENV)
TARGET = f"--context {OWN.kube_context} --namespace {OWN.namespace}"
WEBSERVER_REPLICAS = VALUES["dagster"]["dagsterWebserver"].get("replicaCount", 1)
BUCKET = VALUES["dagster"]["computeLogManager"]["config"]["s3ComputeLogManager"]["bucket"]
LOCATIONS = helm_values.load_code_locations()
MINOR = ".".join(dagster_version().split(".")[:2])
SAME_MINOR = f"{MINOR}.0"  # a deployed release of the platform's minor version: a patch upgrade
OLDER_MINOR = f"{MINOR.split('.')[0]}.{int(MINOR.split('.')[1]) - 1}.3"  # a minor upgrade: the migration runs
LIMIT = VALUES["previews"].get("maxPerLocation")


def run_upgrade(tmp_path, *flags, fail="", deployed=OLDER_MINOR, chart=False, ops_tag=OPS_TAG):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("helm", "kubectl"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    env |= {"STUB_FAIL": fail, "STUB_DEPLOYED": deployed, "DAGSTER_PLATFORM_HELM": "sdk"}
    code = ["-m", "dagster_platform.cli"] if chart else ["-c", WITHOUT_CHART]
    args = ["platform", "upgrade", "--env", ENV, "--kubeconfig", kubeconfig(tmp_path, OWN.kube_context)]
    args += ["--ops-image-tag", ops_tag] if ops_tag else []
    result = subprocess.run([sys.executable, *code, *args, *flags], env=env, capture_output=True, text=True)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def index(calls, *needles):
    """Position of the first call containing every needle."""
    return next(i for i, call in enumerate(calls) if all(n in call for n in needles))


def test_backup_then_upgrade_then_migration_in_order(tmp_path):
    result, calls = run_upgrade(tmp_path)
    assert result.returncode == 0, result.stderr
    name = result.stdout.split("backup Job ")[1].split()[0]
    assert name.startswith("dagster-backup-")
    pipe = {index(calls, "helm template", "dagster.migrate.enabled=true"), index(calls, "kubectl", "apply -f -")}
    order = [
        index(calls, "helm list"),  # read-only: is this a minor upgrade?
        index(calls, "kubectl", "apply -f", f"{name}.yaml"),
        index(calls, "kubectl", "wait --for=condition=complete", f"job/{name}"),
        index(calls, "kubectl", "get configmap dagster-workspace -o json"),  # previews sync: read...
        index(calls, "kubectl", "create -f -"),  # ...and write (at the read resourceVersion once it exists)
        index(calls, "helm upgrade --install dagster", "--atomic", f"deployments[0].image.tag={OPS_TAG}"),
        index(calls, "scale deployment --replicas=0"),
        min(pipe),  # helm template | kubectl apply -f - (one shell pipe: either may log first)
        max(pipe),
        index(calls, "wait --for=condition=complete", MIGRATE_JOB),
        index(calls, "delete job"),
        index(calls, f"--replicas={WEBSERVER_REPLICAS}", "dagster-webserver"),
        index(calls, "--replicas=1", "component=dagster-daemon"),
        index(calls, "rollout status"),
    ]
    assert order == sorted(order) and len(calls) == len(order), "\n".join(calls)
    assert all(TARGET in c for c in calls if "kubectl" in c)


def test_backup_job_dumps_the_environments_database_to_its_bucket(tmp_path):
    result, _ = run_upgrade(tmp_path, "--dry-run")
    name = result.stdout.split("backup Job ")[1].split()[0]
    job = yaml.safe_load((GENERATED_DIR / ENV / f"{name}.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    dump, upload = pod["initContainers"][0], pod["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in dump["env"] + upload["env"]}
    assert dump["command"][:2] == ["pg_dump", "--format=custom"]
    pg = VALUES["dagster"]["postgresql"]
    assert env["PGHOST"] == pg["postgresqlHost"] and env["PGDATABASE"] == pg["postgresqlDatabase"]
    assert env["PGPASSWORD"] == {
        "secretKeyRef": {"name": VALUES["global"]["postgresqlSecretName"], "key": "postgresql-password"}
    }
    assert env["BUCKET"] == BUCKET and env["KEY"] == f"backups/{ENV}/{name}.dump"
    assert upload["envFrom"] == [{"secretRef": {"name": VALUES["objectStore"]["credentialsSecretName"]}}]
    assert job["metadata"]["namespace"] == OWN.namespace and job["spec"]["backoffLimit"] == 0


def test_failing_migration_restores_replicas_and_prints_the_way_back(tmp_path):
    result, calls = run_upgrade(tmp_path, fail=f"wait --for=condition=complete {MIGRATE_JOB}")
    assert result.returncode == 1
    failed = index(calls, "wait --for=condition=complete", MIGRATE_JOB)
    after = calls[failed + 1 :]
    assert [c.split(" -l ")[0].split()[-1] for c in after] == [f"--replicas={WEBSERVER_REPLICAS}", "--replicas=1"]
    assert "delete job" not in "\n".join(after) and "rollout" not in "\n".join(after)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("platform upgrade: step 'wait for the migration Job' failed (exit 1); ")
    assert "webservers and daemon scaled back up" in lines[-1]
    assert "pg_restore --clean --if-exists" in lines[-1] and f"s3://{BUCKET}/backups/{ENV}/" in lines[-1]
    assert f"helm rollback dagster --kube-context {OWN.kube_context} --namespace {OWN.namespace}" in lines[-1]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (
            "wait --for=condition=complete job/dagster-backup-",
            "'wait for the backup Job' failed (exit 1); nothing was changed",
        ),
        ("upgrade --install", "'helm upgrade' failed (exit 1); the database was not migrated"),
        ("list --kube-context", "reading the deployed version (helm list) failed"),
    ],
)
def test_failures_before_the_scale_down_change_nothing_else(tmp_path, fail, message):
    result, calls = run_upgrade(tmp_path, fail=fail)
    assert result.returncode == 1 and message in result.stderr
    assert fail in calls[-1], calls  # the failing call was the last one
    assert not any("scale" in c or "migrate" in c for c in calls)
    ours = [line for line in result.stderr.splitlines() if not line.startswith("stub: ")]
    assert "Traceback" not in result.stderr and len(ours) == 1 and ours[0].startswith("platform upgrade: ")


def test_patch_upgrade_backs_up_and_upgrades_only(tmp_path):
    result, calls = run_upgrade(tmp_path, deployed=SAME_MINOR)
    assert result.returncode == 0, result.stderr
    assert [c.split()[:2] for c in calls] == [["helm", "list"], *[["kubectl", "--context"]] * 4, ["helm", "upgrade"]]


def test_dry_run_lists_every_step_and_calls_nothing(tmp_path):
    result, calls = run_upgrade(tmp_path, "--dry-run", chart=True)
    assert result.returncode == 0, result.stderr
    assert calls == []
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    when = f"[only if the deployed Dagster minor differs from {MINOR}]"
    assert "apply -f" in steps[0] and "wait --for=condition=complete job/dagster-backup-" in steps[1]
    registry = {loc["name"]: {"host": loc["name"], "port": loc["port"]} for loc in LOCATIONS}
    assert steps[2].endswith(
        f" -m dagster_platform.ci.previews sync --env {ENV} {TARGET}"
        f" --registry-json {json.dumps(registry, sort_keys=True, separators=(',', ':'))}"
        + (f" --max-per-location {LIMIT}" if LIMIT else "")
    )
    assert steps[3].startswith("+ helm upgrade --install dagster")
    migration = [
        cmd
        for _, cmd in upgrade.upgrade_steps(
            ENV, context=OWN.kube_context, namespace=OWN.namespace, value_files=[], migrate=True
        )
    ][2:]
    assert len(steps) == 4 + len(migration) and all(s.startswith(f"+ {when} ") for s in steps[4:])
    assert MIGRATE_JOB in steps[6] and "rollout status" in steps[-1]


def test_upgrade_without_the_ops_image_tag_is_refused_before_anything_runs(tmp_path):
    result, calls = run_upgrade(tmp_path, ops_tag="")
    assert result.returncode == 2
    assert calls == []
    assert result.stderr.strip().splitlines() == [
        "refusing: no --ops-image-tag (OPS_IMAGE_TAG=...): the tag of the platform/ops image the platform pipeline "
        "built for this commit (CI: $CI_COMMIT_SHA); without it the ops location would not deploy"
    ]


def test_the_sync_writes_the_registry_before_helm_upgrade_rolls_the_pods(tmp_path):
    """The same command the preview jobs run (ci/previews.py) writes the registry into dagster-workspace before
    `helm upgrade` rolls the webserver and daemon (their checksum/platform-registry annotation changed)."""
    result, calls = run_upgrade(tmp_path, deployed=SAME_MINOR)
    assert result.returncode == 0, result.stderr
    assert index(calls, "get configmap dagster-workspace") < index(calls, "create -f -") < index(calls, "helm upgrade")
    created = json.loads((tmp_path / "calls.log.configmap.json").read_text())
    notes = created["metadata"]["annotations"]
    domain = COMPANY.label_domain  # platform/company.yaml label_domain
    assert json.loads(notes[f"{domain}/registry"]) == {
        loc["name"]: {"host": loc["name"], "port": loc["port"]} for loc in LOCATIONS
    }
    assert json.loads(notes[f"{domain}/previews"]) == {}
    assert notes[f"{domain}/max-per-location"] == str(LIMIT or previews.DEFAULT_MAX_PER_LOCATION)
    workspace = json.loads(created["data"]["workspace.yaml"])  # JSON is YAML: what Dagster reads
    names = sorted(loc["name"] for loc in LOCATIONS)
    assert [e["grpc_server"]["location_name"] for e in workspace["load_from"]] == names
    assert f"workspace: {len(names)} registered location(s), 0 preview(s) kept" in result.stdout


def test_a_failing_sync_stops_before_helm_upgrade(tmp_path):
    result, calls = run_upgrade(tmp_path, fail="create -f -", deployed=SAME_MINOR)
    assert result.returncode == 1
    assert not any("helm upgrade" in c for c in calls)
    assert result.stderr.strip().splitlines()[-1] == (
        "platform upgrade: step 'write the registry into the workspace ConfigMap' failed (exit 2); "
        "the release and the workspace ConfigMap are unchanged (the line above says why)"
    )
    assert "previews: kubectl create configmap dagster-workspace failed: stub: failing on purpose" in result.stderr


def test_a_failing_helm_upgrade_after_the_sync_says_the_configmap_kept_the_new_registry(tmp_path):
    result, _ = run_upgrade(tmp_path, fail="upgrade --install", deployed=SAME_MINOR)
    assert result.returncode == 1
    assert "the workspace ConfigMap already lists this commit's registry (helm rollback keeps it)" in result.stderr
