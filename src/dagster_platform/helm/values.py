"""Values of one environment's release: base.yaml + <env>.yaml + what is generated from the
platform's single sources (instance.yaml, code-locations.yaml).

instance.yaml (dagster.yaml format) is the one place for the run queue, run monitoring, run retries,
sensor/schedule threads, tick retention and telemetry; `instance_to_values` turns it into the official
chart's values. The reverse (values -> the dagster.yaml the chart writes) is helm/instance.py, which
imports this module (never the other way round).

The layers are applied in this order, later wins, maps merge and lists are replaced (like
`helm -f a -f b -f c`). The generated layer goes last, and a policy check fails when base or an
environment file sets one of the generated keys, so each setting is stated in exactly one file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import paths, platform_config
from dagster_platform.ci import previews
from dagster_platform.mappings import deep_merge
from dagster_platform.platform_config import PlatformConfigError, get_path, load_yaml  # noqa: F401 - re-exported

CHART_DIR = paths.HELM_DIR / "dagster-platform"
VALUES_DIR = paths.VALUES_DIR
RELEASE_NAME = "dagster"
# Where `platform values` writes the generated layer for the helm binary (git-ignored .dev/).
GENERATED_DIR = paths.DEV_DIR / "helm"

# Keys of the generated layer (dotted paths); base/env files must not set them.
GENERATED_KEYS = (
    "dagster.dagsterDaemon.runCoordinator",
    "dagster.dagsterDaemon.runMonitoring",
    "dagster.dagsterDaemon.runRetries",
    "dagster.dagsterDaemon.sensors",
    "dagster.dagsterDaemon.schedules",
    "dagster.dagsterWebserver.envSecrets",
    "dagster.dagsterDaemon.envSecrets",
    "dagster.runLauncher.config.k8sRunLauncher.envSecrets",
    "dagster.retention",
    "dagster.telemetry",
    "dagster.dagsterWebserver.workspace",
    "dagster.dagsterWebserver.annotations.checksum/platform-registry",
    "dagster.dagsterDaemon.annotations.checksum/platform-registry",
    "codeLocations",
    "previews.grpcPort",
    "labelDomain",
    "metrics.runbookUrl",
)
# Pod annotation of the webserver(s) and the daemon: the registry's hash, so a registry change rolls them at
# `helm upgrade` (the chart's own checksum/dagster-workspace is constant with an external ConfigMap).
REGISTRY_CHECKSUM = "checksum/platform-registry"


class InstanceTranslationError(PlatformConfigError):
    """A platform file says something the values or dagster.yaml cannot express, or is not YAML: the message
    is one line naming the file, the key and the fix (the commands print it instead of a traceback)."""


# dagster.yaml sections that legitimately differ between the cluster and the local stack.
PLACE_SPECIFIC_SECTIONS = ("run_launcher", "storage", "run_storage", "event_log_storage", "schedule_storage",
                           "compute_logs", "local_artifact_storage", "scheduler")  # fmt: skip

# The chart's value names for instance.yaml's keys: the same words in camelCase (`snake_to_camel`).
_QUEUED_KEYS = ("max_concurrent_runs", "tag_concurrency_limits", "dequeue_interval_seconds", "dequeue_use_threads",
               "dequeue_num_workers")  # fmt: skip
_MONITORING_KEYS = ("enabled", "start_timeout_seconds", "cancel_timeout_seconds", "max_resume_run_attempts",
                   "poll_interval_seconds", "free_slots_after_run_end_seconds")  # fmt: skip
_THREADS_KEYS = ("use_threads", "num_workers", "num_submit_workers")
# Daemon sections of instance.yaml: chart value dagsterDaemon.<camelCase section>.
_DAEMON_SECTIONS = {
    "run_monitoring": _MONITORING_KEYS,
    "run_retries": ("enabled", "max_retries"),
    "sensors": _THREADS_KEYS,
    "schedules": _THREADS_KEYS,
}
# instance.yaml sections this module translates; any other section makes the translation fail
# (so a setting added to instance.yaml cannot silently miss the cluster).
TRANSLATED_SECTIONS = ("run_coordinator", *_DAEMON_SECTIONS, "retention", "telemetry")
_RETENTION_KEYS = ("schedule", "sensor", "auto_materialize")
_QUEUED_CLASSES = {
    ("dagster.core.run_coordinator", "QueuedRunCoordinator"),
    ("dagster._core.run_coordinator", "QueuedRunCoordinator"),
    ("dagster._core.run_coordinator.queued_run_coordinator", "QueuedRunCoordinator"),
}
_INSTANCE = "platform/instance/instance.yaml"


def load_instance(env: str | None = None, *, values_dir: Path | None = None) -> dict[str, Any]:
    """instance.yaml, with `env`'s overrides (its environment.instance) applied when env is given."""
    if env is None:
        return load_yaml(paths.INSTANCE_YAML)
    return environment_instance(platform_config.environment(env, values_dir))


def environment_instance(declared: platform_config.Environment) -> dict[str, Any]:
    """instance.yaml with a declared environment's overrides; an override of a key it lacks refused in one line."""
    shared = load_yaml(paths.INSTANCE_YAML)
    _check_overrides(declared.instance, shared, f"{declared.file}: environment.instance")
    return deep_merge(shared, declared.instance)


def _check_overrides(overrides: Mapping[str, Any], shared: Mapping[str, Any], where: str) -> None:
    """An override names a key instance.yaml has: a typo must not become a silently ignored setting."""
    for key, value in overrides.items():
        if key not in shared:
            known = ", ".join(shared) or "none"
            raise PlatformConfigError(
                f"{where}.{key}: instance.yaml has no such key (it has {known}); override one of those, or add it "
                f"to {_INSTANCE} first"
            )
        if isinstance(value, Mapping) and isinstance(shared[key], Mapping):
            _check_overrides(value, shared[key], f"{where}.{key}")


def snake_to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.title() for word in rest)


def _map_keys(section: str, data: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InstanceTranslationError(f"{_INSTANCE}: {section}: {data!r} is not a mapping; write it as dagster.yaml")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InstanceTranslationError(
            f"{_INSTANCE}: {section}.{', '.join(unknown)}: no dagster chart value expresses it; "
            f"use one of {', '.join(known)} (or teach dagster_platform.helm.values)"
        )
    return {snake_to_camel(key): value for key, value in data.items()}


def retention_with_defaults(retention: Mapping[str, Any]) -> dict[str, Any]:
    """instance.yaml's `retention`, with Dagster's own default for each tick status a `purge_after_days`
    mapping leaves out: the chart's schema requires all four, and the chart's render then states them."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.instance.config import get_default_tick_retention_settings

    out = {}
    for kind, data in retention.items():
        purge = (data or {}).get("purge_after_days")
        if isinstance(purge, Mapping):
            instigator = InstigatorType.SCHEDULE if kind == "schedule" else InstigatorType.SENSOR
            defaults = get_default_tick_retention_settings(instigator)
            purge = {**{status.value.lower(): days for status, days in defaults.items()}, **purge}
        out[kind] = {"purge_after_days": purge}
    return out


def instance_to_values(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The `dagster:` values overlay that makes the chart write instance.yaml's sections."""
    extra = sorted(set(instance) - set(TRANSLATED_SECTIONS) - set(PLACE_SPECIFIC_SECTIONS))
    if extra:
        raise InstanceTranslationError(
            f"{_INSTANCE}: {', '.join(extra)}: not a section the cluster's values express; "
            f"use one of {', '.join(TRANSLATED_SECTIONS)} (or teach dagster_platform.helm.values)"
        )
    place_specific = sorted(set(instance) & set(PLACE_SPECIFIC_SECTIONS))
    if place_specific:
        raise InstanceTranslationError(
            f"{_INSTANCE}: {', '.join(place_specific)}: place-specific (storage, compute logs and the run launcher "
            "come from platform/values on the cluster); remove it here"
        )
    daemon: dict[str, Any] = {}
    dagster: dict[str, Any] = {"dagsterDaemon": daemon}

    coordinator = instance.get("run_coordinator")
    if coordinator:
        _map_keys("run_coordinator", coordinator, ("module", "class", "config"))
        if (coordinator.get("module"), coordinator.get("class")) not in _QUEUED_CLASSES:
            raise InstanceTranslationError(
                f"{_INSTANCE}: run_coordinator.class: {coordinator.get('module')}.{coordinator.get('class')} "
                "is not what the platform runs; set module: dagster.core.run_coordinator, class: QueuedRunCoordinator"
            )
        config = _map_keys("run_coordinator.config", coordinator.get("config") or {}, _QUEUED_KEYS)
        daemon["runCoordinator"] = {
            "enabled": True,
            "type": "QueuedRunCoordinator",
            "config": {"queuedRunCoordinator": config},
        }
    else:
        daemon["runCoordinator"] = {"enabled": False}

    for section, known in _DAEMON_SECTIONS.items():
        if section in instance:
            daemon[snake_to_camel(section)] = _map_keys(section, instance[section], known)

    if "retention" in instance:
        _map_keys("retention", instance["retention"], _RETENTION_KEYS)  # rejects unknown sections
        dagster["retention"] = {"enabled": True}
        for section, data in retention_with_defaults(instance["retention"]).items():
            dagster["retention"][snake_to_camel(section)] = {"purgeAfterDays": data["purge_after_days"]}

    if "telemetry" in instance:
        telemetry = _map_keys("telemetry", instance["telemetry"], ("enabled",))
        dagster["telemetry"] = {"enabled": bool(telemetry.get("enabled"))}
    return {"dagster": dagster}


def load_code_locations() -> list[dict[str, Any]]:
    return list(load_yaml(paths.CODE_LOCATIONS_YAML).get("locations") or [])


def registry_servers(locations: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{name: {host, port}} of the registered locations: the registry part of the workspace ConfigMap, as the
    upgrade passes it to `previews sync --registry-json`. Each location is its own Helm release (user-code
    template) whose Service is named after the location, in the same namespace."""
    # As registered: a wrong entry is the registry check's one-line finding (helm/registry.py), not a crash here.
    return {str(loc.get("name")): {"host": loc.get("name"), "port": loc.get("port")} for loc in locations}


def registry_json(locations: Iterable[Mapping[str, Any]]) -> str:
    return json.dumps(registry_servers(locations), sort_keys=True, separators=(",", ":"))


def registry_checksum(locations: Iterable[Mapping[str, Any]]) -> str:
    return hashlib.sha256(registry_json(locations).encode()).hexdigest()


def workspace_values(locations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The webserver/daemon workspace (the ConfigMap previews.py owns), the registry's hash on their pods, the
    NetworkPolicy targets (one per location) and the previews' gRPC port (platform/company.yaml).

    `servers: []` is explicit: the chart's default lists an example server, and the chart refuses `servers`
    next to `externalConfigmap`.
    """
    locations = list(locations)
    roll = {"annotations": {REGISTRY_CHECKSUM: registry_checksum(locations)}}
    workspace = {"enabled": True, "servers": [], "externalConfigmap": previews.CONFIGMAP}
    return {
        "codeLocations": [{"name": loc.get("name"), "port": loc.get("port")} for loc in locations],
        "previews": {"grpcPort": paths.grpc_port()},
        # Prefix of the platform's own labels and annotations (platform/company.yaml label_domain).
        "labelDomain": platform_config.company().label_domain,
        # The alerts' runbooks: docs/operations.md of this repo on its GitLab (platform/company.yaml).
        "metrics": {"runbookUrl": runbook_url()},
        "dagster": {"dagsterWebserver": {"workspace": workspace, **roll}, "dagsterDaemon": roll},
    }


def runbook_url() -> str:
    """docs/operations.md on the platform project's default branch (HEAD): the runbooks as they are today."""
    company = platform_config.company()
    return f"https://{company.gitlab_host}/{company.platform_project}/-/blob/HEAD/docs/operations.md"


def credentials_values(secret_name: str | None) -> dict[str, Any]:
    """The object store's credentials Secret, as env vars of every pod that writes or reads step logs:
    webserver and daemon (read), run pods (write). Stated once, in `objectStore.credentialsSecretName`."""
    if not secret_name:
        return {}
    secrets = [{"name": secret_name}]
    return {
        "dagster": {
            "dagsterWebserver": {"envSecrets": secrets},
            "dagsterDaemon": {"envSecrets": secrets},
            "runLauncher": {"config": {"k8sRunLauncher": {"envSecrets": secrets}}},
        }
    }


def generated_values(
    instance: Mapping[str, Any] | None = None, credentials_secret: str | None = None
) -> dict[str, Any]:
    instance = load_instance() if instance is None else instance
    generated = deep_merge(instance_to_values(instance), workspace_values(load_code_locations()))
    return deep_merge(generated, credentials_values(credentials_secret))


def values_layers(env: str, *, values_dir: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(name, values) for each layer of `env`, in the order Helm applies them."""
    values_dir = values_dir or VALUES_DIR
    declared = platform_config.environment(env, values_dir)  # an undeclared environment: one line
    base, env_values = load_yaml(values_dir / "base.yaml"), declared.values
    secret = get_path(deep_merge(base, env_values), "objectStore.credentialsSecretName")
    instance = environment_instance(declared)
    return [
        ("platform/values/base.yaml", base),
        (f"platform/values/{env}.yaml", env_values),
        (
            "generated from platform/company.yaml + instance/instance.yaml + code-locations.yaml",
            generated_values(instance, credentials_secret=secret),
        ),
    ]


def merge_layers(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _name, values in layers:
        merged = deep_merge(merged, values)
    return merged


def environment_values(env: str) -> dict[str, Any]:
    """The user-supplied values of `env` (what `helm upgrade -f ... -f ...` passes)."""
    return merge_layers(values_layers(env))


def write_generated(env: str, out_dir: Path | None = None) -> list[Path]:
    """Write the generated layer to a file; return the `-f` files for `env`, in order."""
    out_dir = (out_dir or GENERATED_DIR) / env
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = out_dir / "generated-values.yaml"
    generated.write_text(
        "# GENERATED by `dagster-platform platform values` from platform/instance/instance.yaml and\n"
        "# platform/code-locations.yaml. Do not edit; do not commit.\n"
        + yaml.safe_dump(values_layers(env)[-1][1], sort_keys=False)
    )
    return [VALUES_DIR / "base.yaml", VALUES_DIR / f"{env}.yaml", generated]
