"""`make dev` — README's first command — is the local runtime in mode `dev`: it serves the UI with the
example location LOADED, runs the daemon, reloads code from the UI, keeps its SQLite instance across restarts
(migrated once), refuses a busy port before anything starts, and leaves nothing behind, whatever stops it and
whenever: SIGINT, SIGTERM, SIGHUP or SIGKILL of the runner (`dagster-platform dev`), immediately, while it
migrates the instance, the instant the webserver first answers (the daemon is started right after: a stop that
lands there used to leave webserver, daemon and code server running, reparented to init, holding the port),
and once the location is LOADED; also `make dev` itself stopped with SIGTERM (make → uv → the runner)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dagster_platform.graphql import TERMINAL, Client
from dagster_platform.net import free_port, http_ok
from dagster_platform.paths import ROOT, dagster_version
from tests.local.helpers import EXAMPLE, assert_nothing_left, start_dev

pytestmark = pytest.mark.slow

REQUIRED_DAEMONS = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR"}
START_TIMEOUT = 300  # the first start renders the example and installs its venv
EXIT_TIMEOUT = 90


def healthy_daemons(client: Client) -> set[str]:
    return {daemon for daemon, healthy in client.daemon_health().items() if healthy}


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"make dev exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=60)


def test_make_dev_serves_the_example_location(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = Client(url)
    log = tmp_path / "make-dev.log"
    dev_dir = tmp_path / "dev"
    process = start_dev(dev_dir, port, log, via_make=True)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), START_TIMEOUT, "the webserver", process)
        wait_for(lambda: client.location_state(EXAMPLE)[0] == "LOADED", 120, "LOADED", process)
        # make dev reports it too (it polls on its own, so it may print a moment after we saw it).
        wait_for(lambda: f"location {EXAMPLE} LOADED" in log.read_text(), 30, "make dev's LOADED line", process)

        # The daemon runs schedules, sensors and the run queue.
        wait_for(lambda: healthy_daemons(client) >= REQUIRED_DAEMONS, 90, "healthy daemons", process)

        # "Reload" in the UI restarts the code server's subprocess, and the location comes back LOADED.
        client.reload_location(EXAMPLE)  # raises unless the answer is a WorkspaceLocationEntry
        wait_for(lambda: client.location_state(EXAMPLE)[0] == "LOADED", 120, "LOADED", process)

        # A run goes through the queue (daemon) to the code server and succeeds.
        run_id = client.launch_run(EXAMPLE, "orders_job")
        wait_for(lambda: client.run(run_id)["status"] in TERMINAL, 180, "the run", process)
        assert client.run(run_id)["status"] == "SUCCESS"
    finally:
        stop(process)

    assert not http_ok(f"{url}/server_info"), "the webserver outlived make dev"
    assert_nothing_left(dev_dir, port, "make dev stopped with Ctrl-C")

    # The schema of the fresh instance was created once, before any process opened it (no creation race).
    home = dev_dir / "dagster_home"
    assert "creating/migrating the instance schema" in log.read_text()
    assert (home / f".schema-dagster-{dagster_version()}").exists()

    # The local instance is SQLite on disk and survives a restart: the run is still there.
    assert (home / "dagster.yaml").exists()
    assert list(home.rglob("*.db")), "no SQLite storage was written"
    process = start_dev(dev_dir, port, log, via_make=True)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), START_TIMEOUT, "the webserver after a restart", process)
        assert {(run["runId"], run["status"]) for run in client.runs()} >= {(run_id, "SUCCESS")}
        wait_for(lambda: healthy_daemons(client) >= REQUIRED_DAEMONS, 90, "healthy daemons after a restart", process)
    finally:
        stop(process)
    assert "creating/migrating" not in log.read_text(), "the instance was migrated again on a restart"


def test_make_dev_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {tmp_path / 'dev'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(lines) == 1 and f"127.0.0.1:{port} is already in use" in lines[0], result.stderr
    assert f"make dev PORT={port + 1}" in lines[0]
    assert list(tmp_path.iterdir()) == [], "nothing is rendered or started for a refused start"


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory) -> Path:
    """One dev dir for every stop case: rendered, installed and migrated once (then each start takes seconds)."""
    dev_dir = tmp_path_factory.mktemp("make-dev-stop") / "dev"
    port = free_port()
    log = dev_dir.parent / "warm-up.log"
    runner = start_dev(dev_dir, port, log, False, "--until-ready")
    assert runner.wait(timeout=START_TIMEOUT) == 0, log.read_text()[-3000:]
    assert_nothing_left(dev_dir, port, "--until-ready")
    return dev_dir


def moment_reached(moment: str, log: Path, url: str) -> bool:
    if moment == "immediately":
        return True
    if moment == "migrating":
        return "creating/migrating the instance schema" in log.read_text()
    if moment == "webserver answers":
        return http_ok(f"{url}/server_info", timeout=0.5)
    if moment == "LOADED":
        return "LOADED" in log.read_text()
    raise ValueError(moment)


CASES = [
    # (moment, signal, sent to): the runner is `dagster-platform dev`; "make" is `make dev` (make → uv → runner).
    ("immediately", signal.SIGTERM, "runner"),
    ("migrating", signal.SIGINT, "runner"),
    ("migrating", signal.SIGKILL, "runner"),
    ("webserver answers", signal.SIGTERM, "runner"),
    ("webserver answers", signal.SIGHUP, "runner"),
    ("webserver answers", signal.SIGKILL, "runner"),
    ("LOADED", signal.SIGINT, "runner"),
    ("LOADED", signal.SIGHUP, "runner"),
    ("LOADED", signal.SIGKILL, "runner"),
    ("webserver answers", signal.SIGTERM, "make"),
]


@pytest.mark.parametrize(
    ("moment", "sig", "target"),
    [pytest.param(*case, id=f"{case[0].replace(' ', '-')}-{case[1].name}-{case[2]}") for case in CASES],
)
def test_stopped_dev_leaves_no_process(dev_dir, tmp_path, moment, sig, target):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dev.log"
    if moment == "migrating":  # make dev migrates once per Dagster version: forget that it did
        for stamp in (dev_dir / "dagster_home").glob(".schema-dagster-*"):
            stamp.unlink()
    began = time.monotonic()
    runner = start_dev(dev_dir, port, log, via_make=target == "make")
    try:
        if moment == "immediately":
            time.sleep(0.5)
        else:
            deadline = time.monotonic() + START_TIMEOUT
            while not (moment_reached(moment, log, url) or runner.poll() is not None or time.monotonic() > deadline):
                time.sleep(0.05)
            assert runner.poll() is None, f"dev never reached {moment!r}:\n{log.read_text()[-3000:]}"
            assert moment_reached(moment, log, url), f"dev never reached {moment!r}:\n{log.read_text()[-3000:]}"
        signalled = time.monotonic() - began
        os.kill(runner.pid, sig)
        runner.wait(timeout=EXIT_TIMEOUT)
        exited = time.monotonic() - began - signalled
    finally:
        if runner.poll() is None:  # the test failed: do not leave it running either
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=30)
    cleared = assert_nothing_left(dev_dir, port, f"{moment}/{sig.name}/{target}")
    output = log.read_text()
    if target == "runner" and sig != signal.SIGKILL and moment != "immediately":
        assert runner.returncode == 0, output[-3000:]
        assert f"[dev] {sig.name} received, stopping" in output
    print(
        f"{moment}/{sig.name}/{target}: signalled at {signalled:.1f}s, runner exited {exited:.1f}s later, "
        f"nothing left {cleared:.1f}s after that (exit {runner.returncode})"
    )
