"""Every guardrail on one environment: its values (helm/policies.py, separation.py, registry.py), the
instance they describe (parity with instance.yaml, Dagster's own config schemas, the images), and its
rendered objects (helm/manifests.py), by the real Helm engine, plus `helm lint`.

`make platform-check` (offline: our templates only) and CI's `make platform-verify` (full render) run
`check_environment`; tests call the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster_platform.helm import instance as helm_instance
from dagster_platform.helm import manifests, policies, registry, separation
from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngine, HelmEngineError, split_manifests
from dagster_platform.helm.images import instance_image_errors
from dagster_platform.helm.policies import Violation
from dagster_platform.metrics import rules as alert_rules


# -- the instance the values describe ---------------------------------------------------------------
def check_instance_config(env: str, values: Mapping[str, Any], instance: Mapping[str, Any]) -> list[Violation]:
    """The dagster.yaml the values describe is valid for Dagster, says what instance.yaml says, and every
    image that loads it can import what it names."""
    namespace = helm_values.get_path(values, "environment.namespace") or env
    try:
        described = helm_instance.values_to_instance(values.get("dagster") or {}, namespace=namespace)
    except helm_instance.InstanceTranslationError as exc:
        return [Violation("instance-config", env, str(exc))]
    out = check_described_instance(instance, described, f"{env} values")
    out += [Violation("instance-images", "platform/values", err) for err in instance_image_errors(env, described)]
    return out


def check_described_instance(instance: Mapping[str, Any], described: Mapping[str, Any], where: str) -> list[Violation]:
    """A dagster.yaml (`described`) is valid for Dagster and says what instance.yaml (`instance`) says."""
    out = [Violation("instance-config", where, err) for err in helm_instance.dagster_config_errors(described)]
    for section in helm_values.TRANSLATED_SECTIONS:
        expected, actual = instance.get(section), described.get(section)
        if section == "run_coordinator" and expected and actual:
            expected = {"class": expected.get("class"), "config": expected.get("config") or {}}
            actual = {"class": actual.get("class"), "config": actual.get("config") or {}}
        if section == "retention" and expected and actual:
            expected = helm_values.retention_with_defaults(expected)
            actual = helm_values.retention_with_defaults(actual)
        if isinstance(expected, Mapping) and isinstance(actual, Mapping):
            # Keys the chart adds with its own defaults (e.g. free_slots_after_run_end_seconds) are
            # not drift; differing or missing keys are.
            actual = {k: v for k, v in actual.items() if k in expected}
        if expected != actual:
            message = f"{section}: platform/instance/instance.yaml says {expected!r}, the Helm values say {actual!r}"
            out.append(Violation("instance-drift", where, message))
    return out


# -- all checks ---------------------------------------------------------------------------------------
def check_values(env: str, *, layers: list[tuple[str, Mapping[str, Any]]] | None = None) -> list[Violation]:
    """All value-level policies for `env` (no rendering)."""
    layers = layers if layers is not None else helm_values.values_layers(env)
    values = helm_values.merge_layers(layers)
    where = f"{env} values"
    out: list[Violation] = []
    production = policies.is_production(values)
    for name, layer in layers:
        out += policies.check_dagster_keys(layer, name) + policies.check_no_plaintext_secrets(layer, name)
        out += policies.check_counts_and_quantities(env, layer, name, production)
    out += policies.check_layering(layers)
    out += policies.check_embedded_k8s_objects(values, where)
    out += policies.check_value_images(values, where)
    out += policies.check_value_pods(values, where)
    out += policies.check_required_settings(env, values, where)
    out += policies.check_image_versions(values, where)
    locations = helm_values.load_code_locations()
    out += registry.check_code_location_registry(locations)
    out += registry.check_workspace(values, locations, where)
    out += registry.check_ops_deployment(values, locations, where)
    out += policies.check_daemon_liveness(values, where)
    out += alert_rules.check_metrics_values(values, where) + alert_rules.check_rule_metrics()
    out += check_instance_config(env, values, helm_values.load_instance(env))
    for name, layer in layers[:2]:  # the files; what the generated layer repeats of them is found in them
        out += separation.check_environment_separation(env, layer, separation.other_env_files(env), where=name)
    return out


def check_manifests(env: str, objects: list[Mapping[str, Any]], values: Mapping[str, Any]) -> list[Violation]:
    """All manifest-level policies for `env`'s rendered objects."""
    out = manifests.check_kubernetes_schemas(objects)
    out += manifests.check_references(objects)
    out += manifests.check_manifest_pods(objects)
    out += manifests.check_manifest_secrets(objects)
    out += separation.check_environment_separation(env, {}, separation.other_env_files(env), objects)
    namespace = helm_values.get_path(values, "environment.namespace")
    for obj in objects:
        ns = obj.get("metadata", {}).get("namespace")
        if ns is not None and ns != namespace:
            message = f"namespace {ns!r} is not {namespace!r}"
            out.append(Violation("environment-separation", policies.obj_name(obj), message))
    rendered_instance = helm_instance.instance_from_manifests(objects)
    if rendered_instance is not None:  # full render (official chart present)
        where = f"{env} rendered dagster.yaml"
        out += check_described_instance(helm_values.load_instance(env), rendered_instance, where)
        # The derivation every laptop runs must be exactly what the chart renders, key by key.
        derived = helm_instance.values_to_instance(values.get("dagster") or {}, namespace=namespace)
        for key, expected, actual in helm_instance.instance_differences(derived, rendered_instance):
            fix = "fix helm_instance.values_to_instance"
            message = f"{key}: the chart renders {actual!r}, the derivation says {expected!r}; {fix}"
            out.append(Violation("instance-derivation", where, message))
    return out


def official_chart_present(engine: HelmEngine | None = None) -> bool:
    status = (engine or HelmEngine()).dependency_status(helm_values.CHART_DIR)
    return bool(status) and all(dep["status"] == "ok" for dep in status)


def render_environment(env: str, *, full: bool, engine: HelmEngine | None = None) -> list[dict[str, Any]]:
    """Rendered objects of `env`. full=True requires the official chart in charts/ (CI)."""
    engine = engine or HelmEngine()
    if full and not official_chart_present(engine):
        raise HelmEngineError(
            "the official dagster chart is not in helm/dagster-platform/charts/: run `make platform-deps` "
            "(helm dependency build; needs https://dagster-io.github.io/helm)"
        )
    values = helm_values.environment_values(env)
    namespace = values["environment"]["namespace"]
    return split_manifests(
        engine.render(helm_values.CHART_DIR, values, release=helm_values.RELEASE_NAME, namespace=namespace)
    )


def check_environment(env: str, *, full: bool, engine: HelmEngine | None = None) -> list[str]:
    """Every policy for `env`; returns problems (empty = pass)."""
    engine = engine or HelmEngine()
    problems = [str(v) for v in check_values(env)]
    values = helm_values.environment_values(env)
    try:
        objects = render_environment(env, full=full, engine=engine)
    except HelmEngineError as exc:
        return [*problems, f"[render] {env}: {exc}"]
    problems += [str(v) for v in check_manifests(env, objects, values)]
    errors, warnings = engine.lint(helm_values.CHART_DIR, values, namespace=values["environment"]["namespace"])
    problems += [f"[helm-lint] {env}: {e}" for e in errors]
    if full:
        problems += [f"[helm-lint] {env}: {w}" for w in warnings]
        for kind in ("Deployment", "ConfigMap"):
            if not any(o["kind"] == kind for o in objects):
                problems.append(f"[render] {env}: the full render has no {kind}: is the official chart rendered?")
    return problems
