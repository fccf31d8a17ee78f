"""Environment separation: no value or rendered object of one environment names another's namespace, kube
context, database, secrets, hosts or CIDRs, nor the other environment's name itself (a secret store, secret
key path or secret name of the other environment has its name in it: `vault-production`,
`dagster/production/postgres`). The chart cannot know this (it renders one environment at a
time); the render-time namespace guard in our templates is the other half."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dagster_platform import platform_config
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import strip_source
from dagster_platform.helm.policies import Violation, leaves, obj_name

# What each environment holds alone (platform_config.UNIQUE_KEYS), its name, and names that may repeat within
# an environment but never cross into another's files.
IDENTITY_KEYS = (
    "environment.name",
    *platform_config.UNIQUE_KEYS,
    "objectStore.credentialsSecretName",
    "dagster.postgresql.postgresqlDatabase",
    "dagster.postgresql.postgresqlUsername",
    "ingress.admin.tlsSecretName",
    "ingress.readOnly.tlsSecretName",
)
CIDR_KEYS = ("networkPolicy.postgres.cidrs", "networkPolicy.kubernetesApi.cidrs")


def other_env_files(env: str) -> dict[str, dict[str, Any]]:
    """The committed <env>.yaml of every other declared environment."""
    return {other.name: other.values for other in platform_config.environments() if other.name != env}


def identity_markers(env_file_values: Mapping[str, Any]) -> dict[str, str]:
    """What names an environment: its namespace, context, database, secrets, hosts (marker -> key)."""
    markers = {}
    for key in IDENTITY_KEYS:
        value = helm_values.get_path(env_file_values, key)
        if isinstance(value, str) and value:
            markers[value] = key
    for key in CIDR_KEYS:
        markers.update((cidr, key) for cidr in helm_values.get_path(env_file_values, key) or [])
    return markers


def _names(value: str, marker: str) -> bool:
    """`value` holds `marker` as a whole token: `dagster/live/postgres` names an environment `live`,
    `liveness-check` does not."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(marker)}(?![A-Za-z0-9])", value) is not None


def check_environment_separation(
    env: str,
    values: Mapping[str, Any],
    other_envs: Mapping[str, Mapping[str, Any]],
    objects: list[Mapping[str, Any]] = (),
    where: str = "values",
) -> list[Violation]:
    """No value (of the file `where`) or rendered object of `env` names another environment's identity."""
    out = []
    name = helm_values.get_path(values, "environment.name")
    if "environment" in values and name != env:
        out.append(Violation("environment-separation", where, f"environment.name is {name!r}; set it to {env}"))
    haystacks = [(where, path, value) for path, value in leaves(values) if path != "environment.name"]
    haystacks += [(obj_name(obj), path, value) for obj in objects for path, value in leaves(strip_source(obj))]
    for other, other_values in other_envs.items():
        markers = identity_markers(other_values)
        for at, path, value in haystacks:
            # One line per value, naming the most specific marker it holds.
            marker = max((m for m in markers if isinstance(value, str) and _names(value, m)), key=len, default=None)
            if marker:
                its = f"({marker!r}, its {markers[marker]})"
                message = f"{path}: {value!r} names {other} {its}; name {env}'s own instead"
                out.append(Violation("environment-separation", at, message))
    return out
