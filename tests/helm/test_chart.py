"""The umbrella chart itself: dependency pin and lock, values.schema.json, lint, render-time guards.

All through the real Helm engine (helm binary, else Helm's Go SDK via helm-python-sdk).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest
import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngineError
from dagster_platform.helm.policies import CHART_KEYS_YAML
from dagster_platform.helm.upgrade import backup_job
from dagster_platform.paths import dagster_version

from .helpers import COMPANY, ENVS, PAIRS, declared, objects_of, render, set_in, with_chart_defaults

CHART = helm_values.CHART_DIR


def test_official_chart_is_pinned_to_the_platform_dagster_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (dep,) = chart["dependencies"]
    assert dep == {"name": "dagster", "version": dagster_version(), "repository": "https://dagster-io.github.io/helm"}
    assert chart["appVersion"] == dagster_version()
    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    assert lock["dependencies"] == [
        {"name": "dagster", "repository": "https://dagster-io.github.io/helm", "version": dagster_version()}
    ]


def test_the_offline_list_of_chart_keys_is_for_the_pinned_chart():
    """helm/dagster-chart-keys.yaml (the offline stand-in for the chart's own schema) names its version: a
    Dagster bump fails here until the list has been compared with the new chart (its header says how)."""
    keys = yaml.safe_load(CHART_KEYS_YAML.read_text())
    (dep,) = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    assert keys["version"] == dep["version"] == dagster_version()


def test_chart_lock_digest_is_helms_hash_of_chart_yaml_and_lock():
    """Helm's resolver.HashReq: sha256 of the JSON [requested deps, locked deps]."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    # Go's json.Marshal writes the struct fields in declaration order: name, version, repository.
    data = json.dumps(
        [
            [{k: d[k] for k in ("name", "version", "repository")} for d in chart["dependencies"]],
            [{k: d[k] for k in ("name", "version", "repository")} for d in lock["dependencies"]],
        ],
        separators=(",", ":"),
    )
    assert lock["digest"] == "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def test_helm_accepts_the_committed_lock_and_rejects_a_stale_one(tmp_path):
    """`helm dependency build` (Helm SDK) checks the lock digest before it downloads anything.

    Offline, a lock in sync gets past that check and fails only at fetching the repository index;
    a lock out of sync with Chart.yaml is refused as such.
    """
    import helm_python

    good = tmp_path / "good"
    shutil.copytree(CHART, good, ignore=shutil.ignore_patterns("charts"))
    with pytest.raises(helm_python.HelmRepoError) as in_sync:
        helm_python.dependency_build(good)
    assert "out of sync" not in str(in_sync.value)

    stale = tmp_path / "stale"
    shutil.copytree(CHART, stale, ignore=shutil.ignore_patterns("charts"))
    chart_yaml = stale / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace(f"version: {dagster_version()}", "version: 1.13.26"))
    with pytest.raises(helm_python.HelmRepoError, match="out of sync"):
        helm_python.dependency_build(stale)


def test_dependency_is_declared_and_reported_missing_here(engine):
    status = engine.dependency_status(CHART)
    assert [(d["name"], d["version"]) for d in status] == [("dagster", dagster_version())]
    assert status[0]["status"] in ("ok", "missing")


@pytest.mark.parametrize("env", ENVS)
def test_helm_lint_has_no_errors(engine, env_values, env):
    values = env_values[env]
    errors, warnings = engine.lint(CHART, values, namespace=values["environment"]["namespace"])
    assert errors == []
    # The only warning here is the official chart not being downloaded (CI has it).
    assert all("missing these dependencies: dagster" in w for w in warnings), warnings


# -- values.schema.json: unknown keys are rejected by Helm itself -------------------------------
@pytest.mark.parametrize(
    ("path", "key"),
    [
        ((), "networkPolicies"),  # top-level typo of networkPolicy
        (("ingress", "admin"), "hots"),
        (("networkPolicy", "postgres"), "cidr"),
        (("postgresPassword",), "sorce"),
        (("environment",), "kubecontext"),
        (("global",), "postgresSecretName"),
    ],
)
def test_schema_rejects_misspelled_keys(engine, values_of, path, key):
    values = values_of(ENVS[0])
    set_in((*path, key), "x")(values)
    with pytest.raises(HelmEngineError, match="additional properties|additionalProperties") as err:
        render(engine, values)
    assert key in str(err.value)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("environment", "name"), "Prod_1", "environment/name"),  # not a lowercase DNS-ish label
        (("environment", "name"), "a", "environment/name"),  # too short to be a file stem the platform accepts
        (("environment", "tier"), "prod", "environment/tier"),  # not a GitLab deployment tier
        (("environment", "promotion"), 0, "environment/promotion"),
        (("labelDomain",), "https://platform.example.com", "labelDomain"),
        (("postgresPassword", "source"), "inline", "postgresPassword/source"),
        (("networkPolicy", "postgres", "cidrs"), [], "networkPolicy/postgres/cidrs"),
        (("codeLocations",), [{"name": "Bad_Name", "port": 4000}], "codeLocations/0/name"),
    ],
)
def test_schema_rejects_invalid_values(engine, values_of, path, value, expected):
    values = values_of(ENVS[0])
    set_in(path, value)(values)
    with pytest.raises(HelmEngineError, match=expected):
        render(engine, values)


@pytest.mark.parametrize("name", ["staging", "eu-west-2", "qa", "prod2"])
def test_schema_accepts_any_environment_name_a_company_may_choose(engine, values_of, name):
    values = values_of(ENVS[0])
    values["environment"]["name"] = name
    assert render(engine, values)


# -- guards in the templates (`fail`) -----------------------------------------------------------
@pytest.mark.parametrize(("env", "other"), [*PAIRS, *((env, None) for env in ENVS)])
def test_render_refuses_a_namespace_that_is_not_the_environments_own(engine, env_values, env, other):
    namespace = declared(other).namespace if other else "default"
    message = f'release namespace "{namespace}" is not the namespace of environment "{env}"'
    with pytest.raises(HelmEngineError, match=re.escape(message)):
        render(engine, env_values[env], namespace=namespace)


@pytest.mark.parametrize("env", ENVS)
def test_render_refuses_a_password_in_values(engine, values_of, env):
    values = values_of(env)
    set_in(("dagster", "postgresql", "postgresqlPassword"), "hunter2")(values)
    with pytest.raises(HelmEngineError, match="postgresqlPassword must not be set"):
        render(engine, values)


@pytest.mark.parametrize("env", ENVS)
def test_render_refuses_the_official_single_ingress(engine, values_of, env):
    values = values_of(env)
    set_in(("dagster", "ingress", "enabled"), True)(values)
    with pytest.raises(HelmEngineError, match="dagster.ingress.enabled must be false"):
        render(engine, values)


@pytest.mark.parametrize("env", ENVS)
def test_render_refuses_a_read_only_ingress_without_the_read_only_webserver(engine, values_of, env):
    values = values_of(env)
    set_in(("ingress", "readOnly"), {"enabled": True, "host": f"read-only.{env}.example.com"})(values)
    values["dagster"]["dagsterWebserver"]["enableReadOnly"] = False
    with pytest.raises(HelmEngineError, match="ingress.readOnly.enabled needs dagster.dagsterWebserver.enableReadOnly"):
        render(engine, values)


@pytest.mark.parametrize("env", ENVS)
def test_render_refuses_an_external_secret_without_a_store(engine, values_of, env):
    values = values_of(env)
    values["postgresPassword"]["source"] = "externalSecret"
    set_in(("postgresPassword", "externalSecret", "secretStoreRef", "name"), "")(values)
    with pytest.raises(HelmEngineError, match="secretStoreRef.name"):
        render(engine, values)


@pytest.mark.parametrize("env", ENVS)
def test_render_requires_the_secret_name(engine, values_of, env):
    values = values_of(env)
    values["global"]["postgresqlSecretName"] = ""
    with pytest.raises(HelmEngineError, match="postgresqlSecretName"):
        render(engine, values)


# -- what the templates produce -------------------------------------------------------------------
WEBSERVER_INGRESSES = {  # ingress.<kind>: (the Ingress, the Service it routes to, its label value)
    "admin": ("dagster-webserver-admin", "dagster-dagster-webserver", "admin"),
    "readOnly": ("dagster-webserver-read-only", "dagster-dagster-webserver-read-only", "read-only"),
}


@pytest.mark.parametrize("env", ENVS)
def test_one_ingress_per_enabled_webserver_with_its_own_host_and_annotations(rendered, env_values, env):
    values = with_chart_defaults(env_values[env])
    enabled = [kind for kind in WEBSERVER_INGRESSES if values["ingress"][kind]["enabled"]]
    ingresses = objects_of(rendered[env], "Ingress")
    assert set(ingresses) == {WEBSERVER_INGRESSES[kind][0] for kind in enabled}
    port = values["dagster"]["dagsterWebserver"]["service"]["port"]
    for kind in enabled:
        name, service, label = WEBSERVER_INGRESSES[kind]
        own, rule = values["ingress"][kind], ingresses[name]["spec"]["rules"][0]
        assert rule["host"] == own["host"]
        assert rule["http"]["paths"][0]["backend"]["service"] == {"name": service, "port": {"number": port}}
        assert (ingresses[name]["metadata"].get("annotations") or {}) == (own.get("annotations") or {})
        assert ingresses[name]["metadata"]["labels"][f"{COMPANY.label_domain}/webserver"] == label


PREVIEW_EGRESS = {
    "to": [
        {"podSelector": {"matchLabels": {"component": "user-deployments", f"{COMPANY.label_domain}/preview": "true"}}}
    ],
    "ports": [{"protocol": "TCP", "port": COMPANY.grpc_port}],
}


def test_network_policies_default_deny_and_the_allowed_flows(rendered, env_values):
    for env, objects in rendered.items():
        policies = objects_of(objects, "NetworkPolicy")
        deny = policies["dagster-default-deny"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        web = policies["dagster-webserver-from-ingress"]["spec"]
        assert web["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 80}]
        assert web["ingress"][0]["from"][0]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
        }
        for who in ("core", "runs"):
            pg = policies[f"dagster-{who}-to-postgres"]["spec"]["egress"][0]
            assert pg["to"] == [{"ipBlock": {"cidr": c}} for c in env_values[env]["networkPolicy"]["postgres"]["cidrs"]]
            assert pg["ports"] == [{"protocol": "TCP", "port": 5432}]
            code = policies[f"dagster-{who}-to-code-servers"]["spec"]["egress"]
            assert code == [
                {
                    "to": [
                        {"podSelector": {"matchLabels": {"component": "user-deployments", "deployment": loc["name"]}}}
                    ],
                    "ports": [{"protocol": "TCP", "port": loc["port"]}],
                }
                for loc in env_values[env]["codeLocations"]
            ] + [PREVIEW_EGRESS] * bool(env_values[env]["previews"]["enabled"])  # tests/helm/test_previews.py
        for loc in env_values[env]["codeLocations"]:
            assert f"dagster-code-server-{loc['name']}" in policies
        assert "dagster-migrate-to-postgres" in policies
        # The upgrade's pg_dump Job (helm/upgrade.py) may reach exactly Postgres and the bucket.
        backup = policies["dagster-backup-to-postgres-and-object-store"]["spec"]
        pod_labels = backup_job(env, "dagster-backup-test")["spec"]["template"]["metadata"]["labels"]
        assert backup["podSelector"] == {"matchLabels": pod_labels}
        assert backup["egress"] == [
            policies["dagster-core-to-postgres"]["spec"]["egress"][0],
            policies["dagster-core-to-object-store"]["spec"]["egress"][0],
        ]


@pytest.mark.parametrize("env", ENVS)
def test_a_pdb_for_each_webserver_the_environment_runs(rendered, env_values, env):
    values = with_chart_defaults(env_values[env])
    components = ["dagster-webserver"] + ["dagster-webserver-read-only"] * bool(
        values["dagster"]["dagsterWebserver"].get("enableReadOnly")
    )
    pdbs = objects_of(rendered[env], "PodDisruptionBudget")
    assert values["podDisruptionBudget"]["enabled"]
    assert set(pdbs) == {f"dagster-{component}" for component in components}
    for component in components:
        assert pdbs[f"dagster-{component}"]["spec"] == {
            "maxUnavailable": values["podDisruptionBudget"]["maxUnavailable"],
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "dagster",
                    "app.kubernetes.io/instance": "dagster",
                    "component": component,
                }
            },
        }


@pytest.mark.parametrize("env", ENVS)
def test_postgres_password_secret_wiring(rendered, env_values, env):
    values = with_chart_defaults(env_values[env])
    external = objects_of(rendered[env], "ExternalSecret")
    if values["postgresPassword"]["source"] == "externalSecret":
        (es,) = external.values()
        assert es["spec"]["target"]["name"] == values["global"]["postgresqlSecretName"]
        assert es["spec"]["data"][0]["secretKey"] == "postgresql-password"  # the key the official chart reads
    else:  # existingSecret: the Secret exists already; the chart renders neither a Secret nor an ExternalSecret.
        kinds = {o["kind"] for o in rendered[env]}
        assert "ExternalSecret" not in kinds and "Secret" not in kinds
