"""Preview code locations on the cluster (issue 14): the umbrella chart's NetworkPolicies for them, only where
`previews.enabled` (acceptance), and production refusing them in one line. Values in, exact fields out."""

from __future__ import annotations

import pytest

from dagster_platform.helm import policies
from dagster_platform.helm.engine import HelmEngineError

from .helpers import objects_of, render

CORE = ["dagster-webserver", "dagster-webserver-read-only", "dagster-daemon"]
# What the preview job's dagster-user-deployments release puts on its code-server pods: the subchart's own
# labels plus the deployment's `labels` (platform.acme.io/preview).
PREVIEW_POD = {
    "app.kubernetes.io/name": "dagster-user-deployments",
    "app.kubernetes.io/instance": "example-pipelines-mr-17",
    "component": "user-deployments",
    "deployment": "example-pipelines-mr-17",
    "platform.acme.io/preview": "true",
}
PREVIEW_SELECTOR = {"matchLabels": {"component": "user-deployments", "platform.acme.io/preview": "true"}}


def selects(selector, labels):
    """Kubernetes' label-selector semantics for matchLabels and In expressions."""
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


def test_acceptance_preview_code_servers_accept_grpc_from_core_and_run_pods(rendered):
    policy = objects_of(rendered["acceptance"], "NetworkPolicy")["dagster-preview-code-servers"]
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
                "ports": [{"protocol": "TCP", "port": 4000}],  # platform/usercode.yaml grpc_port
            }
        ],
    }
    assert selects(policy["spec"]["podSelector"], PREVIEW_POD)


@pytest.mark.parametrize("who", ["core", "runs"])
def test_acceptance_core_and_run_pods_may_dial_previews(rendered, who):
    egress = objects_of(rendered["acceptance"], "NetworkPolicy")[f"dagster-{who}-to-code-servers"]["spec"]["egress"]
    assert egress[-1] == {"to": [{"podSelector": PREVIEW_SELECTOR}], "ports": [{"protocol": "TCP", "port": 4000}]}


def test_previews_reach_postgres_like_every_code_server(rendered):
    policy = objects_of(rendered["acceptance"], "NetworkPolicy")["dagster-code-servers-to-postgres"]
    assert selects(policy["spec"]["podSelector"], PREVIEW_POD)
    assert policy["spec"]["policyTypes"] == ["Egress"]


def test_a_preview_is_not_let_in_by_a_registered_locations_policy(rendered):
    nps = objects_of(rendered["acceptance"], "NetworkPolicy")
    assert not selects(nps["dagster-code-server-example-pipelines"]["spec"]["podSelector"], PREVIEW_POD)


def test_production_renders_nothing_for_previews(rendered):
    nps = objects_of(rendered["production"], "NetworkPolicy")
    assert "dagster-preview-code-servers" not in nps
    for who in ("core", "runs"):
        rules = nps[f"dagster-{who}-to-code-servers"]["spec"]["egress"]
        assert all("deployment" in rule["to"][0]["podSelector"]["matchLabels"] for rule in rules)


def test_previews_port_follows_the_values(engine, values_of):
    values = values_of("acceptance")
    values["previews"]["grpcPort"] = 4100
    nps = objects_of(render(engine, values), "NetworkPolicy")
    assert nps["dagster-preview-code-servers"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 4100}]
    assert nps["dagster-core-to-code-servers"]["spec"]["egress"][-1]["ports"] == [{"protocol": "TCP", "port": 4100}]


def test_production_with_previews_enabled_is_one_line_of_the_checks(values_of):
    values = values_of("production")
    values["previews"]["enabled"] = True
    found = [str(v) for v in policies.check_required_settings("production", values, "production values")]
    assert found == [
        "[previews] production values: previews.enabled is true in production; previews run in acceptance only: "
        "set it there alone"
    ]
    assert policies.check_required_settings("acceptance", values_of("acceptance"), "acceptance values") == []


def test_production_with_previews_enabled_does_not_render(engine, values_of):
    values = values_of("production")
    values["previews"]["enabled"] = True
    with pytest.raises(HelmEngineError, match="previews.enabled must be false in production"):
        render(engine, values)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("maxPerLocation", 0, "minimum"), ("grpcPort", "4000", "integer"), ("enable", True, "additional")],
)
def test_schema_rejects_a_wrong_previews_block(engine, values_of, key, value, message):
    values = values_of("acceptance")
    values["previews"][key] = value
    with pytest.raises(HelmEngineError, match=f"(?i){message}"):
        render(engine, values)
