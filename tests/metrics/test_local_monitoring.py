"""The laptop's monitoring configuration (src/dagster_platform/metrics/local.py), checked by Prometheus' and
Alertmanager's own tools: what `make stack` writes into <state dir>/monitoring/ is valid, loads the chart's rule
file with only the named local durations changed, and routes every alert to the stack's alert receiver."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from dagster_platform.metrics import local, rules

needs_tools = pytest.mark.skipif(
    shutil.which("promtool") is None or shutil.which("amtool") is None,
    reason="promtool and amtool (Debian: prometheus, prometheus-alertmanager) are not installed",
)


@pytest.fixture
def configs(tmp_path):
    return local.write_configs(tmp_path, exporter_port=9102, alertmanager_port=9093, webhook_url="http://127.0.0.1:1/")


@needs_tools
def test_prometheus_and_alertmanager_accept_the_written_configs(configs):
    checked = subprocess.run(["promtool", "check", "config", str(configs["prometheus"])],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules.rules(rules.RULES_FILE.read_text()))} rules found" in checked.stdout
    checked = subprocess.run(["amtool", "check-config", str(configs["alertmanager"])],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_local_rules_are_the_charts_with_the_named_durations_only(configs):
    local_rules = {r["alert"]: r for r in rules.rules(configs["rules"].read_text())}
    chart_rules = {r["alert"]: r for r in rules.rules(rules.render(rules.substitutions()))}
    assert local_rules.keys() == chart_rules.keys()
    for name, rule in chart_rules.items():
        # Only what a LOCAL_SUBSTITUTIONS name fills may differ.
        template = next(r for r in rules.rules(rules.RULES_FILE.read_text()) if r["alert"] == name)
        for key in ("expr", "for"):
            named = set(rules.PLACEHOLDER.findall(str(template[key])))
            if not named & set(rules.LOCAL_SUBSTITUTIONS):
                assert local_rules[name][key] == rule[key], (name, key)
        assert local_rules[name]["labels"] == rule["labels"]


def test_every_alert_goes_to_the_stacks_receiver_and_the_exporter_is_the_rules_job(configs):
    prometheus = yaml.safe_load(configs["prometheus"].read_text())
    assert [job["job_name"] for job in prometheus["scrape_configs"]] == [rules.EXPORTER_JOB]
    assert prometheus["global"]["scrape_interval"] == rules.LOCAL_INTERVALS["scrape_interval"]
    alertmanager = yaml.safe_load(configs["alertmanager"].read_text())
    assert alertmanager["route"]["receiver"] == local.RECEIVER
    [receiver] = alertmanager["receivers"]
    assert receiver["webhook_configs"] == [{"url": "http://127.0.0.1:1/", "send_resolved": True}]


def test_missing_prometheus_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without Prometheus or Alertmanager
    with pytest.raises(local.MonitoringUnavailable) as refused:
        local.preflight()
    message = str(refused.value)
    assert message.count("\n") == 0
    assert message == (
        "prometheus and prometheus-alertmanager not found (the stack's Prometheus and Alertmanager): "
        "apt-get install -y prometheus prometheus-alertmanager (`make test` installs them as root)"
    )
