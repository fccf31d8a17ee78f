"""`make dev` — README's first command — serves the UI with the example location LOADED, runs the daemon,
reloads code from the UI, keeps its SQLite instance across restarts, and stops every process it started."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dagster_platform.graphql import TERMINAL, Client
from dagster_platform.local.dev import EXAMPLE_LOCATION
from dagster_platform.net import free_port, http_ok
from dagster_platform.paths import ROOT, dagster_version

pytestmark = pytest.mark.slow

REQUIRED_DAEMONS = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"}


def healthy_daemons(client: Client) -> set[str]:
    return {daemon for daemon, healthy in client.daemon_health().items() if healthy}


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"make dev exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def start_make_dev(dev_dir: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {dev_dir}"],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=60)


def test_make_dev_serves_the_example_location(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = Client(url)
    log = tmp_path / "make-dev.log"
    process = start_make_dev(tmp_path / "dev", port, log)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), 300, "the webserver", process)
        wait_for(lambda: client.location_state(EXAMPLE_LOCATION)[0] == "LOADED", 120, "LOADED", process)
        # make dev reports it too (it polls on its own, so it may print a moment after we saw it).
        loaded_line = f"location {EXAMPLE_LOCATION} LOADED"
        wait_for(lambda: loaded_line in log.read_text(), 30, "make dev's LOADED line", process)

        # The daemon runs schedules, sensors and the run queue.
        wait_for(lambda: healthy_daemons(client) >= REQUIRED_DAEMONS, 90, "healthy daemons", process)

        # "Reload" in the UI restarts the code server's subprocess, and the location comes back LOADED.
        client.reload_location(EXAMPLE_LOCATION)  # raises unless the answer is a WorkspaceLocationEntry
        wait_for(lambda: client.location_state(EXAMPLE_LOCATION)[0] == "LOADED", 120, "LOADED", process)

        # A run goes through the queue (daemon) to the code server and succeeds.
        run_id = client.launch_run(EXAMPLE_LOCATION, "orders_job")
        wait_for(lambda: client.run(run_id)["status"] in TERMINAL, 180, "the run", process)
        assert client.run(run_id)["status"] == "SUCCESS"
    finally:
        stop(process)

    assert not http_ok(f"{url}/server_info"), "the webserver outlived make dev"
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "dev")], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"processes left behind: {leftover.stdout}"

    # The schema of the fresh instance was created once, before any process opened it (no creation race).
    home = tmp_path / "dev" / "dagster_home"
    assert "creating/migrating the instance schema" in log.read_text()
    assert (home / f".schema-dagster-{dagster_version()}").exists()

    # The local instance is SQLite on disk and survives a restart: the run is still there.
    assert (home / "dagster.yaml").exists()
    assert list(home.rglob("*.db")), "no SQLite storage was written"
    process = start_make_dev(tmp_path / "dev", port, log)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), 300, "the webserver after a restart", process)
        assert {(run["runId"], run["status"]) for run in client.runs()} >= {(run_id, "SUCCESS")}
        wait_for(lambda: healthy_daemons(client) >= REQUIRED_DAEMONS, 90, "healthy daemons after a restart", process)
    finally:
        stop(process)
    assert "creating/migrating" not in log.read_text(), "the instance was migrated again on a restart"


def test_make_dev_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {tmp_path}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is rendered or started for a refused start"
