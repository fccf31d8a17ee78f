"""`make dev` leaves nothing behind, whatever stops it and whenever: SIGINT, SIGTERM, SIGHUP or SIGKILL of the
runner (`dagster-platform dev`), immediately, while it migrates the instance, the instant the webserver first
answers (the daemon is started right after: a stop that lands there used to leave webserver, daemon and code
server running, reparented to init, holding the port), and once the location is LOADED. Also `make dev` itself
stopped with SIGTERM (make → uv → the runner).

A process "started by it" is any process whose command line or working directory is in the test's own dev
dir, or whose environment has its DAGSTER_HOME (the code server's gRPC subprocess and run workers included).
Each case polls for up to LEFTOVER_TIMEOUT seconds (slow machines) and fails naming what is still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagster_platform import procs
from dagster_platform.net import free_port, http_ok, port_open
from dagster_platform.paths import ROOT

pytestmark = pytest.mark.slow

PLATFORM_CLI = Path(sys.executable).parent / "dagster-platform"
START_TIMEOUT = 300  # the first start renders the example and installs its venv
LEFTOVER_TIMEOUT = 60
EXIT_TIMEOUT = 90


def started_by(dev_dir: Path) -> dict[int, str]:
    """PID → command line of every process that belongs to this dev dir (see the module docstring)."""
    return procs.processes_of(dev_dir, dev_dir / "dagster_home")


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def assert_nothing_left(dev_dir: Path, port: int, case: str) -> float:
    """Poll until no process of the dev dir is left and the port is free; returns the seconds it took."""
    began = time.monotonic()
    if not wait_for(lambda: not started_by(dev_dir) and not port_open("127.0.0.1", port), LEFTOVER_TIMEOUT, 0.2):
        leftovers = "\n".join(f"  {pid}: {cmd}" for pid, cmd in started_by(dev_dir).items())
        pytest.fail(
            f"{case}: after {LEFTOVER_TIMEOUT}s still running:\n{leftovers or '  (none)'}\n"
            f"port {port} {'busy' if port_open('127.0.0.1', port) else 'free'}"
        )
    return time.monotonic() - began


def start_runner(dev_dir: Path, port: int, log: Path, via_make: bool = False) -> subprocess.Popen:
    if via_make:
        argv = ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {dev_dir}"]
    else:
        argv = [str(PLATFORM_CLI), "dev", "--port", str(port), "--dev-dir", str(dev_dir)]
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )  # its own session: a terminal's signals for pytest never reach it, ours reach only whom we pick


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory) -> Path:
    """One dev dir for every case: rendered, installed and migrated once (then each start takes seconds)."""
    dev_dir = tmp_path_factory.mktemp("make-dev-stop") / "dev"
    port = free_port()
    log = dev_dir.parent / "warm-up.log"
    runner = subprocess.run(
        [str(PLATFORM_CLI), "dev", "--port", str(port), "--dev-dir", str(dev_dir), "--until-ready"],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=START_TIMEOUT,
    )  # fmt: skip
    assert runner.returncode == 0, log.read_text()[-3000:]
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
    runner = start_runner(dev_dir, port, log, via_make=target == "make")
    try:
        if moment == "immediately":
            time.sleep(0.5)
        else:
            reached = wait_for(lambda: moment_reached(moment, log, url) or runner.poll() is not None, START_TIMEOUT)
            assert reached and runner.poll() is None, f"dev never reached {moment!r}:\n{log.read_text()[-3000:]}"
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
        assert f"dev: {sig.name} received, stopping" in output
    print(
        f"{moment}/{sig.name}/{target}: signalled at {signalled:.1f}s, runner exited {exited:.1f}s later, "
        f"nothing left {cleared:.1f}s after that (exit {runner.returncode})"
    )
