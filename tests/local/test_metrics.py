"""The metrics flow on the session stack: the exporter's metrics, scraped by the stack's real Prometheus, evaluated
against the chart's rule file (local durations), and notified by the real Alertmanager to the stack's alert receiver
(<state dir>/alerts.jsonl): a failing run moves the failure metrics; a broken location, a stopped exporter and a
SIGKILLed daemon each reach the webhook as their alert, within a stated bound.

File order matters: the exporter and the daemon are stopped (and restarted) last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from dagster_platform.local import lifecycle
from dagster_platform.metrics import local as monitoring
from dagster_platform.metrics import rules
from tests.local.helpers import BROKEN, CANARY, PLATFORM_CLI, notified, sample, scrape, wait_until

# Prometheus' scrape and evaluation interval, the rule's `for:` and Alertmanager's group_wait, with room for a busy
# 2-core machine: from the moment a rule's condition holds to the webhook.
PIPELINE_BOUND_S = 20
LOCAL = rules.substitutions(local=True)


def urls(stack) -> dict[str, str]:
    return monitoring.urls(stack.state_dir)


def seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))  # the local durations are whole seconds


@pytest.mark.slow
def test_exporter_serves_every_declared_metric_and_prometheus_scrapes_it(stack, client):
    samples = scrape(urls(stack)["metrics-exporter"])
    names = {name for name, _ in samples}
    for name, kind in rules.exported_metrics().items():
        if name not in ("dagster_runs_recent", "dagster_runs_in_flight", "dagster_run_oldest_age_seconds",
                        "dagster_run_duration_seconds"):  # fmt: skip  # only once such runs exist
            assert name in names, f"{name} ({kind}) missing from the scrape"
    for location, state in client.locations().items():
        status = "ERROR" if state["error"] else "LOADED" if state["status"] == "LOADED" else "LOADING"
        assert sample(samples, "dagster_code_location_status", location=location, status=status) == 1.0
    required = {s["daemonType"] for s in client.daemon_statuses()}
    ages = {dict(labels)["daemon_type"]: v for (n, labels), v in samples.items() if n.startswith("dagster_daemon_")}
    assert set(ages) == required and all(0 <= age < 60 for age in ages.values()), ages
    assert sample(samples, "dagster_exporter_source_up", source="instance") == 1.0
    assert sample(samples, "dagster_exporter_source_up", source="webserver") == 1.0

    def targets() -> list[tuple[str, str]]:
        with urllib.request.urlopen(f"{urls(stack)['prometheus']}/api/v1/targets", timeout=10) as response:
            return [(t["labels"]["job"], t["health"]) for t in json.load(response)["data"]["activeTargets"]]

    # Prometheus applies discovered targets every 5 s.
    wait_until(lambda: targets() == [(rules.EXPORTER_JOB, "up")], 30, "Prometheus to scrape the exporter")
    status = subprocess.run([str(PLATFORM_CLI), "stack", "--state-dir", str(stack.state_dir), "status"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    for name in monitoring.COMPONENTS:
        assert f"{name}: {urls(stack)[name]}" in status.stdout, status.stdout


@pytest.mark.slow
def test_a_failing_run_moves_the_failure_metrics(stack, client):
    def failures() -> float:
        return sample(scrape(urls(stack)["metrics-exporter"]), "dagster_runs_finished_total",
                      location=CANARY, status="FAILURE") or 0.0  # fmt: skip

    before = failures()
    failed = client.launch_run(CANARY, "fail_job", tags={"test": "metrics"})
    assert client.wait_run(failed, timeout=240)["status"] == "FAILURE"
    wait_until(lambda: failures() == before + 1, 30, "the failure counter to count the failed run")
    samples = scrape(urls(stack)["metrics-exporter"])
    assert sample(samples, "dagster_runs_recent", location=CANARY, status="FAILURE") >= 1
    assert sample(samples, "dagster_run_duration_seconds", location=CANARY, job="fail_job", stat="max") > 0
    time.sleep(3)
    assert failures() == before + 1, "a failed run is counted once"


@pytest.mark.slow
def test_a_broken_location_reaches_the_webhook_as_code_location_load_error(stack, client):
    assert client.locations()[BROKEN]["error"], "the fixture location loads after all"
    wait_until(lambda: notified(stack.alerts_file, "CodeLocationLoadError", location=BROKEN), 120,
               f"CodeLocationLoadError for {BROKEN} at the webhook")  # fmt: skip
    loaded = [name for name, state in client.locations().items() if not state["error"]]
    for name in loaded:
        assert not notified(stack.alerts_file, "CodeLocationLoadError", location=name), f"{name} loads"
    [alert] = notified(stack.alerts_file, "CodeLocationLoadError", location=BROKEN)[:1]
    assert alert["annotations"]["runbook_url"].endswith("docs/operations.md#codelocationloaderror")


@pytest.mark.slow
def test_a_stopped_exporter_reaches_the_webhook_as_exporter_absent(stack):
    sup = stack.supervisor
    already = len(notified(stack.alerts_file, "ExporterAbsent"))
    stopped = time.monotonic()
    sup.stop("metrics-exporter")
    try:
        wait_until(lambda: len(notified(stack.alerts_file, "ExporterAbsent")) > already, 60,
                   "ExporterAbsent at the webhook", interval=0.2)  # fmt: skip
        took = time.monotonic() - stopped
        print(f"exporter stopped -> ExporterAbsent at the webhook: {took:.1f}s")
        assert took < seconds(LOCAL["exporterAbsentFor"]) + PIPELINE_BOUND_S
    finally:
        lifecycle.restart_component(stack, "metrics-exporter")
    wait_until(lambda: notified(stack.alerts_file, "ExporterAbsent", status="resolved"), 60,
               "ExporterAbsent resolved once the exporter is back")  # fmt: skip


@pytest.mark.slow
def test_a_killed_daemon_reaches_the_webhook_as_daemon_heartbeat_stale(stack, client):
    """SIGKILL → the oldest heartbeat ages past daemonHeartbeatMaxAgeSeconds (Dagster heartbeats every 30 s, so
    that takes threshold minus the heartbeat's age at the kill) → Prometheus → Alertmanager → the webhook."""
    sup = stack.supervisor
    threshold = float(LOCAL["daemonHeartbeatMaxAgeSeconds"])
    already = len(notified(stack.alerts_file, "DaemonHeartbeatStale"))
    ages = {dict(k[1])["daemon_type"]: v for k, v in scrape(urls(stack)["metrics-exporter"]).items()
            if k[0] == "dagster_daemon_heartbeat_age_seconds"}  # fmt: skip
    killed = time.time()
    os.kill(sup.components["daemon"].pid, signal.SIGKILL)
    try:
        wait_until(lambda: len(notified(stack.alerts_file, "DaemonHeartbeatStale")) > already, 180,
                   "DaemonHeartbeatStale at the webhook", interval=0.2)  # fmt: skip
        arrived = time.time()
        first = notified(stack.alerts_file, "DaemonHeartbeatStale")[already]
        daemon = first["labels"]["daemon_type"]
        stale_at = killed - ages[daemon] + threshold  # when its age passed the threshold
        print(f"daemon SIGKILLed -> DaemonHeartbeatStale ({daemon}) at the webhook: {arrived - killed:.1f}s; "
              f"{arrived - stale_at:.1f}s after its heartbeat passed {threshold:.0f}s")  # fmt: skip
        assert arrived - stale_at < seconds(LOCAL["daemonHeartbeatFor"]) + PIPELINE_BOUND_S
        assert arrived - killed < threshold + seconds(LOCAL["daemonHeartbeatFor"]) + PIPELINE_BOUND_S
        assert first["annotations"]["runbook_url"].endswith("docs/operations.md#daemonheartbeatstale")
    finally:
        lifecycle.restart_component(stack, "daemon")  # later tests need it
