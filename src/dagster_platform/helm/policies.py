"""Guardrails on an environment's values files: each check returns Violations (empty = pass).

What the official chart checks itself is not repeated, except where it can only check in GitLab CI (the chart
is downloadable there only): its values.schema.json rejects unknown keys under `dagster:` there, and
`check_dagster_keys` does the same offline from helm/dagster-chart-keys.yaml (that file says why and how it
is kept in step with the pin). Everything else here is what the chart cannot know: the platform's security
defaults (no literal secrets, pinned images, resources and non-root pods, including run pods, which no
manifest shows), the settings the platform relies on, each setting stated in one file, and the Kubernetes
objects inside values checked against the Kubernetes schemas (the chart's schema only types them loosely).
Rendered objects: helm/manifests.py; environments: helm/separation.py; the registry: helm/registry.py.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from dagster_platform import paths
from dagster_platform.helm import values as helm_values

# The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
KUBE_VERSION = "1.31.0"
CHART_KEYS_YAML = paths.HELM_DIR / "dagster-chart-keys.yaml"


@dataclass(frozen=True)
class Violation:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def nodes(node: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted path, node) of `node` and of everything below it, mappings and lists included."""
    yield path, node
    if isinstance(node, Mapping):
        for key, child in node.items():
            yield from nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from nodes(child, f"{path}[{index}]")


def leaves(node: Any) -> Iterable[tuple[str, Any]]:
    return ((path, value) for path, value in nodes(node) if not isinstance(value, Mapping | list))


def mappings(node: Any) -> Iterable[tuple[str, Mapping[str, Any]]]:
    return ((path, value) for path, value in nodes(node) if isinstance(value, Mapping))


def obj_name(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({obj.get('__source__', '?')})"


# -- keys of the official chart -------------------------------------------------------------------
@cache
def dagster_chart_keys() -> dict[str, Any]:
    return helm_values.load_yaml(CHART_KEYS_YAML)


def check_dagster_keys(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Every key under `dagster:` is a key of the official chart (`~` in the list: free-form below)."""

    def walk(node: Any, known: Any, path: str) -> Iterable[Violation]:
        if known is None or not isinstance(node, Mapping):
            return
        for key, child in node.items():
            if key in known:
                yield from walk(child, known[key], f"{path}.{key}")
                continue
            close = ", ".join(difflib.get_close_matches(key, list(known), n=2, cutoff=0.7))
            hint = f"; did you mean {close}?" if close else ""
            yield Violation("unknown-key", where, f"{path}.{key} is not a value of the official dagster chart{hint}")

    return list(walk(values.get("dagster") or {}, dagster_chart_keys()["keys"], "dagster"))


# -- Kubernetes objects embedded in values: the strict Kubernetes definitions ----------------------
_LAUNCHER = "dagster.runLauncher.config.k8sRunLauncher"
# The pods the values describe: webserver, daemon and run pods (run Jobs are created at run time, so only
# values show them), each with where it sets its pod security context, container security context, resources.
_VALUE_PODS = {
    "dagster.dagsterWebserver": ("podSecurityContext", "securityContext", "resources"),
    "dagster.dagsterDaemon": ("podSecurityContext", "securityContext", "resources"),
    _LAUNCHER: ("runK8sConfig.podSpecConfig.securityContext", "securityContext", "resources"),
}
_POD_KINDS = ("PodSecurityContext", "SecurityContext", "ResourceRequirements")
K8S_SUBTREES = {
    **{
        f"{base}.{key}": f"io.k8s.api.core.v1.{kind}"
        for base, keys in _VALUE_PODS.items()
        for key, kind in zip(keys, _POD_KINDS, strict=True)
    },
    # run_k8s_config pieces are merged into a full object by dagster-k8s: no field is required.
    f"{_LAUNCHER}.runK8sConfig.jobSpecConfig": "partial:io.k8s.api.batch.v1.JobSpec",
}
# The API server accepts only standard or domain-qualified resource names.
_RESOURCE_NAME = re.compile(r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMG]i?|[a-z0-9.-]+/[a-z0-9._-]+)$")


@cache
def _k8s_definitions() -> dict[str, Any]:
    from importlib import resources

    major_minor = ".".join(KUBE_VERSION.split(".")[:2])
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{major_minor}.0-local-strict"
    return json.loads((base / "_definitions.json").read_text())["$defs"]


def check_embedded_k8s_objects(values: Mapping[str, Any], where: str) -> list[Violation]:
    import jsonschema

    out = []
    for dotted, definition in K8S_SUBTREES.items():
        value = helm_values.get_path(values, dotted)
        if value is None:
            continue
        schema = dict(_k8s_definitions()[definition.removeprefix("partial:")])
        if definition.startswith("partial:"):
            schema.pop("required", None)
        validator = jsonschema.Draft202012Validator({**schema, "$defs": _k8s_definitions()})
        for err in validator.iter_errors(value):
            location = ".".join(map(str, err.absolute_path)) or "<root>"
            out.append(Violation("kubernetes-schema", where, f"{dotted}: {location}: {err.message}"))
        if definition.endswith("ResourceRequirements") and isinstance(value, Mapping):
            for kind in ("requests", "limits"):
                names = value.get(kind) if isinstance(value.get(kind), Mapping) else {}
                out += [
                    Violation("kubernetes-schema", where, f"{dotted}.{kind}.{name}: not a Kubernetes resource name")
                    for name in names
                    if not _RESOURCE_NAME.match(str(name))
                ]
    return out


# Kubernetes' quantity grammar (k8s.io/apimachinery resource.Quantity): a number with a binary-SI, decimal-SI or
# exponent suffix: 4Gi, 4G, 500m, 0.5, 1e3; not 4GB.
_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_RESOURCE_QUANTITY = re.compile(r"(^|\.)resources\.(requests|limits)\.[^.]+$")


def check_counts_and_quantities(
    env: str, values: Mapping[str, Any], where: str, production: bool | None = None
) -> list[Violation]:
    """Every resources quantity is a Kubernetes quantity; every replicaCount an integer, >= 1 in production.
    `production`: whether `env` is production-tier, by default as `values` say (a layer without the environment's
    file, base.yaml, cannot say: check_values passes what the merged values say)."""
    production = is_production(values) if production is None else production
    least, fix = (1 if production else 0), "is not a Kubernetes quantity; write e.g. 4Gi, 4G or 500m"
    out = [
        Violation("kubernetes-quantity", where, f"{path}: {value!r} {fix}")
        for path, value in leaves(values)
        if _RESOURCE_QUANTITY.search(path) and (isinstance(value, bool) or not _QUANTITY.match(str(value)))
    ]
    out += [
        Violation("replica-count", where, f"{path}: {value!r} in {env}; set an integer >= {least}")
        for path, value in leaves(values)
        if path.endswith("replicaCount") and (type(value) is not int or value < least)
    ]
    return out


# -- secrets ------------------------------------------------------------------------------------------
_SECRET_KEY = re.compile(r"pass(word|wd)?$|secret$|token$|apikey$|api_key$|credentials?$", re.IGNORECASE)
_SECRET_ENV = re.compile(r"PASS|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)


def check_no_plaintext_secrets(values: Mapping[str, Any], where: str) -> list[Violation]:
    """No password/token/secret value in values: secrets come from Secrets, by name."""
    out = []
    for path, value in leaves(values):
        if isinstance(value, str) and value and _SECRET_KEY.search(path.rsplit(".", 1)[-1]):
            out.append(Violation("plaintext-secret", where, f"{path} holds a literal secret value"))
        elif isinstance(value, str) and _URL_WITH_PASSWORD.search(value):
            out.append(Violation("plaintext-secret", where, f"{path} is a URL with an embedded password"))
    for path, mapping in mappings(values):
        # Environment variables: {name: DB_PASSWORD, value: "..."} (valueFrom a Secret is the way).
        name, value = mapping.get("name"), mapping.get("value")
        if isinstance(name, str) and isinstance(value, str) and value and _SECRET_ENV.search(name):
            out.append(Violation("plaintext-secret", where, f"{path} sets {name} to a literal value"))
    return out


# -- images and pods (also used on rendered pods, helm/manifests.py) --------------------------------
def image_problem(tag: Any) -> str | None:
    tag = "" if tag is None else str(tag).strip()
    if not tag:
        return "has no tag"
    return "uses the `latest` tag" if tag == "latest" else None


def runs_as_non_root(pod_ctx: Mapping[str, Any] | None, ctr_ctx: Mapping[str, Any] | None) -> bool:
    container = (ctr_ctx or {}).get("runAsNonRoot")
    return bool(container) if container is not None else bool((pod_ctx or {}).get("runAsNonRoot"))


def has_resources(resources: Mapping[str, Any] | None) -> bool:
    requests, limits = (resources or {}).get("requests") or {}, (resources or {}).get("limits") or {}
    return bool(requests.get("cpu") and requests.get("memory") and limits.get("memory"))


def check_value_images(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Every `image:` block in the values has a pinned tag (not empty, not latest)."""
    out = []
    for path, node in mappings(values):
        image = node.get("image")
        problem = image_problem(image.get("tag")) if isinstance(image, Mapping) else None
        if problem == "has no tag" and path.startswith(OPS_DEPLOYMENT):
            continue  # the platform pipeline's commit, given at upgrade (`--ops-image-tag`), which refuses none
        if problem:
            at = f"{path}.image" if path else "image"
            out.append(Violation("image-tag", where, f"{at} ({image.get('repository')}) {problem}"))
    for component in ("dagsterWebserver", "dagsterDaemon"):
        if not helm_values.get_path(values, f"dagster.{component}.image"):
            message = f"dagster.{component}.image is not set (the chart default is not pinned here)"
            out.append(Violation("image-tag", where, message))
    return out


def check_value_pods(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Every pod of `_VALUE_PODS` runs as non-root and states its resources."""
    out = []
    for base, (pod_key, ctr_key, res_key) in _VALUE_PODS.items():
        pod = helm_values.get_path(values, base) or {}
        if not runs_as_non_root(helm_values.get_path(pod, pod_key), pod.get(ctr_key)):
            message = f"{base}: neither {pod_key} nor {ctr_key} sets runAsNonRoot: true"
            out.append(Violation("run-as-non-root", where, message))
        if not has_resources(pod.get(res_key)):
            message = f"{base}.{res_key} needs requests.cpu, requests.memory and limits.memory"
            out.append(Violation("resources", where, message))
    return out


# The subchart deployment of the platform's operations location (platform/ops/): the only one, at index 0,
# which `platform upgrade --ops-image-tag` sets with `--set`.
OPS_DEPLOYMENT = "dagster.dagster-user-deployments.deployments[0]"
OPS_LOCATION = "platform-ops"
# A hung daemon is restarted within heartbeat interval + tolerance + probe window; the chart default
# tolerance (1800 s) would leave the run queue stopped for half an hour.
MAX_HEARTBEAT_TOLERANCE = 600


def check_daemon_liveness(values: Mapping[str, Any], where: str) -> list[Violation]:
    """The daemon has Dagster's liveness check as its probe and a heartbeat tolerance of minutes."""
    daemon = helm_values.get_path(values, "dagster.dagsterDaemon") or {}
    out = []
    command = ((daemon.get("livenessProbe") or {}).get("exec") or {}).get("command") or []
    if command[-2:] != ["dagster-daemon", "liveness-check"]:
        message = "dagster.dagsterDaemon.livenessProbe.exec.command must be [dagster-daemon, liveness-check]"
        out.append(Violation("daemon-liveness", where, message + " (a dead or hung daemon is then restarted)"))
    tolerance = daemon.get("heartbeatTolerance")
    if type(tolerance) is not int or not 60 <= tolerance <= MAX_HEARTBEAT_TOLERANCE:
        message = f"dagster.dagsterDaemon.heartbeatTolerance is {tolerance!r}; "
        message += f"set seconds in 60..{MAX_HEARTBEAT_TOLERANCE}"
        out.append(Violation("daemon-liveness", where, message))
    return out


# -- what the platform relies on, stated once ------------------------------------------------------
REQUIRED_VALUES = {
    "dagster.postgresql.enabled": False,
    "dagster.generatePostgresqlPasswordSecret": False,
    "dagster.dagster-user-deployments.enabled": True,
    "dagster.dagster-user-deployments.enableSubchart": True,  # for platform/ops only (check_ops_deployment)
    "dagster.runLauncher.type": "K8sRunLauncher",
    "dagster.dagsterDaemon.enabled": True,
    "dagster.dagsterDaemon.runCoordinator.enabled": True,
    "dagster.dagsterDaemon.runCoordinator.type": "QueuedRunCoordinator",
    "dagster.dagsterDaemon.runMonitoring.enabled": True,
    "dagster.dagsterDaemon.runRetries.enabled": True,
    "dagster.retention.enabled": True,
    "dagster.ingress.enabled": False,
    "dagster.migrate.enabled": False,
    "dagster.dagsterWebserver.nameOverride": "dagster-webserver",
}
# Settings every production-tier environment (environment.tier: production) must have.
REQUIRED_IN_PRODUCTION = {"dagster.dagsterWebserver.enableReadOnly": True}


def is_production(values: Mapping[str, Any]) -> bool:
    """Whether these values are a production-tier environment's (its file's environment.tier): the values being
    checked say it, not the files on disk."""
    return helm_values.get_path(values, "environment.tier") == "production"


def check_required_settings(env: str, values: Mapping[str, Any], where: str) -> list[Violation]:
    out = []
    production = is_production(values)
    for dotted, expected in {**REQUIRED_VALUES, **(REQUIRED_IN_PRODUCTION if production else {})}.items():
        actual = helm_values.get_path(values, dotted)
        if actual != expected:
            out.append(Violation("required-setting", where, f"{dotted} must be {expected!r}, is {actual!r}"))
    config = helm_values.get_path(values, "dagster.dagsterDaemon.runCoordinator.config.queuedRunCoordinator") or {}
    if not config.get("maxConcurrentRuns") or not config.get("tagConcurrencyLimits"):
        message = "the run queue needs maxConcurrentRuns and tagConcurrencyLimits"
        out.append(Violation("required-setting", where, message))
    if not helm_values.get_path(values, "dagster.postgresql.postgresqlHost"):
        message = "dagster.postgresql.postgresqlHost (external Postgres) is empty"
        out.append(Violation("required-setting", where, message))
    if production and helm_values.get_path(values, "previews.enabled"):
        message = (
            f"previews.enabled is true in {env}, a production-tier environment; previews never run there: "
            "enable them in a staging environment's file instead"
        )
        out.append(Violation("previews", where, message))
    for key in ("dagster.nameOverride", "dagster.fullnameOverride", "dagster.global"):
        if helm_values.get_path(values, key) is not None:
            out.append(Violation("required-setting", where, f"{key} must not be set (names are relied on)"))
    return out


def check_layering(layers: list[tuple[str, Mapping[str, Any]]]) -> list[Violation]:
    """Nothing stated twice: base/env files do not set generated keys, env files do not repeat base."""
    out = []
    hand_written = [(name, vals) for name, vals in layers if name.startswith("platform/values/")]
    for name, vals in hand_written:
        for dotted in helm_values.GENERATED_KEYS:
            if helm_values.get_path(vals, dotted) is not None:
                message = f"{dotted} is generated from platform/instance or code-locations.yaml"
                out.append(Violation("stated-twice", name, message))
    if len(hand_written) == 2:
        (_, base), (env_name, env_vals) = hand_written
        base_leaves = dict(leaves(base))
        for path, value in leaves(env_vals):
            if path in base_leaves and base_leaves[path] == value:
                out.append(Violation("stated-twice", env_name, f"{path} repeats base.yaml's value {value!r}"))
    return out


def check_image_versions(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Webserver and daemon run the platform's Dagster version (pyproject.toml)."""
    version = paths.dagster_version()
    out = []
    for component in ("dagsterWebserver", "dagsterDaemon"):
        tag = str(helm_values.get_path(values, f"dagster.{component}.image.tag"))
        if tag != version:
            message = f"dagster.{component}.image.tag is {tag!r}, pyproject pins dagster=={version}"
            out.append(Violation("version-drift", where, message))
    return out
