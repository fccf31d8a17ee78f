"""Guardrail policies on an environment's values and on rendered manifests.

Every check returns a list of Violations (empty = pass); `check_environment` runs them all. The
same functions run in `make test` (the umbrella chart's own templates, rendered by the real Helm
engine without the official chart) and in CI's full render (`make platform-verify`, with it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from dagster_platform import paths
from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import strip_source

# The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
KUBE_VERSION = "1.31.0"


@dataclass(frozen=True)
class Violation:
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


# ---------------------------------------------------------------------------------------------
# Keys of the official dagster chart (1.13.x) that platform values may set.
#
# Written from the official chart's values schema models (helm/dagster/schema/schema/charts/
# dagster/values.py and subschema/*.py in dagster-io/dagster). A mapping lists the known child
# keys; ANY means free-form below this key (Kubernetes objects are checked separately against
# the Kubernetes schemas, see K8S_SUBTREES). A key missing here fails `check_dagster_keys`, so a
# typo under `dagster:` fails in `make test` instead of in CI (where the official chart's own
# values.schema.json catches it too) or, worse, being silently ignored.
# ---------------------------------------------------------------------------------------------
ANY = None
_IMAGE = {"repository": ANY, "tag": ANY, "pullPolicy": ANY}
_POD_COMMON = {
    "image": _IMAGE,
    "env": ANY,
    "envConfigMaps": ANY,
    "envSecrets": ANY,
    "deploymentLabels": ANY,
    "labels": ANY,
    "nodeSelector": ANY,
    "affinity": ANY,
    "tolerations": ANY,
    "podSecurityContext": ANY,
    "securityContext": ANY,
    "resources": ANY,
    "readinessProbe": ANY,
    "livenessProbe": ANY,
    "startupProbe": ANY,
    "annotations": ANY,
    "schedulerName": ANY,
    "volumeMounts": ANY,
    "volumes": ANY,
}
DAGSTER_CHART_KEYS: dict[str, Any] = {
    "global": {
        "postgresqlSecretName": ANY,
        "dagsterHome": ANY,
        "serviceAccountName": ANY,
        "celeryConfigSecretName": ANY,
        "dagsterInstanceConfigMap": ANY,
    },
    "dagsterWebserver": {
        **_POD_COMMON,
        "replicaCount": ANY,
        "nameOverride": ANY,
        "pathPrefix": ANY,
        "service": {"type": ANY, "port": ANY, "annotations": ANY},
        "workspace": {"enabled": ANY, "servers": ANY, "externalConfigmap": ANY},
        "enableReadOnly": ANY,
        "dbStatementTimeout": ANY,
        "dbPoolRecycle": ANY,
        "logLevel": ANY,
    },
    "dagsterDaemon": {
        **_POD_COMMON,
        "enabled": ANY,
        "runCoordinator": {
            "enabled": ANY,
            "type": ANY,
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": ANY,
                    "tagConcurrencyLimits": ANY,
                    "dequeueIntervalSeconds": ANY,
                    "dequeueNumWorkers": ANY,
                    "dequeueUseThreads": ANY,
                },
                "customRunCoordinator": ANY,
            },
        },
        "heartbeatTolerance": ANY,
        "runMonitoring": ANY,
        "runRetries": ANY,
        "sensors": {"useThreads": ANY, "numWorkers": ANY, "numSubmitWorkers": ANY},
        "schedules": {"useThreads": ANY, "numWorkers": ANY, "numSubmitWorkers": ANY},
    },
    "dagster-user-deployments": {
        "enabled": ANY,
        "enableSubchart": ANY,
        "imagePullSecrets": ANY,
        "deployments": ANY,
    },
    "postgresql": {
        "enabled": ANY,
        "image": _IMAGE,
        "postgresqlHost": ANY,
        "postgresqlUsername": ANY,
        "postgresqlPassword": ANY,
        "postgresqlDatabase": ANY,
        "postgresqlParams": ANY,
        "postgresqlScheme": ANY,
        "service": {"port": ANY},
    },
    "generatePostgresqlPasswordSecret": ANY,
    "generateCeleryConfigSecret": ANY,
    "ingress": {
        "enabled": ANY,
        "apiVersion": ANY,
        "labels": ANY,
        "annotations": ANY,
        "dagsterWebserver": ANY,
        "readOnlyDagsterWebserver": ANY,
        "flower": ANY,
    },
    "imagePullSecrets": ANY,
    "computeLogManager": {"type": ANY, "config": ANY},
    "scheduler": {"type": ANY, "config": ANY},
    "runLauncher": {
        "type": ANY,
        "config": {
            "k8sRunLauncher": {
                "image": _IMAGE,
                "imagePullPolicy": ANY,
                "jobNamespace": ANY,
                "loadInclusterConfig": ANY,
                "kubeconfigFile": ANY,
                "envConfigMaps": ANY,
                "envSecrets": ANY,
                "envVars": ANY,
                "volumeMounts": ANY,
                "volumes": ANY,
                "labels": ANY,
                "failPodOnRunFailure": ANY,
                "resources": ANY,
                "schedulerName": ANY,
                "securityContext": ANY,
                "runK8sConfig": {
                    "containerConfig": ANY,
                    "podSpecConfig": ANY,
                    "podTemplateSpecMetadata": ANY,
                    "jobSpecConfig": ANY,
                    "jobMetadata": ANY,
                },
            },
            "celeryK8sRunLauncher": ANY,
            "customRunLauncher": ANY,
        },
    },
    "pythonLogs": {"pythonLogLevel": ANY, "managedPythonLoggers": ANY, "dagsterHandlerConfig": ANY},
    "busybox": {"image": _IMAGE},
    "migrate": {"enabled": ANY},
    "telemetry": {"enabled": ANY},
    "serviceAccount": {"create": ANY, "name": ANY, "annotations": ANY},
    "retention": {"enabled": ANY, "sensor": ANY, "schedule": ANY, "autoMaterialize": ANY},
    "concurrency": ANY,
    "additionalInstanceConfig": ANY,
    "rabbitmq": ANY,
    "redis": ANY,
    "flower": ANY,
}


def check_dagster_keys(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Every key under `dagster:` must be a key of the official chart."""

    def walk(node: Any, known: Any, path: str) -> Iterable[Violation]:
        if known is ANY or not isinstance(node, Mapping):
            return
        for key, child in node.items():
            if key not in known:
                close = _close_matches(key, known)
                hint = f"; did you mean {close}?" if close else ""
                yield Violation(
                    "unknown-key",
                    where,
                    f"{path}.{key} is not a value of the official dagster chart{hint}",
                )
            else:
                yield from walk(child, known[key], f"{path}.{key}")

    return list(walk(values.get("dagster") or {}, DAGSTER_CHART_KEYS, "dagster"))


def _close_matches(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    return ", ".join(difflib.get_close_matches(key, list(known), n=2, cutoff=0.7))


# ---------------------------------------------------------------------------------------------
# Kubernetes objects embedded in values: validated against the strict Kubernetes definitions.
# ---------------------------------------------------------------------------------------------
K8S_SUBTREES = {
    "dagster.dagsterWebserver.resources": "io.k8s.api.core.v1.ResourceRequirements",
    "dagster.dagsterWebserver.securityContext": "io.k8s.api.core.v1.SecurityContext",
    "dagster.dagsterWebserver.podSecurityContext": "io.k8s.api.core.v1.PodSecurityContext",
    "dagster.dagsterDaemon.resources": "io.k8s.api.core.v1.ResourceRequirements",
    "dagster.dagsterDaemon.securityContext": "io.k8s.api.core.v1.SecurityContext",
    "dagster.dagsterDaemon.podSecurityContext": "io.k8s.api.core.v1.PodSecurityContext",
    "dagster.runLauncher.config.k8sRunLauncher.resources": "io.k8s.api.core.v1.ResourceRequirements",
    "dagster.runLauncher.config.k8sRunLauncher.securityContext": "io.k8s.api.core.v1.SecurityContext",
    "dagster.runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig.securityContext": (
        "io.k8s.api.core.v1.PodSecurityContext"
    ),
    "dagster.runLauncher.config.k8sRunLauncher.runK8sConfig.jobSpecConfig": "partial:io.k8s.api.batch.v1.JobSpec",
}


@cache
def _k8s_definitions() -> dict[str, Any]:
    from importlib import resources

    major_minor = ".".join(KUBE_VERSION.split(".")[:2])
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{major_minor}.0-local-strict"
    return json.loads((base / "_definitions.json").read_text())


def _k8s_subtree_errors(value: Any, definition: str) -> list[str]:
    import jsonschema

    defs = _k8s_definitions()["$defs"]
    partial = definition.startswith("partial:")
    schema = dict(defs[definition.removeprefix("partial:")])
    if partial:  # run_k8s_config pieces are merged into a full object by dagster-k8s
        schema.pop("required", None)
    validator = jsonschema.Draft202012Validator({**schema, "$defs": defs})
    return [
        f"{'.'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}" for err in validator.iter_errors(value)
    ]


_RESOURCE_NAME = re.compile(r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMG]i?|[a-z0-9.-]+/[a-z0-9._-]+)$")


def check_embedded_k8s_objects(values: Mapping[str, Any], where: str) -> list[Violation]:
    out = []
    for dotted, definition in K8S_SUBTREES.items():
        value = helm_values.get_path(values, dotted)
        if value is None:
            continue
        for err in _k8s_subtree_errors(value, definition):
            out.append(Violation("kubernetes-schema", where, f"{dotted}: {err}"))
        if definition.endswith("ResourceRequirements") and isinstance(value, Mapping):
            # The API server accepts only standard or domain-qualified resource names.
            for kind in ("requests", "limits"):
                for name in (value.get(kind) or {}) if isinstance(value.get(kind), Mapping) else ():
                    if not _RESOURCE_NAME.match(str(name)):
                        out.append(
                            Violation(
                                "kubernetes-schema", where, f"{dotted}.{kind}.{name}: not a Kubernetes resource name"
                            )
                        )
    return out


# ---------------------------------------------------------------------------------------------
# Secrets, images, pods
# ---------------------------------------------------------------------------------------------
_SECRET_KEY = re.compile(r"pass(word|wd)?$|secret$|token$|apikey$|api_key$|credentials?$", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)


def _walk(node: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            yield from _walk(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, f"{path}[{index}]")
    else:
        yield path, node


def check_no_plaintext_secrets(values: Mapping[str, Any], where: str) -> list[Violation]:
    """No password/token/secret value in values: secrets come from Secrets, by name."""
    out = []
    for path, value in _walk(values):
        leaf = path.rsplit(".", 1)[-1]
        if isinstance(value, str) and value and _SECRET_KEY.search(leaf):
            out.append(Violation("plaintext-secret", where, f"{path} holds a literal secret value"))
        elif isinstance(value, str) and _URL_WITH_PASSWORD.search(value):
            out.append(Violation("plaintext-secret", where, f"{path} is a URL with an embedded password"))
    for path, mapping in _mappings(values):
        # Environment variables: {name: DB_PASSWORD, value: "..."} (valueFrom a Secret is the way).
        name, value = mapping.get("name"), mapping.get("value")
        if isinstance(name, str) and isinstance(value, str) and value and _SECRET_ENV.search(name):
            out.append(Violation("plaintext-secret", where, f"{path} sets {name} to a literal value"))
    return out


_SECRET_ENV = re.compile(r"PASS|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)


def _mappings(node: Any, path: str = "") -> Iterable[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        yield path, node
        for key, child in node.items():
            yield from _mappings(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _mappings(child, f"{path}[{index}]")


def _image_problem(tag: Any) -> str | None:
    if tag is None or str(tag).strip() == "":
        return "has no tag"
    if str(tag).strip() == "latest":
        return "uses the `latest` tag"
    return None


def check_value_images(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Every `image:` block in the values has a pinned tag (not empty, not latest)."""
    out = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, child in node.items():
                child_path = f"{path}.{key}" if path else key
                if key == "image" and isinstance(child, Mapping):
                    problem = _image_problem(child.get("tag"))
                    if problem:
                        out.append(Violation("image-tag", where, f"{child_path} ({child.get('repository')}) {problem}"))
                walk(child, child_path)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{path}[{index}]")

    walk(values, "")
    for component in ("dagsterWebserver", "dagsterDaemon"):
        if not helm_values.get_path(values, f"dagster.{component}.image"):
            out.append(
                Violation(
                    "image-tag", where, f"dagster.{component}.image is not set (the chart default is not pinned here)"
                )
            )
    return out


def _runs_as_non_root(pod_ctx: Mapping[str, Any] | None, ctr_ctx: Mapping[str, Any] | None) -> bool:
    container = (ctr_ctx or {}).get("runAsNonRoot")
    if container is not None:
        return bool(container)
    return bool((pod_ctx or {}).get("runAsNonRoot"))


def _has_resources(resources: Mapping[str, Any] | None) -> bool:
    resources = resources or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    return bool(requests.get("cpu") and requests.get("memory") and limits.get("memory"))


def check_value_pods(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Webserver, daemon and run pods (run Jobs are created at run time, so only values show them)."""
    out = []
    pods = {
        "dagster.dagsterWebserver": ("podSecurityContext", "securityContext", "resources"),
        "dagster.dagsterDaemon": ("podSecurityContext", "securityContext", "resources"),
        "dagster.runLauncher.config.k8sRunLauncher": (
            "runK8sConfig.podSpecConfig.securityContext",
            "securityContext",
            "resources",
        ),
    }
    for base, (pod_key, ctr_key, res_key) in pods.items():
        pod_ctx = helm_values.get_path(values, f"{base}.{pod_key}")
        ctr_ctx = helm_values.get_path(values, f"{base}.{ctr_key}")
        if not _runs_as_non_root(pod_ctx, ctr_ctx):
            out.append(
                Violation("run-as-non-root", where, f"{base}: neither {pod_key} nor {ctr_key} sets runAsNonRoot: true")
            )
        if not _has_resources(helm_values.get_path(values, f"{base}.{res_key}")):
            out.append(
                Violation("resources", where, f"{base}.{res_key} needs requests.cpu, requests.memory and limits.memory")
            )
    return out


_POD_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _obj_name(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({obj.get('__source__', '?')})"


def check_manifest_pods(objects: list[Mapping[str, Any]]) -> list[Violation]:
    """Every rendered pod: pinned images, resources and runAsNonRoot on every container.

    Init containers without resources pass only when the render includes a LimitRange with
    defaults (the official chart has no resources value for some of its init containers).
    """
    out = []
    limit_range = any(
        obj.get("kind") == "LimitRange" and any(item.get("default") for item in obj.get("spec", {}).get("limits", []))
        for obj in objects
    )
    for obj in objects:
        path = _POD_PATHS.get(obj.get("kind"))
        if not path:
            continue
        hook = str((obj.get("metadata", {}).get("annotations") or {}).get("helm.sh/hook", ""))
        if hook.startswith("test"):
            continue  # `helm test` pods of the official chart: never created by install/upgrade
        spec: Any = obj
        for part in path:
            spec = (spec or {}).get(part)
        spec = spec or {}
        pod_ctx = spec.get("securityContext")
        for kind in ("initContainers", "containers"):
            for ctr in spec.get(kind) or []:
                name = f"{_obj_name(obj)} container {ctr.get('name')}"
                image = str(ctr.get("image", ""))
                repo_and_tag = image.split("@", 1)[0]
                tag = repo_and_tag.rsplit(":", 1)[1] if ":" in repo_and_tag.rsplit("/", 1)[-1] else ""
                if "@sha256:" not in image:
                    problem = _image_problem(tag)
                    if problem:
                        out.append(Violation("image-tag", name, f"image {image!r} {problem}"))
                if not _runs_as_non_root(pod_ctx, ctr.get("securityContext")):
                    out.append(Violation("run-as-non-root", name, "runAsNonRoot is not true (pod or container)"))
                if not _has_resources(ctr.get("resources")) and not (kind == "initContainers" and limit_range):
                    out.append(Violation("resources", name, "needs requests.cpu, requests.memory and limits.memory"))
    return out


def check_manifest_secrets(objects: list[Mapping[str, Any]]) -> list[Violation]:
    """The release never carries secret material (Secrets come from outside the chart)."""
    return [
        Violation("plaintext-secret", _obj_name(obj), "the release renders a Secret with data")
        for obj in objects
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData"))
    ]


# ---------------------------------------------------------------------------------------------
# Kubernetes schemas for rendered objects
# ---------------------------------------------------------------------------------------------
# CRDs kubernetes-validate has no schema for, with the fields this chart renders for them.
_CRD_SHAPES = {
    ("external-secrets.io", "ExternalSecret"): {
        "spec": {"refreshInterval", "secretStoreRef", "target", "data", "dataFrom"},
    },
}


def check_kubernetes_schemas(objects: list[Mapping[str, Any]], kube_version: str = KUBE_VERSION) -> list[Violation]:
    import kubernetes_validate

    out = []
    for obj in objects:
        data = strip_source(obj)
        group = str(data.get("apiVersion", "")).split("/")[0]
        shape = _CRD_SHAPES.get((group, data.get("kind")))
        if shape:
            unknown = sorted(set(data.get("spec") or {}) - shape["spec"])
            if unknown or not data.get("spec"):
                out.append(Violation("kubernetes-schema", _obj_name(obj), f"unexpected spec keys {unknown}"))
            continue
        try:
            kubernetes_validate.validate(data, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            out.append(Violation("kubernetes-schema", _obj_name(obj), f"no schema: {exc}"))
        except kubernetes_validate.ValidationError as exc:
            location = ".".join(str(p) for p in exc.absolute_path)
            out.append(Violation("kubernetes-schema", _obj_name(obj), f"{location}: {exc.message}"))
    return out


# ---------------------------------------------------------------------------------------------
# What the platform requires of every environment
# ---------------------------------------------------------------------------------------------
REQUIRED_VALUES = {
    "dagster.postgresql.enabled": False,
    "dagster.generatePostgresqlPasswordSecret": False,
    "dagster.dagster-user-deployments.enabled": True,
    "dagster.dagster-user-deployments.enableSubchart": False,
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
REQUIRED_BY_ENV = {"production": {"dagster.dagsterWebserver.enableReadOnly": True}}


def check_required_settings(env: str, values: Mapping[str, Any], where: str) -> list[Violation]:
    out = []
    for dotted, expected in {**REQUIRED_VALUES, **REQUIRED_BY_ENV.get(env, {})}.items():
        actual = helm_values.get_path(values, dotted)
        if actual != expected:
            out.append(Violation("required-setting", where, f"{dotted} must be {expected!r}, is {actual!r}"))
    config = helm_values.get_path(values, "dagster.dagsterDaemon.runCoordinator.config.queuedRunCoordinator") or {}
    if not config.get("maxConcurrentRuns") or not config.get("tagConcurrencyLimits"):
        out.append(
            Violation("required-setting", where, "the run queue needs maxConcurrentRuns and tagConcurrencyLimits")
        )
    if not helm_values.get_path(values, "dagster.postgresql.postgresqlHost"):
        out.append(
            Violation("required-setting", where, "dagster.postgresql.postgresqlHost (external Postgres) is empty")
        )
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
                out.append(
                    Violation(
                        "stated-twice", name, f"{dotted} is generated from platform/instance or code-locations.yaml"
                    )
                )
    if len(hand_written) == 2:
        (_, base), (env_name, env_vals) = hand_written
        base_leaves = dict(_walk(base))
        for path, value in _walk(env_vals):
            if path in base_leaves and base_leaves[path] == value:
                out.append(Violation("stated-twice", env_name, f"{path} repeats base.yaml's value {value!r}"))
    return out


# ---------------------------------------------------------------------------------------------
# Environment separation
# ---------------------------------------------------------------------------------------------
IDENTITY_KEYS = (
    "environment.namespace",
    "environment.kubeContext",
    "global.postgresqlSecretName",
    "dagster.postgresql.postgresqlHost",
    "dagster.postgresql.postgresqlDatabase",
    "dagster.postgresql.postgresqlUsername",
    "postgresPassword.externalSecret.secretStoreRef.name",
    "postgresPassword.externalSecret.remoteRef.key",
    "ingress.admin.host",
    "ingress.admin.tlsSecretName",
    "ingress.readOnly.host",
    "ingress.readOnly.tlsSecretName",
)


def identity_markers(env_file_values: Mapping[str, Any]) -> dict[str, str]:
    """What names an environment: its namespace, context, database, secrets, hosts (marker -> key)."""
    markers = {}
    for key in IDENTITY_KEYS:
        value = helm_values.get_path(env_file_values, key)
        if isinstance(value, str) and value:
            markers[value] = key
    for key in ("networkPolicy.postgres.cidrs", "networkPolicy.kubernetesApi.cidrs"):
        for cidr in helm_values.get_path(env_file_values, key) or []:
            markers[cidr] = key
    return markers


def check_environment_separation(
    env: str,
    values: Mapping[str, Any],
    other_envs: Mapping[str, Mapping[str, Any]],
    objects: list[Mapping[str, Any]] = (),
) -> list[Violation]:
    """No value or rendered object of `env` names another environment's identity."""
    out = []
    if values and helm_values.get_path(values, "environment.name") != env:
        out.append(
            Violation(
                "environment-separation",
                env,
                f"environment.name is {helm_values.get_path(values, 'environment.name')!r}, not {env!r}",
            )
        )
    haystacks = [(f"values {path}", value) for path, value in _walk(values)]
    haystacks += [(f"{_obj_name(obj)} {path}", value) for obj in objects for path, value in _walk(strip_source(obj))]
    for other, other_values in other_envs.items():
        for marker, key in identity_markers(other_values).items():
            for where, value in haystacks:
                if isinstance(value, str) and marker in value:
                    out.append(
                        Violation(
                            "environment-separation",
                            f"{env}: {where}",
                            f"{value!r} names {other}'s {key} ({marker!r})",
                        )
                    )
    return out


# ---------------------------------------------------------------------------------------------
# Workspace and instance config
# ---------------------------------------------------------------------------------------------
def check_workspace(values: Mapping[str, Any], locations: list[Mapping[str, Any]], where: str) -> list[Violation]:
    """Every registered location is a workspace server and a NetworkPolicy target, and nothing else is."""
    out = []
    workspace = helm_values.get_path(values, "dagster.dagsterWebserver.workspace") or {}
    if not workspace.get("enabled"):
        out.append(Violation("workspace", where, "dagster.dagsterWebserver.workspace.enabled is not true"))
    servers = {(s.get("name"), s.get("host"), s.get("port")) for s in workspace.get("servers") or []}
    policy_targets = {(c.get("name"), c.get("port")) for c in values.get("codeLocations") or []}
    registered = {(loc["name"], loc["name"], int(loc["port"])) for loc in locations}
    for name, host, port in sorted(registered - servers):
        out.append(Violation("workspace", where, f"registered location {name} ({host}:{port}) is not in the workspace"))
    for name, host, port in sorted(servers - registered):
        out.append(Violation("workspace", where, f"workspace server {name} ({host}:{port}) is not registered"))
    for name, _host, port in sorted(registered):
        if (name, port) not in policy_targets:
            out.append(Violation("workspace", where, f"location {name}:{port} has no NetworkPolicy target"))
    return out


def check_code_location_registry(locations: list[Mapping[str, Any]], served_port: int | None = None) -> list[Violation]:
    from dagster_platform.template.generate import grpc_port

    served = grpc_port() if served_port is None else served_port
    out = []
    where = "platform/code-locations.yaml"
    dns1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    seen: set[str] = set()
    for loc in locations:
        name = str(loc.get("name", ""))
        missing = sorted({"name", "team", "image", "port", "module"} - set(loc))
        if missing:
            out.append(Violation("registry", where, f"location {name or '?'} lacks {missing}"))
        if not dns1123.match(name) or len(name) > 53:
            out.append(Violation("registry", where, f"{name!r} is not a DNS-1123 label of at most 53 characters"))
        if name in seen:
            out.append(Violation("registry", where, f"{name!r} is registered twice"))
        seen.add(name)
        if ":" in str(loc.get("image", "")).rsplit("/", 1)[-1]:
            out.append(Violation("registry", where, f"{name}: image must be a repository without tag"))
        if not isinstance(loc.get("port"), int) or not 1024 <= loc["port"] <= 65535:
            out.append(Violation("registry", where, f"{name}: port must be an integer in 1024..65535"))
        elif loc["port"] != served:
            # The workspace dials this port; the location's code server (template Dockerfile and
            # deploy/values-*.yaml, rendered from the same setting) listens on the other one.
            out.append(
                Violation(
                    "registry",
                    where,
                    f"{name}: port {loc['port']} is not the port user-code repos serve ({served}, "
                    "platform/usercode.yaml grpc_port = the template's deploy/values-*.yaml port); "
                    f"register it with port: {served}",
                )
            )
    return out


def check_instance_config(env: str, values: Mapping[str, Any], instance: Mapping[str, Any]) -> list[Violation]:
    """The dagster.yaml the values describe is valid for Dagster and says what instance.yaml says."""
    out = []
    namespace = helm_values.get_path(values, "environment.namespace") or env
    try:
        described = helm_instance.values_to_instance(
            values.get("dagster") or {}, namespace=namespace, release="dagster"
        )
    except helm_instance.InstanceTranslationError as exc:
        return [Violation("instance-config", env, str(exc))]
    for err in helm_instance.dagster_config_errors(described):
        out.append(Violation("instance-config", f"{env} values", err))
    out.extend(compare_instance_sections(instance, described, f"{env} values"))
    from dagster_platform.helm.images import instance_image_errors

    out.extend(Violation("instance-images", "platform/values", err) for err in instance_image_errors(env, described))
    return out


def compare_instance_sections(instance: Mapping[str, Any], described: Mapping[str, Any], where: str) -> list[Violation]:
    out = []
    for section in helm_instance.TRANSLATED_SECTIONS:
        expected, actual = instance.get(section), described.get(section)
        if section == "run_coordinator" and expected and actual:
            expected = {"class": expected.get("class"), "config": expected.get("config") or {}}
            actual = {"class": actual.get("class"), "config": actual.get("config") or {}}
        if section == "retention" and expected and actual:
            expected = _retention_with_defaults(expected)
            actual = _retention_with_defaults(actual)
        if isinstance(expected, Mapping) and isinstance(actual, Mapping):
            # Keys the chart adds with its own defaults (e.g. free_slots_after_run_end_seconds) are
            # not drift; differing or missing keys are.
            actual = {k: v for k, v in actual.items() if k in expected}
        if expected != actual:
            out.append(
                Violation(
                    "instance-drift",
                    where,
                    f"{section}: platform/instance/instance.yaml says {expected!r}, the Helm values say {actual!r}",
                )
            )
    return out


def _retention_with_defaults(retention: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for section, data in retention.items():
        purge = (data or {}).get("purge_after_days")
        if isinstance(purge, Mapping):
            purge = {**helm_instance._default_tick_retention(section), **purge}
        out[section] = {"purge_after_days": purge}
    return out


def check_image_versions(values: Mapping[str, Any], where: str) -> list[Violation]:
    """Webserver and daemon run the platform's Dagster version (pyproject.toml)."""
    version = paths.dagster_version()
    out = []
    for component in ("dagsterWebserver", "dagsterDaemon"):
        tag = str(helm_values.get_path(values, f"dagster.{component}.image.tag"))
        if tag != version:
            out.append(
                Violation(
                    "version-drift",
                    where,
                    f"dagster.{component}.image.tag is {tag!r}, pyproject pins dagster=={version}",
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
def check_values(env: str, *, layers: list[tuple[str, Mapping[str, Any]]] | None = None) -> list[Violation]:
    """All value-level policies for `env` (no rendering)."""
    layers = layers if layers is not None else helm_values.values_layers(env)
    values = helm_values.merge_layers(layers)
    where = f"{env} values"
    out: list[Violation] = []
    for name, layer in layers:
        out += check_dagster_keys(layer, name)
        out += check_no_plaintext_secrets(layer, name)
    out += check_layering(layers)
    out += check_embedded_k8s_objects(values, where)
    out += check_value_images(values, where)
    out += check_value_pods(values, where)
    out += check_required_settings(env, values, where)
    out += check_image_versions(values, where)
    locations = helm_values.load_code_locations()
    out += check_code_location_registry(locations)
    out += check_workspace(values, locations, where)
    out += check_instance_config(env, values, helm_instance.load_instance())
    others = {
        other: helm_values.load_yaml(helm_values.VALUES_DIR / f"{other}.yaml")
        for other in helm_values.ENVIRONMENTS
        if other != env
    }
    out += check_environment_separation(env, values, others)
    return out


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present, value = expr["key"] in labels, labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr.get("values", [])) or (op == "NotIn" and value in expr.get("values", [])):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


# Our NetworkPolicies that must select pods of the official chart's Deployments.
_MUST_SELECT = ("-webserver-from-ingress", "-core-to-postgres", "-core-to-code-servers", "-core-to-kubernetes-api")


def check_references(objects: list[Mapping[str, Any]]) -> list[Violation]:
    """Our objects point at the official chart's: Services exist, selectors select pods.

    Only meaningful on the full render (official chart present); returns [] without Deployments.
    """
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    if not deployments:
        return []
    out = []
    pod_labels = {
        o["metadata"]["name"]: (o.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {})
        for o in deployments
    }
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    for obj in objects:
        kind, name = obj.get("kind"), _obj_name(obj)
        if kind == "Ingress":
            for rule in obj["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    service = services.get(backend["name"])
                    ports = [p.get("port") for p in (service or {}).get("spec", {}).get("ports", [])]
                    if service is None or backend["port"].get("number") not in ports:
                        out.append(
                            Violation("reference", name, f"no Service {backend['name']} with port {backend['port']}")
                        )
        selector = None
        if kind == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]
        elif kind == "NetworkPolicy" and obj["metadata"]["name"].endswith(_MUST_SELECT):
            selector = obj["spec"]["podSelector"]
        if selector is not None and not any(_selects(selector, labels) for labels in pod_labels.values()):
            out.append(Violation("reference", name, "selects no pod of the release"))
    secret_refs = {
        ref["name"]
        for dep in deployments
        for ctr in dep["spec"]["template"]["spec"].get("containers", [])
        for env in ctr.get("env") or []
        for ref in [(env.get("valueFrom") or {}).get("secretKeyRef")]
        if ref and ref.get("key") == "postgresql-password"
    }
    for es in (o for o in objects if o.get("kind") == "ExternalSecret"):
        if es["spec"]["target"]["name"] not in secret_refs:
            out.append(Violation("reference", _obj_name(es), f"no pod reads Secret {es['spec']['target']['name']}"))
    return out


def check_manifests(env: str, objects: list[Mapping[str, Any]], values: Mapping[str, Any]) -> list[Violation]:
    """All manifest-level policies for `env`'s rendered objects."""
    out = check_kubernetes_schemas(objects)
    out += check_references(objects)
    out += check_manifest_pods(objects)
    out += check_manifest_secrets(objects)
    others = {
        other: helm_values.load_yaml(helm_values.VALUES_DIR / f"{other}.yaml")
        for other in helm_values.ENVIRONMENTS
        if other != env
    }
    out += check_environment_separation(env, {}, others, objects)
    namespace = helm_values.get_path(values, "environment.namespace")
    for obj in objects:
        ns = obj.get("metadata", {}).get("namespace")
        if ns is not None and ns != namespace:
            out.append(Violation("environment-separation", _obj_name(obj), f"namespace {ns!r} is not {namespace!r}"))
    rendered_instance = helm_instance.instance_from_manifests(objects)
    if rendered_instance is not None:  # full render (official chart present)
        for err in helm_instance.dagster_config_errors(rendered_instance):
            out.append(Violation("instance-config", f"{env} rendered dagster.yaml", err))
        out += compare_instance_sections(
            helm_instance.load_instance(), rendered_instance, f"{env} rendered dagster.yaml"
        )
        # The derivation every laptop runs must be exactly what the chart renders, key by key.
        derived = helm_instance.values_to_instance(values.get("dagster") or {}, namespace=namespace, release="dagster")
        for key, expected, actual in helm_instance.instance_differences(derived, rendered_instance):
            out.append(
                Violation(
                    "instance-derivation",
                    f"{env} rendered dagster.yaml",
                    f"{key}: the chart renders {actual!r}, the derivation says {expected!r}; "
                    "fix helm_instance.values_to_instance",
                )
            )
    return out
