"""The alert rules (helm/dagster-platform/files/alerts.rules.yaml) as Prometheus sees them: `promtool check rules`
and `promtool test rules` on the file rendered with the chart's default thresholds, every alert with a case that
fires and one that stays quiet, every metric a rule names exported, and the checks' one-line refusals."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import yaml

from dagster_platform.helm import values as helm_values
from dagster_platform.metrics import rules
from tests.helm.helpers import ENVS

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus) is not installed")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The rule file and its unit tests, rendered side by side (the tests name the rule file relatively)."""
    out = tmp_path_factory.mktemp("rules")
    subs = rules.substitutions()
    (out / rules.RULES_FILE.name).write_text(rules.render(subs))
    (out / rules.RULES_TEST_FILE.name).write_text(rules.render(subs, rules.RULES_TEST_FILE.read_text()))
    return out


def promtool(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_rendered_rule_file(rendered):
    result = promtool("check", "rules", rules.RULES_FILE.name, cwd=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules.rules(rules.RULES_FILE.read_text()))} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass(rendered):
    result = promtool("test", "rules", rules.RULES_TEST_FILE.name, cwd=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    alerts = {rule["alert"] for rule in rules.rules(rules.RULES_FILE.read_text())}
    groups = yaml.safe_load(rules.RULES_TEST_FILE.read_text())["tests"]
    assert all(group.get("name") for group in groups), "every promtool test group says what it proves (name)"
    cases = [case for group in groups for case in group.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts, "the rule file has no alerts"
    assert alerts - firing == set(), f"alerts without a case where they fire: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts without a case where they stay quiet: {sorted(alerts - quiet)}"
    assert {c["alertname"] for c in cases} <= alerts, "a case names an alert the rule file does not have"


def test_every_alert_links_its_runbook_section():
    """runbook_url points into docs/operations.md at a heading named after the alert (GitLab's anchor)."""
    operations = (helm_values.paths.ROOT / "docs" / "operations.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in operations.splitlines() if line.startswith("#")}
    for rule in rules.rules(rules.RULES_FILE.read_text()):
        url = rule["annotations"]["runbook_url"]
        assert url == "${runbookUrl}#" + rule["alert"].lower(), rule
        assert rule["alert"].lower() in headings, f"docs/operations.md has no section {rule['alert']}"


def test_every_metric_a_rule_names_is_exported_and_every_placeholder_has_a_value():
    assert rules.check_rule_metrics() == []
    exported = rules.exported_metrics()
    named = set().union(*(rules.metric_names(r["expr"]) for r in rules.rules(rules.RULES_FILE.read_text())))
    assert named - rules.NON_EXPORTER_METRICS <= set(exported) and named
    for env in ENVS:
        assert rules.check_metrics_values(helm_values.environment_values(env), env) == []


def test_local_substitutions_only_shorten_what_the_chart_sets():
    """The laptop's rules differ from the cluster's only in the named durations, each a key of metrics.alerts."""
    chart = rules.substitutions()
    local = rules.substitutions(local=True)
    assert set(rules.LOCAL_SUBSTITUTIONS) <= set(chart)
    assert {k for k in chart if chart[k] != local[k]} <= set(rules.LOCAL_SUBSTITUTIONS)


def test_metric_names_of_an_expression():
    expr = 'max by (location) (rate(dagster_a_total{status="x"}[5m])) > 3 and on(job) absent(up{job="j"} == 1)'
    assert rules.metric_names(expr) == {"dagster_a_total", "up"}


def test_a_rule_naming_an_unexported_metric_is_one_line(tmp_path):
    text = rules.RULES_FILE.read_text().replace("dagster_run_queue_length >", "dagster_run_queue_depth >", 1)
    broken = tmp_path / "alerts.rules.yaml"
    broken.write_text(text)
    assert [str(v) for v in rules.check_rule_metrics(broken)] == [
        f"[alert-rules] {broken}: alert QueueBacklog uses dagster_run_queue_depth, which platform_ops.exporter "
        "does not export (METRICS)"
    ]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (
            {"enabled": True, "monitoringNamespace": ""},
            "metrics.enabled needs metrics.monitoringNamespace (the NetworkPolicy admits only its Prometheus)",
        ),
        (
            {"alerts": {"daemonHeartbeatFor": "5 minutes"}},
            "metrics.alerts.daemonHeartbeatFor: '5 minutes' is not a Prometheus duration (e.g. 30s, 5m, 1h)",
        ),  # fmt: skip
        ({"alerts": {"queueBacklogRuns": "many"}}, "metrics.alerts.queueBacklogRuns: 'many' is not a number"),
        ({"scrapeInterval": "30"}, "metrics.scrapeInterval: '30' is not a Prometheus duration (e.g. 30s, 1m)"),
    ],
    ids=["no-monitoring-namespace", "not-a-duration", "not-a-number", "scrape-interval"],
)
@pytest.mark.parametrize("env", ENVS)
def test_bad_metrics_values_are_one_line_each(env, metrics, message):
    values = copy.deepcopy(helm_values.environment_values(env))
    values.setdefault("metrics", {})
    for key, value in metrics.items():
        if isinstance(value, dict):
            values["metrics"].setdefault(key, {}).update(value)
        else:
            values["metrics"][key] = value
    assert [str(v) for v in rules.check_metrics_values(values, f"{env} values")] == [
        f"[metrics] {env} values: {message}"
    ]
