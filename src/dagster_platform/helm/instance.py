"""The derivation: chart values -> the dagster.yaml every process of an environment reads.

`values_to_instance` is the complete dagster.yaml the official chart's configmap-instance.yaml writes for an
environment's values (instance.yaml reaches them as the generated layer, helm/values.py);
`derive_instance(env)` applies it to platform/values, and the local runtime (local/config.py) runs its result
with named substitutions. Checked against Dagster's config schemas, and in CI against the chart's real
render (`instance_differences`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.values import InstanceTranslationError
from dagster_platform.mappings import deep_merge

# The three Postgres-backed storages the chart writes, all with the same `postgres_db` connection.
STORAGE_SECTIONS = ("run_storage", "event_log_storage", "schedule_storage")


def _camel_to_snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _snake_keys(data: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """{snake_case: value} for each of `keys` (camelCase) that `data` sets truthy, as the chart's
    `{{- if .Values.x }}` guards write them."""
    return {_camel_to_snake(key): data[key] for key in keys if data.get(key)}


# The official chart's defaults (its values.yaml) for the keys its instance template reads and the
# platform's values leave unset. Everything else the template reads is stated in platform/values or
# generated from instance.yaml; `make platform-verify` (CI, official chart present) compares the
# rendered ConfigMap with this derivation key by key, so a wrong default here fails there.
CHART_DEFAULTS: dict[str, Any] = {
    "scheduler": {"type": "DagsterDaemonScheduler"},
    "computeLogManager": {"type": "NoOpComputeLogManager"},
    "dagsterDaemon": {"enabled": True},
}


def values_to_instance(dagster_values: Mapping[str, Any], *, namespace: str) -> dict[str, Any]:
    """The complete dagster.yaml the official chart writes into the `dagster-instance` ConfigMap of the
    platform's release (`dagster`, values.RELEASE_NAME: the object names below are that release's).

    A transcription of helm/dagster/templates/configmap-instance.yaml and helpers/instance/*.tpl of the
    official chart (same sections, same order, same conditions), for the value types the platform
    uses; any other type raises InstanceTranslationError instead of guessing.
    """
    values = deep_merge(CHART_DEFAULTS, dagster_values)
    daemon = values["dagsterDaemon"]
    out: dict[str, Any] = {}

    if values["scheduler"]["type"] != "DagsterDaemonScheduler":
        raise InstanceTranslationError(f"scheduler.type {values['scheduler']['type']!r} is not derived")
    out["scheduler"] = {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"}
    storage = _postgres_storage(values)
    postgres = lambda module, klass: {"module": module, "class": klass, "config": copy.deepcopy(storage)}  # noqa: E731
    out["schedule_storage"] = postgres("dagster_postgres.schedule_storage", "PostgresScheduleStorage")
    out["run_launcher"] = _run_launcher(values, namespace)
    out["run_storage"] = postgres("dagster_postgres.run_storage", "PostgresRunStorage")
    out["event_log_storage"] = postgres("dagster_postgres.event_log", "PostgresEventLogStorage")
    coordinator = daemon.get("runCoordinator", {})
    if daemon.get("enabled") and coordinator.get("enabled"):
        config = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
        out["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
        if any(v not in (None, "", [], {}) for v in config.values()):
            out["run_coordinator"]["config"] = _snake_keys(config, config)
    out["compute_logs"] = _compute_log_manager(values["computeLogManager"])
    if values.get("pythonLogs"):
        raise InstanceTranslationError("pythonLogs is not derived; add it to helm_instance.values_to_instance")
    monitoring = daemon.get("runMonitoring", {})
    if daemon.get("enabled") and monitoring.get("enabled"):
        section = {"enabled": True, "start_timeout_seconds": monitoring.get("startTimeoutSeconds")}
        for key in ("cancelTimeoutSeconds", "maxResumeRunAttempts"):
            if monitoring.get(key) is not None:
                section[_camel_to_snake(key)] = monitoring[key]
        section["poll_interval_seconds"] = monitoring.get("pollIntervalSeconds")
        section["free_slots_after_run_end_seconds"] = monitoring.get("freeSlotsAfterRunEndSeconds")
        out["run_monitoring"] = section
    retries = daemon.get("runRetries", {})
    if daemon.get("enabled") and retries.get("enabled"):
        out["run_retries"] = {"enabled": True}
        if retries.get("maxRetries"):
            out["run_retries"]["max_retries"] = retries["maxRetries"]
    for kind in ("sensors", "schedules"):
        threads = daemon.get(kind, {})
        if daemon.get("enabled") and threads.get("useThreads"):
            out[kind] = {"use_threads": True, **_snake_keys(threads, ("numWorkers", "numSubmitWorkers"))}
    out["telemetry"] = {"enabled": (values.get("telemetry") or {}).get("enabled")}
    retention = values.get("retention") or {}
    if retention.get("enabled"):
        out["retention"] = {
            _camel_to_snake(key): {"purge_after_days": retention[key]["purgeAfterDays"]}
            for key in ("sensor", "schedule", "autoMaterialize")
            if retention.get(key)
        }
    if values.get("additionalInstanceConfig"):
        out.update(values["additionalInstanceConfig"])
    return out


def _postgres_storage(values: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_postgresql.tpl: the password always comes from DAGSTER_PG_PASSWORD."""
    pg = values.get("postgresql") or {}
    if pg.get("enabled"):
        raise InstanceTranslationError("postgresql.enabled (the bundled Postgres) is not derived")
    username: Any = pg.get("postgresqlUsername")
    if (values.get("global") or {}).get("postgresqlSecretUsernameKey"):
        username = {"env": "DAGSTER_PG_USERNAME"}
    db: dict[str, Any] = {
        "username": username,
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg.get("postgresqlHost"),
        "db_name": pg.get("postgresqlDatabase"),
        "port": (pg.get("service") or {}).get("port"),
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


_S3_KEYS = ("localDir", "prefix", "useSsl", "verify", "verifyCertPath", "endpointUrl", "skipEmptyFiles")
_LAUNCHER_KEYS = ("kubeconfigFile", "envVars", "volumeMounts", "volumes", "labels", "resources", "schedulerName",
                  "securityContext")  # fmt: skip
_RUN_K8S_KEYS = ("containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata")


def _compute_log_manager(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """helpers/instance/_compute-log-manager.tpl for the NoOp and S3 managers."""
    kind = cfg.get("type")
    if kind == "NoOpComputeLogManager":
        return {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
    if kind != "S3ComputeLogManager":
        raise InstanceTranslationError(f"computeLogManager.type {kind!r} is not derived (S3ComputeLogManager)")
    s3 = ((cfg.get("config") or {}).get("s3ComputeLogManager")) or {}
    unknown = sorted(set(s3) - set(_S3_KEYS) - {"bucket"})
    if unknown:
        raise InstanceTranslationError(
            f"computeLogManager.config.s3ComputeLogManager keys {unknown} are not keys of the chart"
        )
    config = {"bucket": s3.get("bucket"), **_snake_keys(s3, _S3_KEYS)}
    return {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager", "config": config}


def _run_launcher(values: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """helpers/instance/_run-launcher.tpl for the K8sRunLauncher."""
    launcher = values.get("runLauncher", {})
    if launcher.get("type") != "K8sRunLauncher":
        raise InstanceTranslationError(f"runLauncher.type {launcher.get('type')!r} is not derived (K8sRunLauncher)")
    cfg = launcher.get("config", {}).get("k8sRunLauncher", {})
    config: dict[str, Any] = {
        "load_incluster_config": cfg.get("loadInclusterConfig"),
        "job_namespace": cfg.get("jobNamespace") or namespace,
        "image_pull_policy": cfg.get("imagePullPolicy"),
        "service_account_name": "dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
    }
    config.update(_snake_keys(cfg, _LAUNCHER_KEYS))
    for key in ("envConfigMaps", "envSecrets"):
        names = [item["name"] for item in cfg.get(key) or [] if "name" in item]
        if names:
            config[_camel_to_snake(key)] = names
    if cfg.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    run_k8s = cfg.get("runK8sConfig") or {}
    unknown = sorted(set(run_k8s) - set(_RUN_K8S_KEYS))
    if unknown:
        raise InstanceTranslationError(f"runK8sConfig keys {unknown} are not keys of the dagster chart")
    if run_k8s:
        config["run_k8s_config"] = _snake_keys(run_k8s, run_k8s)
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def instance_from_manifests(objects: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """dagster.yaml of the rendered official chart (the `*-instance` ConfigMap), if rendered."""
    for obj in objects:
        if obj.get("kind") == "ConfigMap" and obj["metadata"].get("name", "").endswith("-instance"):
            text = (obj.get("data") or {}).get("dagster.yaml")
            if text:
                return yaml.safe_load(text)
    return None


def dagster_config_errors(instance: Mapping[str, Any]) -> list[str]:
    """Errors Dagster itself reports for these dagster.yaml sections (empty list = valid).

    Checks the whole document against Dagster's instance schema, then the run coordinator and
    run launcher `config:` against their classes' own config schemas, as the instance does when it
    loads them.
    """
    import importlib

    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    errors: list[str] = []
    result = process_config(dagster_instance_config_schema(), dict(instance))
    if not result.success:
        errors.extend(f"dagster.yaml: {err.message}" for err in result.errors)
    for section in ("run_coordinator", "run_launcher"):
        data = instance.get(section)
        if not data:
            continue
        module = importlib.import_module(data["module"].replace("dagster.core.", "dagster._core."))
        klass = getattr(module, data["class"])
        result = process_config(klass.config_type(), data.get("config") or {})
        if not result.success:
            errors.extend(f"dagster.yaml {section} ({data['class']}): {err.message}" for err in result.errors)
    return errors


def derive_instance(env: str) -> dict[str, Any]:
    """The dagster.yaml every cluster process of `env` reads, from platform/instance + platform/values."""
    values = helm_values.environment_values(env)
    return values_to_instance(values.get("dagster") or {}, namespace=values["environment"]["namespace"])


class _IndentedDumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint's default `indentation` rule wants (the
    template's repos lint their dagster.yaml)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def instance_yaml(instance: Mapping[str, Any], header: str = "") -> str:
    """The one way a dagster.yaml is written (CLI, local runtime, template)."""
    return header + yaml.dump(dict(instance), Dumper=_IndentedDumper, sort_keys=False)


def instance_differences(expected: Any, actual: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, expected, actual) for every leaf where two dagster.yaml documents differ.
    MISSING stands for a key one side lacks."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        out = []
        for key in [*expected, *(k for k in actual if k not in expected)]:
            sub = f"{path}.{key}" if path else str(key)
            out += instance_differences(expected.get(key, MISSING), actual.get(key, MISSING), sub)
        return out
    return [] if expected == actual else [(path, expected, actual)]


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


MISSING = _Missing()
