"""Guardrail policies: the committed values pass, and each kind of mistake fails with a clear message."""

from __future__ import annotations

import copy

import pytest

from dagster_platform.helm import checks
from dagster_platform.helm import manifests as hm
from dagster_platform.helm import policies as hp
from dagster_platform.helm import values as helm_values

from .helpers import ENVS, edit_yaml, objects_of, set_in


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
    ("file", "path", "key"),
    [
        ("base.yaml", ("dagster", "dagsterDaemon"), "resource"),
        ("base.yaml", ("dagster", "runLauncher", "config", "k8sRunLauncher"), "imagePullPolcy"),
        ("base.yaml", ("dagster", "runLauncher", "config", "k8sRunLauncher", "runK8sConfig"), "podSpecConfg"),
        ("acceptance.yaml", ("dagster", "dagsterWebserver"), "replicaCont"),
        ("production.yaml", ("dagster", "postgresql"), "postgresqlHostname"),
        ("production.yaml", ("dagster",), "dagsterWebServer"),
    ],
)
def test_misspelled_dagster_key_fails(values_dir, file, path, key):
    def edit(data):
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[key] = "x"

    edit_yaml(values_dir / file, edit)
    env = "acceptance" if file != "production.yaml" else "production"
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    unknown = [v for v in found if v.rule == "unknown-key"]
    assert unknown, messages(found)
    assert f"{'.'.join(path)}.{key} is not a value of the official dagster chart" in messages(unknown)
    assert file in messages(unknown)


def test_misspelled_key_names_the_close_match():
    found = hp.check_dagster_keys({"dagster": {"dagsterDaemon": {"runMonitorng": {}}}}, "x.yaml")
    assert "did you mean runMonitoring?" in messages(found)


def test_misspelled_kubernetes_field_inside_values_fails(values_of):
    values = values_of("acceptance")
    values["dagster"]["dagsterWebserver"]["securityContext"]["runAsNonRot"] = True
    values["dagster"]["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["limits"]["memroy"] = "1Gi"
    found = hp.check_embedded_k8s_objects(values, "acceptance values")
    text = messages(found)
    assert "dagster.dagsterWebserver.securityContext" in text and "runAsNonRot" in text
    assert "k8sRunLauncher.resources" in text


# -- plaintext passwords anywhere in values -------------------------------------------------------
@pytest.mark.parametrize(
    ("file", "path", "value"),
    [
        ("acceptance.yaml", ("dagster", "postgresql", "postgresqlPassword"), "hunter2"),
        ("base.yaml", ("dagster", "dagsterWebserver", "env"), [{"name": "API_TOKEN", "value": "x"}]),
        ("production.yaml", ("dagster", "pythonLogs", "dagsterHandlerConfig"), {"url": "postgresql://u:pw@host/db"}),
        ("production.yaml", ("postgresPassword", "externalSecret", "remoteRef", "password"), "s3cr3t"),
    ],
)
def test_plaintext_secret_fails(values_dir, file, path, value):
    def edit(data):
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    edit_yaml(values_dir / file, edit)
    env = "production" if file == "production.yaml" else "acceptance"
    layers = helm_values.values_layers(env, values_dir=values_dir)
    found = [v for name, layer in layers for v in hp.check_no_plaintext_secrets(layer, name)]
    assert rules(found) == {"plaintext-secret"}, messages(found)
    assert file in messages(found)


def test_secret_names_are_not_secrets(env_values):
    for env in ENVS:
        assert hp.check_no_plaintext_secrets(env_values[env], env) == []


def test_rendered_secret_with_data_fails(rendered):
    objects = [*rendered["acceptance"], {"kind": "Secret", "metadata": {"name": "pg"}, "data": {"p": "aHVudGVyMg=="}}]
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
def test_latest_or_missing_image_tag_in_values_fails(values_of, path, tag):
    values = values_of("production")
    image = values["dagster"][path]["image"]
    if tag is None:
        del image["tag"]
    else:
        image["tag"] = tag
    found = hp.check_value_images(values, "production values")
    assert rules(found) == {"image-tag"}
    assert f"dagster.{path}.image" in messages(found)


def test_unset_image_fails(values_of):
    values = values_of("acceptance")
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


def test_init_container_without_resources_needs_the_limit_range(rendered):
    init = {"name": "check-db-ready", "image": "postgres:16.4"}
    deployment = pod("web", {"name": "c", "image": "x:1", "resources": GOOD_RESOURCES}, NON_ROOT, init=init)
    assert hm.check_manifest_pods([deployment]) != []
    with_limit_range = [*objects_of(rendered["acceptance"], "LimitRange").values(), deployment]
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
def test_pods_in_values_without_resources_or_non_root_fail(values_of, path, change, rule):
    values = values_of("acceptance")
    values["dagster"][path] = copy.deepcopy(values["dagster"][path])
    change(values["dagster"][path])
    found = hp.check_value_pods(values, "acceptance values")
    assert rules(found) == {rule}, messages(found)


# -- required settings, layering, versions ---------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "dotted", "value"),
    [
        ("acceptance", "dagster.postgresql.enabled", True),
        ("acceptance", "dagster.generatePostgresqlPasswordSecret", True),
        ("acceptance", "dagster.dagster-user-deployments.enableSubchart", False),
        ("production", "dagster.runLauncher.type", "CeleryK8sRunLauncher"),
        ("production", "dagster.dagsterWebserver.enableReadOnly", False),
        ("production", "dagster.dagsterDaemon.runRetries.enabled", False),
    ],
)
def test_required_setting_changed_fails(values_of, env, dotted, value):
    values = values_of(env)
    *parents, leaf = dotted.split(".")
    node = values
    for part in parents:
        node = node[part]
    node[leaf] = value
    found = hp.check_required_settings(env, values, f"{env} values")
    assert rules(found) == {"required-setting"}
    assert dotted in messages(found)


def test_generated_key_in_a_values_file_fails(values_dir):
    edit_yaml(
        values_dir / "production.yaml",
        lambda d: d["dagster"].setdefault("dagsterDaemon", {}).update({"runMonitoring": {"enabled": False}}),
    )
    found = hp.check_layering(helm_values.values_layers("production", values_dir=values_dir))
    assert rules(found) == {"stated-twice"}
    assert "dagster.dagsterDaemon.runMonitoring is generated" in messages(found)


def test_environment_file_repeating_base_fails(values_dir):
    edit_yaml(values_dir / "acceptance.yaml", lambda d: d["dagster"]["postgresql"].update({"enabled": False}))
    found = hp.check_layering(helm_values.values_layers("acceptance", values_dir=values_dir))
    assert "dagster.postgresql.enabled repeats base.yaml's value False" in messages(found)


_RUN_POD = ("dagster", "runLauncher", "config", "k8sRunLauncher", "resources")
_QUANTITY_FIX = "is not a Kubernetes quantity; write e.g. 4Gi, 4G or 500m"


@pytest.mark.parametrize(
    ("env", "file", "path", "value", "expected"),
    [
        ("acceptance", "base.yaml", (*_RUN_POD, "limits", "memory"), "4GB",
         f"[kubernetes-quantity] platform/values/base.yaml: {'.'.join(_RUN_POD)}.limits.memory: '4GB' {_QUANTITY_FIX}"),
        ("production", "base.yaml", ("dagster", "dagsterDaemon", "resources", "requests", "memory"), "768 Mi",
         f"[kubernetes-quantity] platform/values/base.yaml: dagster.dagsterDaemon.resources.requests.memory: "
         f"'768 Mi' {_QUANTITY_FIX}"),
        ("acceptance", "base.yaml", ("dagster", "dagsterWebserver", "resources", "limits", "ephemeral-storage"), "1gb",
         f"[kubernetes-quantity] platform/values/base.yaml: dagster.dagsterWebserver.resources.limits."
         f"ephemeral-storage: '1gb' {_QUANTITY_FIX}"),
        ("production", "production.yaml", ("dagster", "dagsterWebserver", "replicaCount"), 0,
         "[replica-count] platform/values/production.yaml: dagster.dagsterWebserver.replicaCount: 0 in production; "
         "set an integer >= 1"),
        ("acceptance", "acceptance.yaml", ("dagster", "dagsterWebserver", "replicaCount"), "two",
         "[replica-count] platform/values/acceptance.yaml: dagster.dagsterWebserver.replicaCount: 'two' in "
         "acceptance; set an integer >= 0"),
    ],
)  # fmt: skip
def test_invalid_quantity_or_replica_count_fails_in_one_line(values_dir, env, file, path, value, expected):
    edit_yaml(values_dir / file, set_in(path, value))
    found = checks.check_values(env, layers=helm_values.values_layers(env, values_dir=values_dir))
    assert [str(v) for v in found] == [expected]


def test_production_daemon_has_its_one_replica(values_dir):
    # The official chart runs one daemon, or none when disabled (it has no dagsterDaemon.replicaCount).
    edit_yaml(values_dir / "base.yaml", set_in(("dagster", "dagsterDaemon", "enabled"), False))
    found = checks.check_values("production", layers=helm_values.values_layers("production", values_dir=values_dir))
    assert "[required-setting] production values: dagster.dagsterDaemon.enabled must be True, is False" in map(
        str, found
    )


@pytest.mark.parametrize("quantity", ["4Gi", "4G", "500m", "0.5", 1, 2.5, "1e3", "128974848", "129M", "123Mi"])
def test_kubernetes_quantities_pass(values_of, quantity):
    values = values_of("production")
    values["dagster"]["dagsterDaemon"]["resources"]["limits"]["memory"] = quantity
    assert hp.check_counts_and_quantities("production", values, "production values") == []


def test_image_tag_drifting_from_pyproject_fails(values_of):
    values = values_of("production")
    values["dagster"]["dagsterDaemon"]["image"]["tag"] = "1.13.26"
    found = hp.check_image_versions(values, "production values")
    assert rules(found) == {"version-drift"}
    assert "pyproject pins dagster==" in messages(found)


# -- Kubernetes schemas for rendered objects ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
def test_every_rendered_object_is_valid_kubernetes(rendered, env):
    assert hm.check_kubernetes_schemas(rendered[env]) == []


def test_invalid_rendered_object_fails_kubernetes_validation(rendered):
    policy = copy.deepcopy(objects_of(rendered["production"], "NetworkPolicy")["dagster-default-deny"])
    policy["spec"]["polcyTypes"] = policy["spec"].pop("policyTypes")
    pdb = copy.deepcopy(next(iter(objects_of(rendered["production"], "PodDisruptionBudget").values())))
    pdb["spec"]["selector"] = "component=dagster-webserver"
    found = hm.check_kubernetes_schemas([policy, pdb])
    assert rules(found) == {"kubernetes-schema"}
    assert "polcyTypes" in messages(found) and "PodDisruptionBudget" in messages(found)


def test_external_secret_with_unknown_field_fails(rendered):
    (es,) = copy.deepcopy(list(objects_of(rendered["acceptance"], "ExternalSecret").values()))
    es["spec"]["secretStoreRf"] = es["spec"].pop("secretStoreRef")
    assert "secretStoreRf" in messages(hm.check_kubernetes_schemas([es]))


# -- references from our objects to the official chart's (checked on the full render in CI) -------------
def official_like_deployment(name, component, secret="dagster-production-postgresql"):
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


def test_references_hold_when_the_official_objects_are_named_as_expected(rendered):
    official = [
        official_like_deployment("dagster-dagster-webserver", "dagster-webserver"),
        official_like_deployment("dagster-dagster-webserver-read-only", "dagster-webserver-read-only"),
        official_like_deployment("dagster-daemon", "dagster-daemon"),
        service("dagster-dagster-webserver"),
        service("dagster-dagster-webserver-read-only"),
    ]
    assert hm.check_references([*rendered["production"], *official]) == []
    assert hm.check_references(rendered["production"]) == []  # without the official chart: nothing to check


def test_references_fail_when_names_or_labels_differ(rendered):
    official = [
        official_like_deployment("dagster-webserver", "webserver"),
        official_like_deployment("dagster-daemon", "dagster-daemon", secret="dagster-postgresql-secret"),
        service("dagster-webserver"),
    ]
    found = hm.check_references([*rendered["acceptance"], *official])
    text = messages(found)
    assert "no Service dagster-dagster-webserver" in text
    assert "PodDisruptionBudget/dagster-dagster-webserver" in text and "selects no pod" in text
    assert "NetworkPolicy/dagster-webserver-from-ingress" in text
    assert "no pod reads Secret dagster-acceptance-postgresql" in text
