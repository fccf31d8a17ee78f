"""platform/code-locations.yaml, the registry of code locations: valid entries, served on the port the
user-code template serves, exactly the registered locations as NetworkPolicy targets, and a workspace the
webserver and daemon read from the ConfigMap that ci/previews.py keeps (registry + previews)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dagster_platform import platform_config
from dagster_platform.ci.previews import CONFIGMAP
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.policies import Violation
from dagster_platform.paths import grpc_port

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_WHERE = "platform/code-locations.yaml"


def check_workspace(values: Mapping[str, Any], locations: list[Mapping[str, Any]], where: str) -> list[Violation]:
    """The webserver and daemon read the ConfigMap previews.py writes (registry + previews), their pods carry
    the registry's hash (so a registry change rolls them), and every registered location is a NetworkPolicy
    target, and nothing else is."""
    out = []
    workspace = helm_values.get_path(values, "dagster.dagsterWebserver.workspace") or {}
    if not workspace.get("enabled"):
        out.append(Violation("workspace", where, "dagster.dagsterWebserver.workspace.enabled is not true"))
    if workspace.get("externalConfigmap") != CONFIGMAP:
        message = f"dagster.dagsterWebserver.workspace.externalConfigmap is {workspace.get('externalConfigmap')!r}"
        out.append(Violation("workspace", where, f"{message}; it must be {CONFIGMAP!r} (ci/previews.py writes it)"))
    if workspace.get("servers") != []:
        message = "dagster.dagsterWebserver.workspace.servers must be [] (the chart refuses both at once)"
        out.append(Violation("workspace", where, message))
    checksum = helm_values.registry_checksum(locations)
    for component in ("dagsterWebserver", "dagsterDaemon"):
        key = f"dagster.{component}.annotations"
        if (helm_values.get_path(values, key) or {}).get(helm_values.REGISTRY_CHECKSUM) != checksum:
            message = f"{key}.{helm_values.REGISTRY_CHECKSUM} is not the registry's hash (must roll on change)"
            out.append(Violation("workspace", where, message))
    policy_targets = {(c.get("name"), c.get("port")) for c in values.get("codeLocations") or []}
    registered = {(loc.get("name"), loc.get("port")) for loc in locations}
    for name, port in sorted(registered - policy_targets, key=str):
        out.append(Violation("workspace", where, f"location {name}:{port} has no NetworkPolicy target"))
    for name, port in sorted(policy_targets - registered, key=str):
        out.append(Violation("workspace", where, f"NetworkPolicy target {name}:{port} is not registered"))
    return out


def location_image(loc: Mapping[str, Any]) -> str:
    """A location's image repository: its `image:` where the registry states one, else <image_registry>/<name>."""
    return str(loc.get("image") or platform_config.company().image(str(loc.get("name"))))


def check_code_location_registry(locations: list[Mapping[str, Any]]) -> list[Violation]:
    served = grpc_port()
    images = platform_config.company().image_registry
    out = []
    seen: set[str] = set()
    for loc in locations:
        name = str(loc.get("name", ""))
        problems = []
        missing = sorted({"name", "team", "port", "module"} - set(loc))
        if missing:
            problems.append(f"location {name or '?'} lacks {missing}; add them (the file's header says what each is)")
        if not _DNS1123.match(name) or len(name) > 53:
            problems.append(f"{name!r} is not a DNS-1123 label of at most 53 characters")
        if name in seen:
            problems.append(f"{name!r} is registered twice")
        seen.add(name)
        if ":" in str(loc.get("image", "")).rsplit("/", 1)[-1]:
            problems.append(f"{name}: image must be a repository without tag")
        elif "image" in loc and not str(loc["image"]).startswith(images + "/"):
            problems.append(
                f"{name}: image {loc['image']!r} is not in the company's registry (platform/company.yaml "
                f"image_registry {images!r}); set image: {images}/{name}"
            )
        if type(loc.get("port")) is not int:
            problems.append(f"{name}: port {loc.get('port')!r} is not an integer; register it with port: {served}")
        elif loc["port"] != served:
            # The workspace dials this port; the location's code server (template Dockerfile and
            # deploy/values-*.yaml, rendered from the same setting) listens on the other one.
            problems.append(
                f"{name}: port {loc['port']} is not the port user-code repos serve ({served}, "
                "platform/company.yaml grpc_port = the template's deploy/values-*.yaml port); "
                f"register it with port: {served}"
            )
        out += [Violation("registry", _WHERE, problem) for problem in problems]
    return out


def check_ops_deployment(values: Mapping[str, Any], locations: list[Mapping[str, Any]], where: str) -> list[Violation]:
    """The user-deployments subchart runs exactly the platform's ops location, as registered."""
    from dagster_platform.helm.policies import OPS_DEPLOYMENT, OPS_LOCATION

    deployments = helm_values.get_path(values, "dagster.dagster-user-deployments.deployments") or []
    names = [d.get("name") for d in deployments]
    if names != [OPS_LOCATION]:
        message = f"the platform release deploys only {OPS_LOCATION}; user code is its own release (found {names})"
        return [Violation("ops-location", where, f"dagster.dagster-user-deployments.deployments: {message}")]
    ops, entry = deployments[0], next((loc for loc in locations if loc.get("name") == OPS_LOCATION), None)
    if entry is None:
        return [Violation("ops-location", _WHERE, f"{OPS_LOCATION} is deployed but not registered; add its entry")]
    expected = {"image.repository": location_image(entry), "port": entry.get("port"),
                "dagsterApiGrpcArgs": ["-m", entry.get("module")]}  # fmt: skip
    return [
        Violation("ops-location", where, f"{OPS_DEPLOYMENT}.{key} is {actual!r}; the registry says {value!r}")
        for key, value in expected.items()
        if (actual := helm_values.get_path(ops, key)) != value
    ]
