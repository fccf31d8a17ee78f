"""The platform's `make dev` — README's first command — is the example location's own `make dev`: the template
rendered once into the dev dir (the developer's to edit), its dagster.yaml refreshed from today's derivation,
then `dg dev` exactly as a data engineer runs it (tests/template/test_dev_loop.py proves that loop: Ctrl-C,
SIGTERM of make, a load error in one block). Here: the UI with the example LOADED, the daemon healthy, a run
through the queue, Ctrl-C leaves nothing, runs survive a restart; a busy port is refused before anything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from dagster_platform.graphql import TERMINAL, Client
from dagster_platform.local import config
from dagster_platform.net import free_port, http_ok
from dagster_platform.paths import ROOT
from tests.local.helpers import EXAMPLE, assert_nothing_left, start_dev

pytestmark = pytest.mark.slow

REQUIRED_DAEMONS = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"}
START_TIMEOUT = 300  # the first start renders the example and installs its venv


def healthy_daemons(client: Client) -> set[str]:
    return {daemon for daemon, healthy in client.daemon_health().items() if healthy}


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"make dev exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def ctrl_c(process: subprocess.Popen) -> None:
    """A terminal's Ctrl-C: SIGINT to the foreground process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=90)


def test_make_dev_serves_the_example_location(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = Client(url)
    log = tmp_path / "make-dev.log"
    dev_dir = tmp_path / "dev"
    process = start_dev(dev_dir, port, log)
    repo = dev_dir / EXAMPLE
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), START_TIMEOUT, "the webserver", process)
        wait_for(lambda: client.location_state(EXAMPLE)[0] == "LOADED", 120, "LOADED", process)
        wait_for(lambda: healthy_daemons(client) >= REQUIRED_DAEMONS, 90, "healthy daemons", process)

        # Dagster's own dev server from the example's .venv, on the instance derived today: no runner of ours.
        assert f"dev: the example location in {repo}" in log.read_text()
        assert (repo / ".dagster_home" / "dagster.yaml").read_text() == config.instance_text(mode="dev")

        # A run goes through the queue (daemon) to the code server and succeeds.
        run_id = client.launch_run(EXAMPLE, "orders_job")
        wait_for(lambda: client.run(run_id)["status"] in TERMINAL, 180, "the run", process)
        assert client.run(run_id)["status"] == "SUCCESS"
    finally:
        ctrl_c(process)
    assert not http_ok(f"{url}/server_info"), "the webserver outlived make dev"
    assert_nothing_left(dev_dir, port, "make dev stopped with Ctrl-C")
    assert "Dagster services shut down." in log.read_text()

    # The example is the developer's: a second start renders nothing again and keeps its runs (SQLite on disk).
    marker = repo / "src" / "mine.txt"
    marker.write_text("an edit of mine")
    process = start_dev(dev_dir, port, log)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), START_TIMEOUT, "the webserver after a restart", process)
        assert {(run["runId"], run["status"]) for run in client.runs()} >= {(run_id, "SUCCESS")}
    finally:
        ctrl_c(process)
    assert marker.read_text() == "an edit of mine"
    assert_nothing_left(dev_dir, port, "the second make dev stopped with Ctrl-C")


def test_make_dev_refuses_a_busy_port_before_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["make", "--no-print-directory", "dev", f"PORT={port}", f"DEV_FLAGS=--dev-dir {tmp_path / 'dev'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert lines == [f"dev: port {port} is already in use on 127.0.0.1; choose another: make dev PORT={port + 1}"], (
        result.stderr
    )
    assert list(tmp_path.iterdir()) == [], "nothing is rendered or started for a refused start"
