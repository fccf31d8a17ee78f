"""Preview code locations on the cluster (issue 14): the umbrella chart's NetworkPolicies for them, only where
`previews.enabled` (its environment file), and a production-tier environment refusing them in one line. Values in,
exact fields out."""

from __future__ import annotations

import pytest

from dagster_platform.helm import policies
from dagster_platform.helm.engine import HelmEngineError

from .helpers import (
    COMPANY,
    ENVS,
    NO_PREVIEW_ENVS,
    NON_PRODUCTION_ENVS,
    PREVIEW_ENVS,
    PRODUCTION_ENVS,
    declared,
    objects_of,
    render,
)

CORE = ["dagster-webserver", "dagster-webserver-read-only", "dagster-daemon"]
PREVIEW_LABEL = f"{COMPANY.label_domain}/preview"  # platform/company.yaml label_domain
# What the preview job's dagster-user-deployments release puts on its code-server pods: the subchart's own
# labels plus the deployment's `labels` (<label_domain>/preview).
PREVIEW_POD = {
    "app.kubernetes.io/name": "dagster-user-deployments",
    "app.kubernetes.io/instance": "sales-pipelines-mr-17",
    "component": "user-deployments",
    "deployment": "sales-pipelines-mr-17",
    PREVIEW_LABEL: "true",
}
PREVIEW_SELECTOR = {"matchLabels": {"component": "user-deployments", PREVIEW_LABEL: "true"}}
GRPC = [{"protocol": "TCP", "port": COMPANY.grpc_port}]  # platform/company.yaml grpc_port


def selects(selector, labels):
    """Kubernetes' label-selector semantics for matchLabels and In expressions."""
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


@pytest.mark.parametrize("env", PREVIEW_ENVS)
def test_preview_code_servers_accept_grpc_from_core_and_run_pods(rendered, env):
    policy = objects_of(rendered[env], "NetworkPolicy")["dagster-preview-code-servers"]
    assert policy["spec"] == {
        "podSelector": PREVIEW_SELECTOR,
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchExpressions": [{"key": "component", "operator": "In", "values": CORE}]}},
                    {
                        "podSelector": {
                            "matchLabels": {"app.kubernetes.io/part-of": "dagster"},
                            "matchExpressions": [
                                {
                                    "key": "app.kubernetes.io/component",
                                    "operator": "In",
                                    "values": ["run_worker", "step_worker"],
                                }
                            ],
                        }
                    },
                ],
                "ports": GRPC,
            }
        ],
    }
    assert selects(policy["spec"]["podSelector"], PREVIEW_POD)


@pytest.mark.parametrize("who", ["core", "runs"])
@pytest.mark.parametrize("env", PREVIEW_ENVS)
def test_core_and_run_pods_may_dial_previews(rendered, env, who):
    egress = objects_of(rendered[env], "NetworkPolicy")[f"dagster-{who}-to-code-servers"]["spec"]["egress"]
    assert egress[-1] == {"to": [{"podSelector": PREVIEW_SELECTOR}], "ports": GRPC}


@pytest.mark.parametrize("env", PREVIEW_ENVS)
def test_previews_reach_postgres_like_every_code_server(rendered, env):
    policy = objects_of(rendered[env], "NetworkPolicy")["dagster-code-servers-to-postgres"]
    assert selects(policy["spec"]["podSelector"], PREVIEW_POD)
    assert policy["spec"]["policyTypes"] == ["Egress"]


@pytest.mark.parametrize("env", PREVIEW_ENVS)
def test_a_preview_is_not_let_in_by_a_registered_locations_policy(rendered, env_values, env):
    nps = objects_of(rendered[env], "NetworkPolicy")
    for loc in env_values[env]["codeLocations"]:
        assert not selects(nps[f"dagster-code-server-{loc['name']}"]["spec"]["podSelector"], PREVIEW_POD)


@pytest.mark.parametrize("env", NO_PREVIEW_ENVS)
def test_an_environment_without_previews_renders_nothing_for_them(rendered, env):
    nps = objects_of(rendered[env], "NetworkPolicy")
    assert "dagster-preview-code-servers" not in nps
    for who in ("core", "runs"):
        rules = nps[f"dagster-{who}-to-code-servers"]["spec"]["egress"]
        assert all("deployment" in rule["to"][0]["podSelector"]["matchLabels"] for rule in rules)


@pytest.mark.parametrize("env", PREVIEW_ENVS)
def test_previews_port_follows_the_values(engine, values_of, env):
    values = values_of(env)
    values["previews"]["grpcPort"] = 4100
    nps = objects_of(render(engine, values), "NetworkPolicy")
    assert nps["dagster-preview-code-servers"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 4100}]
    assert nps["dagster-core-to-code-servers"]["spec"]["egress"][-1]["ports"] == [{"protocol": "TCP", "port": 4100}]


def test_previews_are_on_only_where_an_environment_file_enables_them(env_values):
    for env in ENVS:
        assert bool(env_values[env]["previews"]["enabled"]) is declared(env).previews


@pytest.mark.parametrize("env", PRODUCTION_ENVS)
def test_a_production_tier_environment_with_previews_enabled_is_one_line_of_the_checks(values_of, env):
    values = values_of(env)
    values["previews"]["enabled"] = True
    found = [str(v) for v in policies.check_required_settings(env, values, f"{env} values")]
    assert found == [
        f"[previews] {env} values: previews.enabled is true in {env}, a production-tier environment; previews never "
        "run there: enable them in a staging environment's file instead"
    ]


@pytest.mark.parametrize("env", NON_PRODUCTION_ENVS)
def test_other_tiers_may_enable_previews(values_of, env):
    values = values_of(env)
    values["previews"]["enabled"] = True
    assert policies.check_required_settings(env, values, f"{env} values") == []


@pytest.mark.parametrize("env", PRODUCTION_ENVS)
def test_a_production_tier_environment_with_previews_enabled_does_not_render(engine, values_of, env):
    values = values_of(env)
    values["previews"]["enabled"] = True
    with pytest.raises(HelmEngineError, match="previews.enabled must be false"):
        render(engine, values)


@pytest.mark.parametrize("env", PRODUCTION_ENVS)
def test_the_render_refuses_previews_by_tier_whatever_the_environment_is_called(engine, values_of, env):
    values = values_of(env)
    values["previews"]["enabled"] = True
    values["environment"]["name"] = "live"  # a production-tier environment may be called anything
    with pytest.raises(HelmEngineError, match="previews.enabled must be false"):
        render(engine, values)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("maxPerLocation", 0, "minimum"), ("grpcPort", "4000", "integer"), ("enable", True, "additional")],
)
def test_schema_rejects_a_wrong_previews_block(engine, values_of, key, value, message):
    values = values_of(ENVS[0])
    values["previews"][key] = value
    with pytest.raises(HelmEngineError, match=f"(?i){message}"):
        render(engine, values)
