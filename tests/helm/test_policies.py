"""Guardrail policies: the committed values pass, and each kind of mistake fails with a clear message."""

from __future__ import annotations

import copy

import pytest

from dagster_platform.helm import checks
from dagster_platform.helm import manifests as hm
from dagster_platform.helm import policies as hp
from dagster_platform.helm import values as helm_values
from dagster_platform.platform_config import get_path

from .helpers import (
    ENVS,
    NON_PRODUCTION_ENVS,
    PRODUCTION_ENVS,
    declared,
    edit_yaml,
    env_file,
    envs_where,
    objects_of,
    set_in,
)

# Environments whose Postgres password the chart wires through an ExternalSecret.
EXTERNAL_SECRET_ENVS = envs_where(lambda v: get_path(v, "postgresPassword.source") == "externalSecret")


def layer_file(values_dir, layer, env):
    """The file a case edits: base.yaml (every environment's) or the environment's own."""
    return values_dir / "base.yaml" if layer == "base" else env_file(values_dir, env)


@pytest.mark.parametrize("env", ENVS)
def test_committed_values_pass_every_value_policy(env):
    assert [str(v) for v in checks.check_values(env)] == []


@pytest.mark.parametrize("env", ENVS)
def test_rendered_objects_pass_every_manifest_policy(rendered, env_values, env):
    assert [str(v) for v in checks.check_manifests(env, rendered[env], env_values[env])] == []


def rules(violations):
    return {v.rule for v in violations}


def messages(violations):
    return "\n".join(map(str, violations))


# -- misspelled keys in any values file -----------------------------------------------------------
@pytest.mark.parametrize(
    ("layer", "path", "key"),
    [
        ("base", ("dagster", "dagsterDaemon"), "resource"),
        ("base", ("dagster", "runLauncher", "config", "k8sRunLauncher"), "imagePullPolcy"),
        ("base", ("dagster", "runLauncher", "config", "k8sRunLauncher", "runK8sConfig"), "podSpecConfg"),
        ("env", ("dagster", "dagsterWebserver"), "replicaCont"),
        ("env", ("dagster", "postgresql"), "postgresqlHostname"),
        ("env", ("dagster",), "dagsterWebServer"),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_misspelled_dagster_key_fails(values_dir, env, layer, path, key):
    file = layer_file(values_dir, layer, env)
    edit_yaml(file, set_in((*path, key), "x"))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    unknown = [v for v in found if v.rule == "unknown-key"]
    assert unknown, messages(found)
    assert f"{'.'.join(path)}.{key} is not a value of the official dagster chart" in messages(unknown)
    assert f"platform/values/{file.name}" in messages(unknown)


def test_misspelled_key_names_the_close_match():
    found = hp.check_dagster_keys({"dagster": {"dagsterDaemon": {"runMonitorng": {}}}}, "x.yaml")
    assert "did you mean runMonitoring?" in messages(found)


def test_misspelled_kubernetes_field_inside_values_fails(values_of):
    values = values_of(ENVS[0])
    values["dagster"]["dagsterWebserver"]["securityContext"]["runAsNonRot"] = True
    values["dagster"]["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["limits"]["memroy"] = "1Gi"
    found = hp.check_embedded_k8s_objects(values, "values")
    text = messages(found)
    assert "dagster.dagsterWebserver.securityContext" in text and "runAsNonRot" in text
    assert "k8sRunLauncher.resources" in text


# -- plaintext passwords anywhere in values -------------------------------------------------------
@pytest.mark.parametrize(
    ("layer", "path", "value"),
    [
        ("env", ("dagster", "postgresql", "postgresqlPassword"), "hunter2"),
        ("base", ("dagster", "dagsterWebserver", "env"), [{"name": "API_TOKEN", "value": "x"}]),
        ("env", ("dagster", "pythonLogs", "dagsterHandlerConfig"), {"url": "postgresql://u:pw@host/db"}),
        ("env", ("postgresPassword", "externalSecret", "remoteRef", "password"), "s3cr3t"),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_plaintext_secret_fails(values_dir, env, layer, path, value):
    file = layer_file(values_dir, layer, env)
    edit_yaml(file, set_in(path, value))
    layers = helm_values.values_layers(env, values_dir=values_dir)
    found = [v for name, layer in layers for v in hp.check_no_plaintext_secrets(layer, name)]
    assert rules(found) == {"plaintext-secret"}, messages(found)
    assert f"platform/values/{file.name}" in messages(found)


def test_secret_names_are_not_secrets(env_values):
    for env in ENVS:
        assert hp.check_no_plaintext_secrets(env_values[env], env) == []


@pytest.mark.parametrize("env", ENVS)
def test_rendered_secret_with_data_fails(rendered, env):
    objects = [*rendered[env], {"kind": "Secret", "metadata": {"name": "pg"}, "data": {"p": "aHVudGVyMg=="}}]
    assert rules(hm.check_manifest_secrets(objects)) == {"plaintext-secret"}


# -- image tags -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("dagsterWebserver", "latest"),
        ("dagsterDaemon", ""),
        ("dagsterDaemon", None),
        ("postgresql", "latest"),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_latest_or_missing_image_tag_in_values_fails(values_of, env, path, tag):
    values = values_of(env)
    image = values["dagster"][path]["image"]
    if tag is None:
        del image["tag"]
    else:
        image["tag"] = tag
    found = hp.check_value_images(values, f"{env} values")
    assert rules(found) == {"image-tag"}
    assert f"dagster.{path}.image" in messages(found)


@pytest.mark.parametrize("env", ENVS)
def test_unset_image_fails(values_of, env):
    values = values_of(env)
    del values["dagster"]["dagsterDaemon"]["image"]
    assert "dagster.dagsterDaemon.image is not set" in messages(hp.check_value_images(values, "v"))


def pod(name, container, pod_security=None, init=None):
    spec = {"containers": [container]}
    if pod_security is not None:
        spec["securityContext"] = pod_security
    if init:
        spec["initContainers"] = [init]
    return {"kind": "Deployment", "metadata": {"name": name}, "spec": {"template": {"spec": spec}}}


GOOD_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
NON_ROOT = {"runAsNonRoot": True}


@pytest.mark.parametrize(
    ("container", "pod_security", "rule"),
    [
        ({"name": "c", "image": "repo/x:latest", "resources": GOOD_RESOURCES}, NON_ROOT, "image-tag"),
        ({"name": "c", "image": "repo/x", "resources": GOOD_RESOURCES}, NON_ROOT, "image-tag"),
        ({"name": "c", "image": "registry:5000/x", "resources": GOOD_RESOURCES}, NON_ROOT, "image-tag"),
        ({"name": "c", "image": "repo/x:1.0"}, NON_ROOT, "resources"),
        ({"name": "c", "image": "repo/x:1.0", "resources": {"limits": {"memory": "1Gi"}}}, NON_ROOT, "resources"),
        ({"name": "c", "image": "repo/x:1.0", "resources": GOOD_RESOURCES}, None, "run-as-non-root"),
        (
            {
                "name": "c",
                "image": "repo/x:1.0",
                "resources": GOOD_RESOURCES,
                "securityContext": {"runAsNonRoot": False},
            },
            NON_ROOT,
            "run-as-non-root",
        ),
    ],
)
def test_rendered_pod_policies_fail(container, pod_security, rule):
    found = hm.check_manifest_pods([pod("bad", container, pod_security)])
    assert rules(found) == {rule}, messages(found)
    assert "Deployment/bad" in messages(found)


def test_helm_test_hook_pods_are_not_deployed_so_not_checked():
    test_pod = {
        "kind": "Pod",
        "metadata": {"name": "t", "annotations": {"helm.sh/hook": "test-success"}},
        "spec": {"containers": [{"name": "wget", "image": "busybox:1.28"}]},
    }
    assert hm.check_manifest_pods([test_pod]) == []
    test_pod["metadata"]["annotations"] = {"helm.sh/hook": "pre-install"}
    assert {v.rule for v in hm.check_manifest_pods([test_pod])} == {"resources", "run-as-non-root"}


def test_rendered_pod_with_everything_passes():
    container = {"name": "c", "image": "repo/x:1.0@sha256:" + "0" * 64, "resources": GOOD_RESOURCES}
    assert hm.check_manifest_pods([pod("ok", container, NON_ROOT)]) == []


@pytest.mark.parametrize("env", ENVS)
def test_init_container_without_resources_needs_the_limit_range(rendered, env):
    init = {"name": "check-db-ready", "image": "postgres:16.4"}
    deployment = pod("web", {"name": "c", "image": "x:1", "resources": GOOD_RESOURCES}, NON_ROOT, init=init)
    assert hm.check_manifest_pods([deployment]) != []
    with_limit_range = [*objects_of(rendered[env], "LimitRange").values(), deployment]
    assert hm.check_manifest_pods(with_limit_range) == []


@pytest.mark.parametrize(
    ("path", "change", "rule"),
    [
        ("dagsterWebserver", lambda c: c.pop("resources"), "resources"),
        ("dagsterDaemon", lambda c: c["resources"].pop("limits"), "resources"),
        ("dagsterWebserver", lambda c: (c.pop("securityContext"), c.pop("podSecurityContext")), "run-as-non-root"),
        ("runLauncher", lambda c: c["config"]["k8sRunLauncher"].pop("resources"), "resources"),
        (
            "runLauncher",
            lambda c: (
                c["config"]["k8sRunLauncher"].pop("securityContext"),
                c["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"].pop("runAsNonRoot"),
            ),
            "run-as-non-root",
        ),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_pods_in_values_without_resources_or_non_root_fail(values_of, env, path, change, rule):
    values = values_of(env)
    values["dagster"][path] = copy.deepcopy(values["dagster"][path])
    change(values["dagster"][path])
    found = hp.check_value_pods(values, f"{env} values")
    assert rules(found) == {rule}, messages(found)


# -- required settings, layering, versions ---------------------------------------------------------
@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("dagster.postgresql.enabled", True),
        ("dagster.generatePostgresqlPasswordSecret", True),
        ("dagster.dagster-user-deployments.enableSubchart", False),
        ("dagster.runLauncher.type", "CeleryK8sRunLauncher"),
        ("dagster.dagsterDaemon.runRetries.enabled", False),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_a_required_setting_changed_fails_in_every_environment(values_of, env, dotted, value):
    values = values_of(env)
    set_in(tuple(dotted.split(".")), value)(values)
    found = hp.check_required_settings(env, values, f"{env} values")
    assert rules(found) == {"required-setting"}
    assert f"[required-setting] {env} values: {dotted} must be " in messages(found)


@pytest.mark.parametrize("env", PRODUCTION_ENVS)
def test_a_production_tier_environment_needs_the_read_only_webserver(values_of, env):
    values = values_of(env)
    values["dagster"]["dagsterWebserver"]["enableReadOnly"] = False
    assert [str(v) for v in hp.check_required_settings(env, values, f"{env} values")] == [
        f"[required-setting] {env} values: dagster.dagsterWebserver.enableReadOnly must be True, is False"
    ]


@pytest.mark.parametrize("env", NON_PRODUCTION_ENVS)
def test_other_tiers_may_run_without_the_read_only_webserver(values_of, env):
    values = values_of(env)
    values["dagster"]["dagsterWebserver"]["enableReadOnly"] = False
    assert hp.check_required_settings(env, values, f"{env} values") == []


@pytest.mark.parametrize("env", ENVS)
def test_generated_key_in_a_values_file_fails(values_dir, env):
    edit_yaml(
        env_file(values_dir, env),
        lambda d: (
            d.setdefault("dagster", {}).setdefault("dagsterDaemon", {}).update({"runMonitoring": {"enabled": False}})
        ),
    )
    found = hp.check_layering(helm_values.values_layers(env, values_dir=values_dir))
    assert rules(found) == {"stated-twice"}
    assert f"platform/values/{env}.yaml" in messages(found)
    assert "dagster.dagsterDaemon.runMonitoring is generated" in messages(found)


@pytest.mark.parametrize("env", ENVS)
def test_environment_file_repeating_base_fails(values_dir, env):
    edit_yaml(env_file(values_dir, env), set_in(("dagster", "postgresql", "enabled"), False))
    found = hp.check_layering(helm_values.values_layers(env, values_dir=values_dir))
    assert f"[stated-twice] platform/values/{env}.yaml: dagster.postgresql.enabled repeats base.yaml's value False" in (
        [str(v) for v in found]
    )


_RUN_POD = ("dagster", "runLauncher", "config", "k8sRunLauncher", "resources")
_QUANTITY_FIX = "is not a Kubernetes quantity; write e.g. 4Gi, 4G or 500m"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ((*_RUN_POD, "limits", "memory"), "4GB"),
        (("dagster", "dagsterDaemon", "resources", "requests", "memory"), "768 Mi"),
        (("dagster", "dagsterWebserver", "resources", "limits", "ephemeral-storage"), "1gb"),
    ],
)
@pytest.mark.parametrize("env", ENVS)
def test_invalid_quantity_fails_in_one_line(values_dir, env, path, value):
    edit_yaml(values_dir / "base.yaml", set_in(path, value))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    assert [str(v) for v in found] == [
        f"[kubernetes-quantity] platform/values/base.yaml: {'.'.join(path)}: {value!r} {_QUANTITY_FIX}"
    ]


_REPLICAS = ("dagster", "dagsterWebserver", "replicaCount")


@pytest.mark.parametrize("env", ENVS)
def test_a_replica_count_that_is_no_integer_fails_in_one_line(values_dir, env):
    edit_yaml(env_file(values_dir, env), set_in(_REPLICAS, "two"))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    least = 1 if declared(env).production else 0
    assert [str(v) for v in found] == [
        f"[replica-count] platform/values/{env}.yaml: dagster.dagsterWebserver.replicaCount: 'two' in {env}; "
        f"set an integer >= {least}"
    ]


@pytest.mark.parametrize("env", PRODUCTION_ENVS)
def test_a_production_tier_environment_without_webserver_replicas_fails_in_one_line(values_dir, env):
    edit_yaml(env_file(values_dir, env), set_in(_REPLICAS, 0))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    assert [str(v) for v in found] == [
        f"[replica-count] platform/values/{env}.yaml: dagster.dagsterWebserver.replicaCount: 0 in {env}; "
        "set an integer >= 1"
    ]


@pytest.mark.parametrize("env", NON_PRODUCTION_ENVS)
def test_other_tiers_may_scale_the_webserver_to_zero(values_of, env):
    values = values_of(env)
    set_in(_REPLICAS, 0)(values)
    assert hp.check_counts_and_quantities(env, values, f"{env} values") == []


@pytest.mark.parametrize("env", ENVS)
def test_a_disabled_daemon_fails_in_every_environment(values_dir, env):
    # The official chart runs one daemon, or none when disabled (it has no dagsterDaemon.replicaCount).
    edit_yaml(values_dir / "base.yaml", set_in(("dagster", "dagsterDaemon", "enabled"), False))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    assert f"[required-setting] {env} values: dagster.dagsterDaemon.enabled must be True, is False" in map(str, found)


@pytest.mark.parametrize("quantity", ["4Gi", "4G", "500m", "0.5", 1, 2.5, "1e3", "128974848", "129M", "123Mi"])
def test_kubernetes_quantities_pass(values_of, quantity):
    values = values_of(ENVS[0])
    values["dagster"]["dagsterDaemon"]["resources"]["limits"]["memory"] = quantity
    assert hp.check_counts_and_quantities(ENVS[0], values, "values") == []


@pytest.mark.parametrize("env", ENVS)
def test_image_tag_drifting_from_pyproject_fails(values_of, env):
    values = values_of(env)
    values["dagster"]["dagsterDaemon"]["image"]["tag"] = "1.13.26"
    found = hp.check_image_versions(values, f"{env} values")
    assert rules(found) == {"version-drift"}
    assert "pyproject pins dagster==" in messages(found)


# -- Kubernetes schemas for rendered objects ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
def test_every_rendered_object_is_valid_kubernetes(rendered, env):
    assert hm.check_kubernetes_schemas(rendered[env]) == []


@pytest.mark.parametrize("env", ENVS)
def test_invalid_rendered_object_fails_kubernetes_validation(rendered, env):
    policy = copy.deepcopy(objects_of(rendered[env], "NetworkPolicy")["dagster-default-deny"])
    policy["spec"]["polcyTypes"] = policy["spec"].pop("policyTypes")
    pdb = copy.deepcopy(next(iter(objects_of(rendered[env], "PodDisruptionBudget").values())))
    pdb["spec"]["selector"] = "component=dagster-webserver"
    found = hm.check_kubernetes_schemas([policy, pdb])
    assert rules(found) == {"kubernetes-schema"}
    assert "polcyTypes" in messages(found) and "PodDisruptionBudget" in messages(found)


@pytest.mark.parametrize("env", EXTERNAL_SECRET_ENVS)
def test_external_secret_with_unknown_field_fails(rendered, env):
    (es,) = copy.deepcopy(list(objects_of(rendered[env], "ExternalSecret").values()))
    es["spec"]["secretStoreRf"] = es["spec"].pop("secretStoreRef")
    assert "secretStoreRf" in messages(hm.check_kubernetes_schemas([es]))


# -- references from our objects to the official chart's (checked on the full render in CI) -------------
def official_like_deployment(name, component, secret):
    labels = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "dagster", "component": component}
    env = [
        {"name": "DAGSTER_PG_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "postgresql-password"}}}
    ]
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "d", "env": env}]}}},
    }


def service(name, port=80):
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": port}]}}


@pytest.mark.parametrize("env", ENVS)
def test_references_hold_when_the_official_objects_are_named_as_expected(rendered, env_values, env):
    secret = env_values[env]["global"]["postgresqlSecretName"]
    components = ["dagster-webserver"] + ["dagster-webserver-read-only"] * bool(
        env_values[env]["dagster"]["dagsterWebserver"].get("enableReadOnly")
    )
    official = [
        *(official_like_deployment(f"dagster-{c}", c, secret) for c in components),
        official_like_deployment("dagster-daemon", "dagster-daemon", secret),
        *(service(f"dagster-{c}") for c in components),
    ]
    assert hm.check_references([*rendered[env], *official]) == []
    assert hm.check_references(rendered[env]) == []  # without the official chart: nothing to check


@pytest.mark.parametrize("env", ENVS)
def test_references_fail_when_names_or_labels_differ(rendered, env_values, env):
    official = [
        official_like_deployment("dagster-webserver", "webserver", "another-secret"),
        official_like_deployment("dagster-daemon", "dagster-daemon", secret="dagster-postgresql-secret"),
        service("dagster-webserver"),
    ]
    found = hm.check_references([*rendered[env], *official])
    text = messages(found)
    assert "PodDisruptionBudget/dagster-dagster-webserver" in text and "selects no pod" in text
    assert "NetworkPolicy/dagster-webserver-from-ingress" in text
    for ingress in objects_of(rendered[env], "Ingress").values():
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        assert f"no Service {backend}" in text
    for es in objects_of(rendered[env], "ExternalSecret").values():
        assert f"no pod reads Secret {es['spec']['target']['name']}" in text
