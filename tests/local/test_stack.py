"""The production-like local stack, against the real processes and a real Postgres.

Order matters and is the file order: faults (code server killed, Postgres restarted) come late and leave
the stack healthy for the browser test, which doubles as a recovery check.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from dagster_platform import net, procs
from dagster_platform.local import lifecycle, locations, postgres
from tests.local.helpers import (
    ARTIFACTS,
    BROKEN,
    CANARY,
    EXAMPLE,
    PLATFORM_CLI,
    max_concurrent_runs,
    running_stack,
    wait_until,
)

pytestmark = pytest.mark.slow
# Debian's chromium, headless, as root, on a machine with no way out: no sandbox, no background traffic.
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def runs_in_postgres(stack) -> dict[str, str]:
    """run_id → status, straight from the instance database (not through Dagster)."""
    return dict(postgres.query(stack.pg, "SELECT run_id, status FROM runs"))


def event_types(stack, run_id: str) -> list[str]:
    rows = postgres.query(
        stack.pg,
        "SELECT dagster_event_type FROM event_logs WHERE run_id = %s AND dagster_event_type IS NOT NULL ORDER BY id",
        (run_id,),
    )
    return [row[0] for row in rows]


STORAGE_PROBE = """
query Probe($runId: ID!, $sensor: SensorSelector!) {
  runsOrError(limit: 1) { __typename }
  logsForRun(runId: $runId, limit: 1) { __typename }
  sensorOrError(sensorSelector: $sensor) { __typename ... on Sensor { sensorState { status } } }
}"""


def storages_answer(client, run_id: str) -> bool:
    """Run storage, event log storage and schedule storage all answer through the webserver."""
    sensor = {
        "repositoryLocationName": CANARY,
        "repositoryName": "__repository__",
        "sensorName": "canary_trigger_files",
    }
    data = client.query(STORAGE_PROBE, {"runId": run_id, "sensor": sensor})
    return (
        data["runsOrError"]["__typename"] == "Runs"
        and data["logsForRun"]["__typename"] == "EventConnection"
        and data["sensorOrError"]["__typename"] == "Sensor"
    )


def example_location_loaded(stack, client, timeout: float = 180) -> None:
    """Wait for the example location to be LOADED; name the known failure precisely if it is that one."""
    name = f"code-server-{EXAMPLE}"
    deadline = time.monotonic() + timeout
    while True:
        if not stack.supervisor.alive(name):
            log = Path(stack.supervisor.components[name].log).read_text(errors="replace")
            if "Couldn't import module dagster_postgres" in log:
                pytest.fail(
                    f"{EXAMPLE}'s locked environment cannot load the platform's Postgres instance: add "
                    f"dagster-postgres to the template's dependencies and relock (make template-lock):\n{log[-1500:]}"
                )
            pytest.fail(f"{EXAMPLE} code server exited:\n{log[-3000:]}")
        state = client.locations()[EXAMPLE]
        if state["status"] == "LOADED":
            assert state["error"] is None, f"{EXAMPLE} failed to load: {state['error']}"
            return
        assert time.monotonic() < deadline, f"{EXAMPLE} still {state['status']} after {timeout:.0f}s"
        time.sleep(0.5)


def test_example_location_from_the_template_loads_against_postgres(stack, client):
    example_location_loaded(stack, client)
    pid = stack.supervisor.components[f"code-server-{EXAMPLE}"].pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(Path(stack.locations[EXAMPLE]["dir"]) / ".venv") in b" ".join(cmdline).decode(), cmdline


def test_locations_load_each_from_its_own_virtualenv(stack, client):
    state = client.locations()
    assert state[CANARY]["status"] == "LOADED" and state[CANARY]["error"] is None, state[CANARY]
    # Each code server is its own process running its own interpreter (the location's .venv).
    pid = stack.supervisor.components[f"code-server-{CANARY}"].pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(Path(stack.locations[CANARY]["dir"]) / ".venv") in b" ".join(cmdline).decode(), cmdline
    versions = {
        name: subprocess.run(
            [
                str(Path(stack.locations[name]["dir"]) / ".venv/bin/python"),
                "-c",
                "import requests; print(requests.__version__)",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for name in (EXAMPLE, CANARY)
    }
    assert versions[EXAMPLE] != versions[CANARY], f"both locations resolved the same requests: {versions}"


def test_broken_location_fails_alone(stack, client):
    state = wait_until(
        lambda: (s := client.locations())[BROKEN]["status"] == "LOADED" and s, 60, "broken location to settle"
    )
    assert state[BROKEN]["error"], f"a location with a broken import must show a load error: {state[BROKEN]}"
    assert state[CANARY]["status"] == "LOADED" and state[CANARY]["error"] is None, state
    log = Path(stack.supervisor.components[f"code-server-{BROKEN}"].log).read_text()
    assert "platform_canary_module_that_does_not_exist" in log, log[-2000:]


@pytest.mark.parametrize(
    ("location", "job"),
    [
        pytest.param(EXAMPLE, "orders_job", id="example"),
        pytest.param(CANARY, "canary_job", id="canary"),
    ],
)
def test_run_through_graphql_is_queued_dequeued_and_succeeds_in_postgres(stack, client, location, job):
    if location == EXAMPLE:
        example_location_loaded(stack, client)
    run_id = client.launch_run(location, job, tags={"test": "graphql-run"})
    run = client.wait_run(run_id, timeout=240)
    assert run["status"] == "SUCCESS", f"{location}/{job} ended {run['status']}; see {stack.state_dir}/logs"
    assert runs_in_postgres(stack)[run_id] == "SUCCESS"
    events = event_types(stack, run_id)
    # Went through the queue: enqueued by the webserver, dequeued (STARTING) by the daemon's coordinator.
    for expected in ("PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START", "PIPELINE_SUCCESS"):
        assert expected in events, f"{expected} missing from {events}"
    assert events.index("PIPELINE_ENQUEUED") < events.index("PIPELINE_STARTING") < events.index("PIPELINE_SUCCESS")
    assert "ASSET_MATERIALIZATION" in events and "STEP_SUCCESS" in events


def test_daemon_ticks_schedule_and_sensor_and_launches_their_runs(stack, client):
    trigger_dir = stack.state_dir / "triggers"
    trigger_dir.mkdir(exist_ok=True)
    (trigger_dir / "0001.trigger").write_text("go\n")
    sensor_id = client.start("sensor", CANARY, "canary_trigger_files")
    schedule_id = client.start("schedule", CANARY, "canary_every_minute")
    try:
        by_trigger = wait_until(
            lambda: (
                (found := {run["tags"]["canary/trigger"]: run for run in _tagged_runs(client)})
                and {"sensor", "schedule"} <= found.keys()
                and found
            ),
            150,
            "a sensor run and a schedule run (the schedule ticks on the next minute)",
            interval=2,
        )
    finally:
        client.stop("schedule", schedule_id)
        client.stop("sensor", sensor_id)
    for trigger in ("sensor", "schedule"):
        run = client.wait_run(by_trigger[trigger]["runId"], timeout=240)
        assert run["status"] == "SUCCESS", f"{trigger} run ended {run['status']}"
    assert by_trigger["sensor"]["tags"]["canary/file"] == "0001.trigger"
    assert by_trigger["sensor"]["tags"].get("dagster/sensor_name") == "canary_trigger_files"
    assert by_trigger["schedule"]["tags"].get("dagster/schedule_name") == "canary_every_minute"


def _tagged_runs(client) -> list[dict]:
    """Runs started by the canary's schedule, or by its sensor for this test's trigger file, with tags as a dict
    (tests/local/test_locations.py runs a copy of the canary whose sensor fires on its own trigger files)."""
    runs = [dict(run, tags={t["key"]: t["value"] for t in run["tags"]}) for run in client.runs()]
    return [
        run
        for run in runs
        if run["tags"].get("canary/trigger") == "schedule" or run["tags"].get("canary/file") == "0001.trigger"
    ]


def test_runs_beyond_the_concurrency_limit_wait_and_all_finish(stack, client):
    """The instance's limit holds with more runs submitted than it allows (three more: enough to make the queue
    hold runs back; more would only re-prove Dagster's queue, at seconds of CPU per run)."""
    limit = max_concurrent_runs()
    batch = f"batch-{time.time_ns()}"
    run_ids = [
        client.launch_run(CANARY, "nap_job", {"ops": {"nap": {"config": {"seconds": 2.0}}}}, tags={"batch": batch})
        for _ in range(limit + 3)
    ]
    sampled_peak = 0
    deadline = time.monotonic() + 420
    while True:
        rows = postgres.query(stack.pg, "SELECT status, COUNT(*) FROM runs GROUP BY status")
        counts = dict(rows)
        sampled_peak = max(sampled_peak, counts.get("STARTING", 0) + counts.get("STARTED", 0))
        statuses = dict(postgres.query(stack.pg, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,)))
        if all(statuses.get(r) in ("SUCCESS", "FAILURE", "CANCELED") for r in run_ids):
            break
        assert time.monotonic() < deadline, f"{len(run_ids)} runs not finished: {statuses}"
        time.sleep(0.3)
    assert all(statuses[r] == "SUCCESS" for r in run_ids), statuses
    # Exact check from the event log: each run holds a slot from its dequeue (STARTING) to its end.
    rows = postgres.query(
        stack.pg,
        "SELECT run_id, dagster_event_type, timestamp FROM event_logs "
        "WHERE dagster_event_type IN ('PIPELINE_STARTING', 'PIPELINE_SUCCESS', 'PIPELINE_FAILURE') ORDER BY id",
    )
    edges = []
    for _, kind, ts in rows:
        edges.append((ts, 1 if kind == "PIPELINE_STARTING" else -1))
    in_flight = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before starts at equal timestamps
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak <= limit, f"{peak} runs were in flight at once; the instance allows {limit}"
    assert sampled_peak <= limit, f"sampled {sampled_peak} runs in flight at once; the instance allows {limit}"
    assert peak >= 2, f"runs never overlapped (peak {peak}): the queue ran them one at a time"


def test_bench_measures_latency_drain_and_memory_on_the_real_stack(stack, client):
    """`make bench` reports these numbers; here they are computed against the real processes (no timing asserted)."""
    from bench import stack as measure

    latencies = measure.run_latency(client, *measure.TRIVIAL, samples=1)  # raises unless the run succeeded
    assert len(latencies) == 1 and latencies[0] > 0
    drain = measure.drain_time(client, stack.pg, runs=4)
    assert drain["runs"] == 4 and drain["failed"] == [], drain
    assert 0 < drain["peak_in_flight_sampled"] <= max_concurrent_runs(), drain
    rss = measure.rss_per_process(stack.state_dir)
    for component in ("webserver", "daemon", f"code-server-{CANARY}", "postgres"):
        assert rss[component]["rss_mib"] > 10, (component, rss)
        assert rss[component]["group_rss_mib"] >= rss[component]["rss_mib"], (component, rss)


def test_killed_code_server_is_isolated_and_recovers(stack, client):
    example_location_loaded(stack, client)
    sup = stack.supervisor
    name = f"code-server-{EXAMPLE}"
    os.kill(sup.components[name].pid, signal.SIGKILL)  # the server process only, like a crashed pod
    wait_until(lambda: not sup.alive(name), 30, f"{name} to exit after SIGKILL")
    assert client.server_info() == 200
    client.reload_location(EXAMPLE)
    state = wait_until(
        lambda: (s := client.locations())[EXAMPLE]["error"] and s, 60, "the killed location to show a load error"
    )
    assert state[CANARY]["status"] == "LOADED" and state[CANARY]["error"] is None, state[CANARY]
    run = client.wait_run(client.launch_run(CANARY, "canary_job"), timeout=240)
    assert run["status"] == "SUCCESS", "the other location must keep running while one code server is down"
    assert client.server_info() == 200

    port = sup.components[name].info["port"]
    lifecycle.restart_component(stack, name, lambda: net.port_open("127.0.0.1", port))
    client.reload_location(EXAMPLE)
    wait_until(lambda: client.all_loaded([EXAMPLE, CANARY]), 120, "the restarted location to be LOADED again")


def test_postgres_restart_loses_nothing_and_the_stack_recovers(stack, client):
    if not runs_in_postgres(stack):  # run alone (-k): make sure there is something to lose
        client.wait_run(client.launch_run(CANARY, "canary_job"), timeout=240)
    before = runs_in_postgres(stack)
    sup = stack.supervisor
    sup.stop("postgres")
    assert not sup.alive("postgres")
    assert client.server_info() == 200, "the webserver must keep answering while the database is down"
    time.sleep(3)  # let the daemon and webserver hit the outage for real
    lifecycle.restart_component(stack, "postgres", lambda: True)
    # The webserver holds one pooled connection per storage; the first request on each after the restart
    # may fail (HTTP 500) while the pool drops the dead connection. It must recover by itself.
    any_run = next(iter(before))
    wait_until(lambda: storages_answer(client, any_run), 120, "the webserver to read every storage again")
    after = runs_in_postgres(stack)
    assert set(before) <= set(after), f"runs lost: {set(before) - set(after)}"
    assert sup.alive("daemon") and sup.alive("webserver")
    run = client.wait_run(client.launch_run(CANARY, "canary_job", tags={"test": "after-pg-restart"}), timeout=240)
    assert run["status"] == "SUCCESS", "a run launched after the restart must be dequeued by the daemon and succeed"
    wait_until(lambda: all(client.daemon_health().values()), 120, "all required daemons healthy again")


def test_dead_daemon_is_named_by_status_and_restarted_alone(stack, client):
    cli = [str(PLATFORM_CLI), "stack", "--state-dir", str(stack.state_dir)]
    sup = stack.supervisor
    others = {name: c.pid for name, c in sup.components.items() if name != "daemon"}
    os.kill(sup.components["daemon"].pid, signal.SIGKILL)
    wait_until(lambda: not sup.alive("daemon"), 30, "the daemon to exit after SIGKILL")
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1, status.stdout
    dead = [line for line in status.stdout.splitlines() if " dead " in line]  # the broken location's server too
    assert (
        f"[stack] daemon is dead (log {sup.components['daemon'].log}); restart it alone: "
        f"dagster-platform stack --state-dir {stack.state_dir} restart daemon"
    ) in dead, status.stdout
    refused = subprocess.run([*cli, "restart", "deamon"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert (
        refused.stderr.startswith("stack restart failed: no component 'deamon' in ") and refused.stderr.count("\n") == 1
    )
    since = time.time()
    restart = subprocess.run([*cli, "restart", "daemon"], capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert client.daemons_healthy(since), client.daemon_statuses()  # heartbeats of the new daemon
    sup = stack.supervisor
    assert {name: c.pid for name, c in sup.components.items() if name != "daemon"} == others, "restarted alone"
    assert [name for name in sup.components if not sup.alive(name)] == [f"code-server-{BROKEN}"]
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, timeout=60)
    assert "daemon is dead" not in status.stdout and f"code-server-{BROKEN} is dead" in status.stdout


def test_files_holding_secrets_are_0600(stack):
    secrets = [stack.pg.password, stack.store.secret_key]
    holders = [
        stack.state_dir / "state.json",
        postgres.data_dir_for(stack.state_dir, stack.supervisor.meta["postgres"]) / "server.key",
    ]
    for path in (p for p in stack.state_dir.rglob("*") if "locations" not in p.parts and p.is_file()):
        if path.stat().st_size < 10_000_000 and any(s.encode() in path.read_bytes() for s in secrets):
            holders.append(path)
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in holders} == {str(p): "0o600" for p in holders}


@contextmanager
def ui_page():
    """A Chromium page on the Dagster UI (Debian's chromium through Playwright), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(90_000)
            # First visit: the UI may open its community/newsletter dialog over the page; dismiss it.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(),
            )
            yield page
        finally:
            browser.close()


def test_browser_materializes_an_asset_from_the_asset_graph(stack, client):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "stack-asset-materialized.png"
    with ui_page() as page:
        page.goto(f"{stack.url}/locations/{CANARY}/asset-groups/canary")
        page.get_by_text("canary_ping").first.wait_for()
        page.get_by_role("button", name="Materialize all").click()
        view = page.get_by_role("link", name="View", exact=True)
        href = view.first.get_attribute("href")
        assert href and "/runs/" in href, href
        run_id = href.rsplit("/", 1)[-1]
        view.first.click()
        page.wait_for_url(f"**/runs/{run_id}*")
        page.get_by_text("Success", exact=True).first.wait_for(timeout=240_000)
        page.get_by_text("RUN_SUCCESS").first.wait_for()
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert client.run(run_id)["status"] == "SUCCESS"


def _run_processes(run_id: str) -> list[int]:
    """PIDs whose command line names the run: its run worker (`dagster api execute_run ...`)."""
    return [pid for pid, cmdline in procs.live_cmdlines().items() if run_id in cmdline]


CAPTURED_LOGS = """
query Captured($runId: ID!, $key: [String!]!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on LogsCapturedEvent { fileKey stepKeys } } }
  }
  capturedLogs(logKey: $key) { stdout stderr }
}"""


def _file_key(client, run_id: str) -> str:
    data = client.query(CAPTURED_LOGS, {"runId": run_id, "key": [run_id]})
    captured = [e for e in data["logsForRun"]["events"] if e["__typename"] == "LogsCapturedEvent"]
    assert captured and captured[0]["stepKeys"] == ["speak"], captured
    return captured[0]["fileKey"]


def test_step_logs_go_to_the_object_store_and_the_ui_shows_them_after_the_worker_exited(stack, client):
    """As on the cluster: the run worker uploads stdout/stderr to the bucket (S3ComputeLogManager of the derived
    instance, loopback endpoint) and exits; the webserver, with its own disk, reads them back from there."""
    run_id = client.launch_run(CANARY, "speak_job", tags={"test": "step-logs"})
    assert client.wait_run(run_id, timeout=240)["status"] == "SUCCESS"
    wait_until(lambda: not _run_processes(run_id), 60, f"the run worker of {run_id} to exit")
    instance = yaml.safe_load((stack.dagster_home / "dagster.yaml").read_text())
    bucket, prefix = instance["compute_logs"]["config"]["bucket"], instance["compute_logs"]["config"]["prefix"]
    file_key = _file_key(client, run_id)
    keys = stack.store.keys(bucket, f"{prefix}/storage/{run_id}/")
    assert keys == [
        f"{prefix}/storage/{run_id}/compute_logs/{file_key}.err",
        f"{prefix}/storage/{run_id}/compute_logs/{file_key}.out",
    ]
    # Nothing of this run is on the webserver's own disk before it is asked: the read must come from the bucket.
    assert not [p for p in (stack.dagster_home / "tmp" / "webserver").rglob("*") if run_id in str(p)]
    logs = client.query(CAPTURED_LOGS, {"runId": run_id, "key": [run_id, "compute_logs", file_key]})["capturedLogs"]
    assert logs["stdout"] == "canary says hello on stdout\n"
    assert "canary says hello on stderr\n" in logs["stderr"]
    body = stack.store.client().get_object(Bucket=bucket, Key=keys[1])["Body"].read().decode()
    assert body == "canary says hello on stdout\n"


def test_browser_shows_a_steps_stdout_and_stderr_from_the_object_store(stack, client):
    run_id = client.launch_run(CANARY, "speak_job", tags={"test": "step-logs-browser"})
    assert client.wait_run(run_id, timeout=240)["status"] == "SUCCESS"
    wait_until(lambda: not _run_processes(run_id), 60, f"the run worker of {run_id} to exit")
    bucket = yaml.safe_load((stack.dagster_home / "dagster.yaml").read_text())["compute_logs"]["config"]["bucket"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "stack-step-logs.png"
    with ui_page() as page:
        page.goto(f"{stack.url}/runs/{run_id}")
        page.get_by_text("RUN_SUCCESS").first.wait_for()
        # The LOGS_CAPTURED event links to the step's captured logs (stderr first).
        page.get_by_text("View stdout / stderr").first.click()
        page.get_by_text("canary says hello on stderr").first.wait_for()
        # The UI names the object it read (in a footer shown on hover).
        footer = page.get_by_text(f"s3://{bucket}/").first
        footer.wait_for(state="attached")
        assert run_id in footer.text_content()
        page.get_by_text("stdout", exact=True).first.click()
        page.get_by_text("canary says hello on stdout").first.wait_for()
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.fixture
def own_stack():
    """A stack of its own, the canary only: `stack down` ends it, not the session's."""
    canary = next(loc for loc in locations.default_locations() if loc.name == CANARY)
    with running_stack("test-down-", [canary]) as running:
        yield running


def test_stack_down_stops_the_run_workers_of_a_code_server_that_died(own_stack):
    stack, client = own_stack, own_stack.client
    run_id = client.launch_run(
        CANARY, "nap_job", {"ops": {"nap": {"config": {"seconds": 900}}}}, tags={"test": "orphan"}
    )
    workers = wait_until(
        lambda: client.run(run_id)["status"] == "STARTED" and _run_processes(run_id), 180, "its worker"
    )
    sup = stack.supervisor
    os.kill(sup.components[f"code-server-{CANARY}"].pid, signal.SIGKILL)  # the server only: its run worker lives on
    wait_until(lambda: not sup.alive(f"code-server-{CANARY}"), 30, "the code server to exit after SIGKILL")
    assert all(procs.stat_fields(pid) for pid in workers), "the run worker must outlive its code server"
    lifecycle.down(stack.state_dir, quiet=True)
    assert not [pid for pid in workers if (f := procs.stat_fields(pid)) and f[procs.STATE] not in "ZX"]
    assert procs.processes_of(stack.state_dir, stack.dagster_home) == {}
