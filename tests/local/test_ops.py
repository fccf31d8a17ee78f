"""The platform's operations location (platform/ops/): run-failure alerts, run retention and the daemon
heartbeat check on the session stack, whose alert receiver writes every alert to <state dir>/alerts.jsonl;
the alert body and a refused alert against the real receiver on its own port (fast).

File order matters: the heartbeat test kills the daemon (and restarts it) last.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from dagster_platform import net
from dagster_platform.local import lifecycle, locations, postgres
from dagster_platform.paths import ROOT
from dagster_platform.platform_config import environment_names
from tests.local.helpers import CANARY, OPS, alerts, start_alert_receiver, wait_until

OPS_DIR = ROOT / "platform" / "ops"
SENSOR = "platform_run_failure_alert"
FAILED_ON_PURPOSE = "RuntimeError: platform-canary fails on purpose"

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 50) { status timestamp error { message } } } }
    ... on PythonError { message }
  }
}"""


def load_alerts_module():
    """platform_ops.alerts is standard library only: loaded from its file into the platform's interpreter."""
    spec = importlib.util.spec_from_file_location("platform_ops_alerts", OPS_DIR / "src" / "platform_ops" / "alerts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- fast: no stack -----------------------------------------------------------------------------------------
def test_ops_location_pins_the_platforms_dagster():
    def pins(pyproject: Path) -> dict[str, str]:
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
        return dict(dep.split("==") for dep in deps if dep.split("==")[0].startswith("dagster"))

    platform, ops = pins(ROOT / "pyproject.toml"), pins(OPS_DIR / "pyproject.toml")
    # dagster-postgres, -k8s, -aws: the code server, its run workers and the heartbeat check load the cluster's instance
    assert ops == {name: platform[name] for name in ("dagster", "dagster-postgres", "dagster-k8s", "dagster-aws")}, ops
    locked = {p["name"]: p["version"] for p in tomllib.loads((OPS_DIR / "uv.lock").read_text())["package"]}
    assert {name: locked[name] for name in ops} == ops
    direct = tomllib.loads((OPS_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    # Beyond Dagster only the metrics exporter's prometheus-client (webhooks are posted with urllib).
    others = [dep for dep in direct if not dep.startswith("dagster")]
    assert [dep.split(">=")[0] for dep in others] == ["prometheus-client"], f"nothing unneeded: {direct}"
    assert locations.default_locations()[1].name == OPS and locations.OPS_LOCATION == OPS


def test_run_failure_alert_body_is_a_chat_webhook_message(tmp_path, monkeypatch):
    module = load_alerts_module()
    env = environment_names()[0]  # the ConfigMap dagster-platform-ops-env of that environment sets it
    monkeypatch.setenv("PLATFORM_ENV", env)
    monkeypatch.setenv("PLATFORM_UI_URL", f"https://dagster.{env}.example/")
    port, out = net.free_port(), tmp_path / "alerts.jsonl"
    receiver = start_alert_receiver(port, out)
    try:
        payload = module.run_failure_body("run-123", "orders_job", "sales", "ValueError: bad row")
        assert module.post(payload, f"http://127.0.0.1:{port}/hooks/secret-token") == 200
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    [alert] = alerts(out)
    # Slack and Mattermost show `text`; the facts again as fields under `props`.
    assert alert["text"] == (
        f"[{env}] Dagster run failed: job `orders_job` in code location `sales`, run `run-123`: "
        f"ValueError: bad row\nhttps://dagster.{env}.example/runs/run-123"
    )
    assert alert["props"] == {
        "kind": "run_failure",
        "environment": env,
        "run_id": "run-123",
        "job": "orders_job",
        "location": "sales",
        "error": "ValueError: bad row",
        "url": f"https://dagster.{env}.example/runs/run-123",
    }


@pytest.mark.parametrize(("status", "attempts"), [(500, 3), (404, 1)])
def test_a_webhook_answering_non_2xx_fails_the_post(tmp_path, status, attempts):
    module = load_alerts_module()
    port, out = net.free_port(), tmp_path / "alerts.jsonl"
    receiver = start_alert_receiver(port, out, status=status)
    try:
        with pytest.raises(module.AlertDeliveryError) as refused:
            module.post(module.body("test", "hello"), f"http://127.0.0.1:{port}/hooks/secret-token", backoff=0)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    message = str(refused.value)
    assert f"HTTP {status}" in message and f"{attempts} attempt(s)" in message, message
    assert "secret-token" not in message, "a webhook URL is a credential: errors name only its host"
    assert out.read_text() == ""
    posts = [line for line in out.with_suffix(".log").read_text().splitlines() if '"POST /hooks/' in line]
    assert len(posts) == attempts, posts  # 5xx retried, 4xx not


# --- on the session stack -----------------------------------------------------------------------------------
def sensor_ticks(client) -> list[dict]:
    selector = {"repositoryLocationName": OPS, "repositoryName": "__repository__", "sensorName": SENSOR}
    data = client.query(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    assert data["__typename"] == "Sensor", data
    return data["sensorState"]["ticks"]


@pytest.mark.slow
def test_a_failed_run_is_alerted_exactly_once_and_a_successful_run_not_at_all(stack, client):
    # The sensor's first tick sets its cursor to "now": only failures after it are alerted.
    wait_until(lambda: sensor_ticks(client), 180, f"the first tick of {SENSOR} (running by default)", interval=2)
    failed = client.launch_run(CANARY, "fail_job", tags={"test": "ops-alert"})
    succeeded = client.launch_run(CANARY, "canary_job", tags={"test": "ops-alert"})
    assert client.wait_run(failed, timeout=240)["status"] == "FAILURE"
    assert client.wait_run(succeeded, timeout=240)["status"] == "SUCCESS"
    [alert] = wait_until(lambda: alerts(stack.alerts_file, run_id=failed), 240, "the alert of the failed run")
    arrived = time.time()
    link = f"{stack.url}/runs/{failed}"
    assert alert["props"] == {
        "kind": "run_failure",
        "environment": "local",
        "run_id": failed,
        "job": "fail_job",
        "location": CANARY,
        "error": FAILED_ON_PURPOSE,
        "url": link,
    }
    assert alert["text"].startswith("[local] Dagster run failed: job `fail_job` in code location `platform-canary`")
    assert failed in alert["text"] and FAILED_ON_PURPOSE in alert["text"] and alert["text"].endswith(link)
    # A tick that started after the alert arrived and completed: the cursor kept the run from being alerted again.
    wait_until(
        lambda: [t for t in sensor_ticks(client) if t["timestamp"] > arrived and t["status"] != "STARTED"],
        240,
        f"a tick of {SENSOR} after the alert",
        interval=2,
    )
    assert len(alerts(stack.alerts_file, run_id=failed)) == 1, stack.alerts_file.read_text()
    assert alerts(stack.alerts_file, run_id=succeeded) == [], "a successful run is not alerted"
    assert not [t for t in sensor_ticks(client) if t["status"] == "FAILURE"], "no tick failed"


def counts(stack, run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """run_id → (rows in runs, rows in event_logs), straight from Postgres."""
    runs = dict(postgres.query(stack.pg, "SELECT run_id, COUNT(*) FROM runs WHERE run_id = ANY(%s) GROUP BY run_id",
                               (run_ids,)))  # fmt: skip
    events = dict(postgres.query(
        stack.pg, "SELECT run_id, COUNT(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY run_id", (run_ids,)
    ))  # fmt: skip
    return {run_id: (runs.get(run_id, 0), events.get(run_id, 0)) for run_id in run_ids}


@pytest.mark.slow
def test_run_retention_deletes_exactly_the_finished_runs_older_than_the_limit(stack, client):
    tags = {"test": "ops-retention"}
    old_done = [client.launch_run(CANARY, "canary_job", tags=tags) for _ in range(2)]
    old_done.append(client.launch_run(CANARY, "fail_job", tags=tags))
    young = client.launch_run(CANARY, "canary_job", tags=tags)
    for run_id in [*old_done, young]:
        assert client.wait_run(run_id, timeout=240)["status"] in ("SUCCESS", "FAILURE")
    # An old run still in flight: never deleted, whatever its age.
    napping = client.launch_run(CANARY, "nap_job", {"ops": {"nap": {"config": {"seconds": 600.0}}}}, tags=tags)
    try:
        wait_until(lambda: client.run(napping)["status"] == "STARTED", 240, "the nap run to start")
        old = [*old_done, napping]
        with contextlib.closing(stack.pg.connect()) as db, db, db.cursor() as cur:  # commits on leaving
            sql = "UPDATE runs SET create_timestamp = create_timestamp - interval '400 days' WHERE run_id = ANY(%s)"
            cur.execute(sql, (old,))
            assert cur.rowcount == len(old)
        before = counts(stack, [*old, young])
        assert all(rows == 1 and events > 0 for rows, events in before.values()), before

        retention = client.launch_run(OPS, "run_retention", {"ops": {"delete_old_runs": {"config": {"days": 365}}}})
        assert client.wait_run(retention, timeout=240)["status"] == "SUCCESS"

        after = counts(stack, [*old, young, retention])
        assert {run_id: after[run_id] for run_id in old_done} == dict.fromkeys(old_done, (0, 0)), after
        assert after[napping][0] == 1 and after[napping][1] >= before[napping][1], "a started run is never deleted"
        assert after[young][0] == 1 and after[young][1] == before[young][1], "a younger run is kept"
        assert after[retention][0] == 1, "the retention run keeps itself"
        messages = [row[0] for row in postgres.query(
            stack.pg, "SELECT event FROM event_logs WHERE run_id = %s", (retention,)
        )]  # fmt: skip
        assert any("deleted 3 finished runs older than 365 days" in m for m in messages), "it logs how many"
    finally:
        # Canceled, the run would leave a STARTING event with no SUCCESS/FAILURE (later tests count slots from
        # those): terminated, then deleted with its events.
        client.query("mutation T($id: String!) { terminateRun(runId: $id) { __typename } }", {"id": napping})
        wait_until(lambda: client.run(napping)["status"] in ("CANCELED", "FAILURE", "SUCCESS"), 120, "the nap to end")
        deleted = client.query("mutation D($id: String!) { deleteRun(runId: $id) { __typename } }", {"id": napping})
        assert deleted["deleteRun"]["__typename"] == "DeletePipelineRunSuccess", deleted


@pytest.mark.slow
def test_heartbeat_check_passes_then_alerts_once_when_the_daemon_is_dead(stack, client):
    sup = stack.supervisor
    ops_bin = Path(stack.locations[OPS]["dir"]) / ".venv" / "bin"
    env = {
        **lifecycle.base_env(stack.dagster_home, stack.pg, stack.store),
        "PLATFORM_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{sup.components['alert-receiver'].info['port']}/",
        "PLATFORM_ENV": "local",
        "PLATFORM_UI_URL": stack.url,
    }
    healthy = subprocess.run([str(ops_bin / "python"), "-m", "platform_ops.heartbeat"], env=env,
                             capture_output=True, text=True, timeout=180)  # fmt: skip
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.startswith("daemon heartbeat ok [local]: ") and healthy.stdout.count("\n") == 1
    before = len(alerts(stack.alerts_file, kind="daemon_heartbeat"))
    broken = subprocess.run([str(ops_bin / "platform-ops-heartbeat")], capture_output=True, text=True, timeout=180,
                            env={**env, "DAGSTER_DAEMON_HEARTBEAT_TOLERANCE": "soon"})  # fmt: skip
    assert broken.returncode == 2 and broken.stdout.count("\n") == 1, broken.stdout + broken.stderr
    assert broken.stdout.startswith(
        "daemon heartbeat check [local] FAILED: ValueError: DAGSTER_DAEMON_HEARTBEAT_TOLERANCE='soon' is not a whole "
    ), broken.stdout
    assert broken.stdout.rstrip().endswith("alert sent"), broken.stdout
    [failed_check] = alerts(stack.alerts_file, kind="daemon_heartbeat_check_failed")
    assert "Dagster daemon heartbeat check failed: ValueError" in failed_check["text"], failed_check

    os.kill(sup.components["daemon"].pid, signal.SIGKILL)
    try:
        wait_until(lambda: not sup.alive("daemon"), 30, "the daemon to exit after SIGKILL")
        tolerance = 1  # stale once the last heartbeat is older than 30 s (Dagster's interval) + 1 s
        wait_until(
            lambda: all((s["lastHeartbeatTime"] or 0) < time.time() - 33 - tolerance for s in client.daemon_statuses()),
            120,
            "every daemon heartbeat to be older than the tolerance",
            interval=2,
        )
        stale = subprocess.run([str(ops_bin / "platform-ops-heartbeat")], capture_output=True, text=True, timeout=180,
                               env={**env, "DAGSTER_DAEMON_HEARTBEAT_TOLERANCE": str(tolerance)})  # fmt: skip
        assert stale.returncode == 1, stale.stdout + stale.stderr
        assert stale.stdout.startswith("daemon heartbeat STALE [local]: ") and stale.stdout.count("\n") == 1
        assert stale.stdout.rstrip().endswith("alert sent"), stale.stdout
        new = alerts(stack.alerts_file, kind="daemon_heartbeat")[before:]
        assert len(new) == 1, new
        required = {s["daemonType"] for s in client.daemon_statuses()}
        assert set(new[0]["props"]["daemons"]) == required, (new[0], required)
        assert all(age > 30 + tolerance for age in new[0]["props"]["daemons"].values()), new[0]
        assert all(name in new[0]["text"] and name in stale.stdout for name in required), (new[0], stale.stdout)
    finally:
        lifecycle.restart_component(stack, "daemon")  # later tests need it
