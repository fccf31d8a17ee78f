"""The metrics flow on the cluster (values `metrics`): the exporter's Deployment and Service from the ops image, the
ServiceMonitor and PrometheusRule (kube-prometheus-stack), the dashboard ConfigMap, and the NetworkPolicies that let
only the monitoring namespace scrape it. Rendered by the real Helm engine from each environment's values."""

from __future__ import annotations

import json

import pytest
import yaml

from dagster_platform.metrics import rules

from .helpers import (
    ENVS,
    edit_yaml,
    env_file,
    objects_of,
    platform_check_errors,
    render,
    set_in,
    use_values_dir,
    with_chart_defaults,
)

NAME = rules.EXPORTER_JOB  # the Service's name is the scrape job Prometheus labels the exporter's series with


def metrics_values(values):
    return with_chart_defaults(values)["metrics"]


def enabled_envs(env_values):
    return [env for env in ENVS if metrics_values(env_values[env])["enabled"]]


@pytest.fixture
def on(env_values, env):
    if not metrics_values(env_values[env])["enabled"]:
        pytest.skip(f"metrics are not enabled in {env}")


@pytest.mark.parametrize("env", ENVS)
def test_exporter_runs_the_ops_image_against_the_clusters_instance(rendered, env_values, env, on):
    values = env_values[env]
    ops = values["dagster"]["dagster-user-deployments"]["deployments"][0]
    deployment = objects_of(rendered[env], "Deployment")[NAME]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{ops['image']['repository']}:{ops['image']['tag']}"
    assert container["command"] == ["python", "-m", "platform_ops.exporter"]
    assert f"--port={metrics_values(values)['port']}" in container["args"]
    # The exporter only reads: the read-only webserver when there is one.
    readonly = values["dagster"]["dagsterWebserver"].get("enableReadOnly")
    webserver = "dagster-dagster-webserver-read-only" if readonly else "dagster-dagster-webserver"
    port = values["dagster"]["dagsterWebserver"]["service"]["port"]
    assert f"--webserver-url=http://{webserver}:{port}" in container["args"]
    env_vars = {e["name"]: e for e in container["env"]}
    assert (
        env_vars["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == values["global"]["postgresqlSecretName"]
    )
    assert pod["volumes"] == [{"name": "dagster-instance", "configMap": {"name": "dagster-instance"}}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = objects_of(rendered[env], "Service")[NAME]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    metrics_port = metrics_values(values)["port"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": metrics_port, "targetPort": "metrics", "protocol": "TCP"}
    ]


@pytest.mark.parametrize("env", ENVS)
def test_service_monitor_and_prometheus_rule_are_what_prometheus_selects(rendered, env_values, env, on):
    metrics = metrics_values(env_values[env])
    monitor = objects_of(rendered[env], "ServiceMonitor")[NAME]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = objects_of(rendered[env], "Service")[NAME]
    assert all(service["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["interval"] == metrics["scrapeInterval"]
    rule = objects_of(rendered[env], "PrometheusRule")[NAME]
    for obj in (monitor, rule):
        assert metrics["selectorLabels"].items() <= obj["metadata"]["labels"].items()
    # The PrometheusRule is the repo's one rule file, rendered with this environment's thresholds.
    assert rule["spec"] == yaml.safe_load(rules.render(rules.substitutions(env_values[env])))
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {r["alert"] for r in rules.rules(rules.RULES_FILE.read_text())}
    for name, alert in alerts.items():
        assert alert["annotations"]["runbook_url"].endswith(f"docs/operations.md#{name.lower()}")
        assert "${" not in json.dumps(alert)


@pytest.mark.parametrize("env", ENVS)
def test_dashboard_configmap_is_picked_up_by_the_grafana_sidecar(rendered, env, on):
    config_map = objects_of(rendered[env], "ConfigMap")[f"{NAME}-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (dashboard,) = (json.loads(text) for text in config_map["data"].values())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exported = set(rules.exported_metrics()) | rules.NON_EXPORTER_METRICS
    assert set().union(*(rules.metric_names(e) for e in exprs)) <= exported


@pytest.mark.parametrize("env", ENVS)
def test_only_the_monitoring_namespace_reaches_the_exporter(rendered, env_values, env, on):
    metrics = metrics_values(env_values[env])
    policies = objects_of(rendered[env], "NetworkPolicy")
    pod_labels = objects_of(rendered[env], "Deployment")[NAME]["spec"]["template"]["metadata"]["labels"]
    exporter = policies[f"{NAME}-from-monitoring"]["spec"]
    assert exporter["podSelector"] == {"matchLabels": pod_labels}
    namespace = {"matchLabels": {"kubernetes.io/metadata.name": metrics["monitoringNamespace"]}}
    assert exporter["ingress"] == [
        {"from": [{"namespaceSelector": namespace}], "ports": [{"protocol": "TCP", "port": metrics["port"]}]}
    ]
    # Its egress: Postgres (as every Dagster pod) and the webservers' GraphQL, which admit it.
    assert exporter["egress"][0] == policies["dagster-core-to-postgres"]["spec"]["egress"][0]
    webserver = policies["dagster-webserver-from-metrics"]["spec"]
    assert webserver["ingress"][0]["from"] == [{"podSelector": {"matchLabels": pod_labels}}]
    # Nothing else admits traffic to the exporter's pods.
    others = [
        p for n, p in policies.items() if n != f"{NAME}-from-monitoring" and "Ingress" in p["spec"]["policyTypes"]
    ]
    assert not [p for p in others if p["spec"]["podSelector"].get("matchLabels") == pod_labels]


@pytest.mark.parametrize("env", ENVS)
def test_metrics_off_renders_none_of_it(engine, values_of, env):
    values = values_of(env)
    values.setdefault("metrics", {})["enabled"] = False
    objects = render(engine, values)
    assert not [o for o in objects if o["metadata"]["name"].startswith(NAME)]
    assert not [o for o in objects if o["kind"] in ("ServiceMonitor", "PrometheusRule")]


def test_platform_check_names_bad_metrics_values_in_one_line_each(monkeypatch, capsys, values_dir):
    env = ENVS[0]
    edit_yaml(env_file(values_dir, env), set_in(("metrics", "monitoringNamespace"), ""))
    edit_yaml(env_file(values_dir, env), set_in(("metrics", "alerts", "daemonHeartbeatFor"), "one minute"))
    use_values_dir(monkeypatch, values_dir)
    errors = platform_check_errors(monkeypatch, capsys, "VALUES_DIR", values_dir, env)
    lines = [line.strip() for line in errors if "[metrics]" in line]
    assert lines == [
        f"[metrics] {env} values: metrics.enabled needs metrics.monitoringNamespace (the NetworkPolicy admits only its "
        "Prometheus)",
        f"[metrics] {env} values: metrics.alerts.daemonHeartbeatFor: 'one minute' is not a Prometheus duration (e.g. "
        "30s, 5m, 1h)",
    ], errors
    assert not any("Traceback" in line for line in errors)


def test_platform_check_names_a_rule_on_an_unexported_metric_in_one_line(monkeypatch, capsys, tmp_path):
    from dagster_platform.cli import main

    broken = tmp_path / "alerts.rules.yaml"
    broken.write_text(rules.RULES_FILE.read_text().replace("dagster_run_queue_length >", "dagster_queue_depth >", 1))
    monkeypatch.setattr(rules, "RULES_FILE", broken)
    monkeypatch.setenv("DAGSTER_PLATFORM_HELM", "sdk")
    assert main(["platform", "check", "--env", ENVS[0]]) == 1
    errors = [line.strip() for line in capsys.readouterr().err.splitlines() if line.strip().startswith("[")]
    assert errors == [
        f"[alert-rules] {broken}: alert QueueBacklog uses dagster_queue_depth, which platform_ops.exporter does not "
        "export (METRICS)"
    ]
