"""Values of one environment's release: base.yaml + <env>.yaml + what is generated from the
platform's single sources (instance.yaml, code-locations.yaml).

The layers are applied in this order, later wins, maps merge and lists are replaced (like
`helm -f a -f b -f c`). The generated layer goes last, and a policy check fails when base or an
environment file sets one of the generated keys, so each setting is stated in exactly one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dagster_platform import paths
from dagster_platform.helm.instance import instance_to_values, load_instance
from dagster_platform.mappings import deep_merge

CHART_DIR = paths.HELM_DIR / "dagster-platform"
VALUES_DIR = paths.PLATFORM_DIR / "values"
ENVIRONMENTS = ("acceptance", "production")
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
    "codeLocations",
)


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def load_code_locations(path: Path | None = None) -> list[dict[str, Any]]:
    data = load_yaml(path or paths.CODE_LOCATIONS_YAML)
    return list(data.get("locations") or [])


def workspace_values(locations: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The webserver/daemon workspace and the NetworkPolicy targets, one entry per location.

    Each location is its own Helm release (user-code template) whose Service is named after the
    location, in the same namespace.
    """
    locations = list(locations)
    return {
        "codeLocations": [{"name": loc["name"], "port": int(loc["port"])} for loc in locations],
        "dagster": {
            "dagsterWebserver": {
                "workspace": {
                    "enabled": True,
                    "servers": [
                        {"host": loc["name"], "port": int(loc["port"]), "name": loc["name"]} for loc in locations
                    ],
                }
            }
        },
    }


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
    instance: Mapping[str, Any] | None = None,
    locations: Iterable[Mapping[str, Any]] | None = None,
    credentials_secret: str | None = None,
) -> dict[str, Any]:
    instance = load_instance() if instance is None else instance
    locations = load_code_locations() if locations is None else locations
    return deep_merge(
        deep_merge(instance_to_values(instance), workspace_values(locations)), credentials_values(credentials_secret)
    )


def values_layers(env: str, *, values_dir: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(name, values) for each layer of `env`, in the order Helm applies them."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {env!r}; one of {', '.join(ENVIRONMENTS)}")
    values_dir = values_dir or VALUES_DIR
    base, env_values = load_yaml(values_dir / "base.yaml"), load_yaml(values_dir / f"{env}.yaml")
    secret = get_path(deep_merge(base, env_values), "objectStore.credentialsSecretName")
    return [
        ("platform/values/base.yaml", base),
        (f"platform/values/{env}.yaml", env_values),
        (
            "generated from platform/instance/instance.yaml + platform/code-locations.yaml",
            generated_values(credentials_secret=secret),
        ),
    ]


def merge_layers(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _name, values in layers:
        merged = deep_merge(merged, values)
    return merged


def environment_values(env: str, *, values_dir: Path | None = None) -> dict[str, Any]:
    """The user-supplied values of `env` (what `helm upgrade -f ... -f ...` passes)."""
    return merge_layers(values_layers(env, values_dir=values_dir))


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


def get_path(values: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
