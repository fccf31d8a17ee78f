"""Guardrails on rendered objects: the umbrella chart's own in `make test`, all of them (official chart
included) in CI's full render.

Kept although the chart renders them, because the chart does not check them: every object against the
Kubernetes schemas (strict; Helm only checks values), every pod's images, resources and non-root context
(the official chart leaves them to values), no Secret material in the release, and our objects pointing at
the official chart's (Services, pod labels, the password Secret), whose names are assumptions of ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster_platform.helm.engine import strip_source
from dagster_platform.helm.policies import (
    KUBE_VERSION,
    OPS_LOCATION,
    Violation,
    has_resources,
    image_problem,
    obj_name,
    runs_as_non_root,
)
from dagster_platform.helm.values import CHART_DIR

# Where each pod-creating kind holds its pod spec: workloads under spec.template, CronJobs one level deeper.
_TEMPLATE = ("spec", "template", "spec")
_POD_PATHS = {
    "Pod": ("spec",),
    **dict.fromkeys(("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"), _TEMPLATE),
    "CronJob": ("spec", "jobTemplate", *_TEMPLATE),
}
# CRDs kubernetes-validate has no schema for, with the fields this chart renders for them.
_CRD_SPEC_KEYS = {
    ("external-secrets.io", "ExternalSecret"): {"refreshInterval", "secretStoreRef", "target", "data", "dataFrom"},
    ("monitoring.coreos.com", "ServiceMonitor"): {"selector", "namespaceSelector", "endpoints", "jobLabel"},
    ("monitoring.coreos.com", "PrometheusRule"): {"groups"},
}
# Our NetworkPolicies that must select pods of the official chart's Deployments.
_MUST_SELECT = ("-webserver-from-ingress", "-core-to-postgres", "-core-to-code-servers", "-core-to-kubernetes-api")


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
        hook = str((obj.get("metadata", {}).get("annotations") or {}).get("helm.sh/hook", ""))
        if not path or hook.startswith("test"):
            continue  # `helm test` pods of the official chart: never created by install/upgrade
        spec: Any = obj
        for part in path:
            spec = (spec or {}).get(part)
        spec = spec or {}
        for kind in ("initContainers", "containers"):
            for ctr in spec.get(kind) or []:
                name = f"{obj_name(obj)} container {ctr.get('name')}"
                image = str(ctr.get("image", ""))
                repo_and_tag = image.split("@", 1)[0]
                tag = repo_and_tag.rsplit(":", 1)[1] if ":" in repo_and_tag.rsplit("/", 1)[-1] else ""
                problem = None if "@sha256:" in image else image_problem(tag)
                if problem == "has no tag" and repo_and_tag.rstrip(":").endswith(f"/{OPS_LOCATION}"):
                    problem = None  # the platform pipeline's commit, given at upgrade (`--ops-image-tag`)
                if problem:
                    out.append(Violation("image-tag", name, f"image {image!r} {problem}"))
                if not runs_as_non_root(spec.get("securityContext"), ctr.get("securityContext")):
                    out.append(Violation("run-as-non-root", name, "runAsNonRoot is not true (pod or container)"))
                if not has_resources(ctr.get("resources")) and not (kind == "initContainers" and limit_range):
                    out.append(Violation("resources", name, "needs requests.cpu, requests.memory and limits.memory"))
    return out


def check_manifest_secrets(objects: list[Mapping[str, Any]]) -> list[Violation]:
    """The release never carries secret material (Secrets come from outside the chart)."""
    return [
        Violation("plaintext-secret", obj_name(obj), "the release renders a Secret with data")
        for obj in objects
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData"))
    ]


def check_kubernetes_schemas(objects: list[Mapping[str, Any]], kube_version: str = KUBE_VERSION) -> list[Violation]:
    import kubernetes_validate

    out = []
    for obj in objects:
        data = strip_source(obj)
        spec_keys = _CRD_SPEC_KEYS.get((str(data.get("apiVersion", "")).split("/")[0], data.get("kind")))
        if spec_keys:
            unknown = sorted(set(data.get("spec") or {}) - spec_keys)
            if unknown or not data.get("spec"):
                out.append(Violation("kubernetes-schema", obj_name(obj), f"unexpected spec keys {unknown}"))
            continue
        try:
            kubernetes_validate.validate(data, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            out.append(Violation("kubernetes-schema", obj_name(obj), f"no schema: {exc}"))
        except kubernetes_validate.ValidationError as exc:
            location = ".".join(str(p) for p in exc.absolute_path)
            out.append(Violation("kubernetes-schema", obj_name(obj), f"{location}: {exc.message}"))
    return out


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        present, value, op = expr["key"] in labels, labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr.get("values", [])) or (op == "NotIn" and value in expr.get("values", [])):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def check_references(objects: list[Mapping[str, Any]]) -> list[Violation]:
    """Our objects point at the official chart's: Services exist, selectors select pods.

    Only meaningful on the full render (official chart present); returns [] without the official chart's
    Deployments (our own, the metrics exporter, render offline too).
    """
    ours = f"{CHART_DIR.name}/templates/"
    deployments = [
        o for o in objects if o.get("kind") == "Deployment" and not str(o.get("__source__", "")).startswith(ours)
    ]
    if not deployments:
        return []
    out = []
    pod_labels = [(o.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}) for o in deployments]
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    for obj in objects:
        kind, name = obj.get("kind"), obj_name(obj)
        for rule in obj["spec"].get("rules", []) if kind == "Ingress" else []:
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                service = services.get(backend["name"])
                ports = [p.get("port") for p in (service or {}).get("spec", {}).get("ports", [])]
                if backend["port"].get("number") not in ports:  # no ports when there is no such Service
                    message = f"no Service {backend['name']} with port {backend['port']}"
                    out.append(Violation("reference", name, message))
        selector = None
        if kind == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]
        elif kind == "NetworkPolicy" and obj["metadata"]["name"].endswith(_MUST_SELECT):
            selector = obj["spec"]["podSelector"]
        if selector is not None and not any(_selects(selector, labels) for labels in pod_labels):
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
            out.append(Violation("reference", obj_name(es), f"no pod reads Secret {es['spec']['target']['name']}"))
    return out
