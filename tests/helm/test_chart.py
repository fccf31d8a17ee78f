"""The umbrella chart itself: dependency pin and lock, values.schema.json, lint, render-time guards.

All through the real Helm engine (helm binary, else Helm's Go SDK via helm-python-sdk).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.helm.engine import HelmEngineError
from dagster_platform.helm.policies import CHART_KEYS_YAML
from dagster_platform.helm.upgrade import backup_job
from dagster_platform.paths import dagster_version

from .helpers import ENVS, objects_of, render

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
    values = values_of("acceptance")
    node = values
    for part in path:
        node = node[part]
    node[key] = "x"
    with pytest.raises(HelmEngineError, match="additional properties|additionalProperties") as err:
        render(engine, values)
    assert key in str(err.value)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("environment", "name"), "staging", "environment/name"),
        (("postgresPassword", "source"), "inline", "postgresPassword/source"),
        (("networkPolicy", "postgres", "cidrs"), [], "networkPolicy/postgres/cidrs"),
        (("codeLocations",), [{"name": "Bad_Name", "port": 4000}], "codeLocations/0/name"),
    ],
)
def test_schema_rejects_invalid_values(engine, values_of, path, value, expected):
    values = values_of("production")
    node = values
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(HelmEngineError, match=expected):
        render(engine, values)


# -- guards in the templates (`fail`) -----------------------------------------------------------
def test_render_refuses_a_namespace_of_another_environment(engine, env_values):
    with pytest.raises(HelmEngineError, match="is not the namespace of environment"):
        render(engine, env_values["acceptance"], namespace="dagster-production")


def test_render_refuses_a_password_in_values(engine, values_of):
    values = values_of("production")
    values["dagster"]["postgresql"]["postgresqlPassword"] = "hunter2"
    with pytest.raises(HelmEngineError, match="postgresqlPassword must not be set"):
        render(engine, values)


def test_render_refuses_the_official_single_ingress(engine, values_of):
    values = values_of("production")
    values["dagster"]["ingress"]["enabled"] = True
    with pytest.raises(HelmEngineError, match="dagster.ingress.enabled must be false"):
        render(engine, values)


def test_render_refuses_a_read_only_ingress_without_the_read_only_webserver(engine, values_of):
    values = values_of("production")
    values["dagster"]["dagsterWebserver"]["enableReadOnly"] = False
    with pytest.raises(HelmEngineError, match="enableReadOnly"):
        render(engine, values)


def test_render_refuses_an_external_secret_without_a_store(engine, values_of):
    values = values_of("acceptance")
    values["postgresPassword"]["externalSecret"]["secretStoreRef"]["name"] = ""
    with pytest.raises(HelmEngineError, match="secretStoreRef.name"):
        render(engine, values)


def test_render_requires_the_secret_name(engine, values_of):
    values = values_of("acceptance")
    values["global"]["postgresqlSecretName"] = ""
    with pytest.raises(HelmEngineError, match="postgresqlSecretName"):
        render(engine, values)


# -- what the templates produce -------------------------------------------------------------------
def test_one_ingress_per_webserver_with_its_own_annotations(rendered):
    ingresses = objects_of(rendered["production"], "Ingress")
    assert set(ingresses) == {"dagster-webserver-admin", "dagster-webserver-read-only"}
    admin, read_only = ingresses["dagster-webserver-admin"], ingresses["dagster-webserver-read-only"]
    backend = lambda ing: ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]  # noqa: E731
    assert backend(admin) == {"name": "dagster-dagster-webserver", "port": {"number": 80}}
    assert backend(read_only) == {"name": "dagster-dagster-webserver-read-only", "port": {"number": 80}}
    assert admin["metadata"]["annotations"] != read_only["metadata"]["annotations"]
    assert "whitelist-source-range" in " ".join(admin["metadata"]["annotations"])
    assert set(objects_of(rendered["acceptance"], "Ingress")) == {"dagster-webserver-admin"}


PREVIEW_EGRESS = {
    "to": [{"podSelector": {"matchLabels": {"component": "user-deployments", "platform.acme.io/preview": "true"}}}],
    "ports": [{"protocol": "TCP", "port": 4000}],
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
        assert "dagster-code-server-example-pipelines" in policies
        assert "dagster-migrate-to-postgres" in policies
        # The upgrade's pg_dump Job (helm/upgrade.py) may reach exactly Postgres and the bucket.
        backup = policies["dagster-backup-to-postgres-and-object-store"]["spec"]
        pod_labels = backup_job(env, "dagster-backup-test")["spec"]["template"]["metadata"]["labels"]
        assert backup["podSelector"] == {"matchLabels": pod_labels}
        assert backup["egress"] == [
            policies["dagster-core-to-postgres"]["spec"]["egress"][0],
            policies["dagster-core-to-object-store"]["spec"]["egress"][0],
        ]


def test_pdbs_for_the_webservers(rendered):
    assert set(objects_of(rendered["production"], "PodDisruptionBudget")) == {
        "dagster-dagster-webserver",
        "dagster-dagster-webserver-read-only",
    }
    (pdb,) = objects_of(rendered["acceptance"], "PodDisruptionBudget").values()
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "dagster",
                "app.kubernetes.io/instance": "dagster",
                "component": "dagster-webserver",
            }
        },
    }


def test_postgres_password_secret_wiring(rendered, env_values):
    (es,) = objects_of(rendered["acceptance"], "ExternalSecret").values()
    assert es["spec"]["target"]["name"] == env_values["acceptance"]["global"]["postgresqlSecretName"]
    assert es["spec"]["data"][0]["secretKey"] == "postgresql-password"  # the key the official chart reads
    # production: the Secret exists already; the chart renders neither a Secret nor an ExternalSecret.
    kinds = {o["kind"] for o in rendered["production"]}
    assert "ExternalSecret" not in kinds and "Secret" not in kinds
