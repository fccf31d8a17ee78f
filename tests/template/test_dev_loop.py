"""A generated repo's `make dev` (scripts/dev.py, its own .venv only): ready with the location LOADED and the
daemon healthy, on the platform's instance (the template's dagster.yaml); Ctrl-C, SIGTERM of make or a SIGKILL
of the runner leaves no process and frees the port; a busy port is refused in one line before anything starts.

A process "of the repo" is any process whose command line or working directory is in the rendered repo, or
whose environment has its DAGSTER_HOME (the code server's gRPC subprocess included)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from dagster_platform import procs
from dagster_platform.graphql import Client, GraphQLError
from dagster_platform.helm import instance as helm_instance
from dagster_platform.local import config
from dagster_platform.net import free_port, http_ok
from dagster_platform.template.render import render

from .helpers import run_make

pytestmark = pytest.mark.slow

LOCATION = "dev-loop-pipelines"
TIMEOUT = 120  # generous: other test sessions share the two cores
INSTANCE_QUERY = """{ instance { runQueuingSupported runLauncher { name }
  runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml }
  daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = render(tmp_path_factory.mktemp("dev-loop"), {"project_name": "Dev Loop Pipelines"})
    result = run_make(repo, "install")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


def of_repo(repo: Path) -> dict[int, str]:
    """PID → command line of every live process that belongs to the repo (see the module docstring)."""
    return procs.processes_of(repo, repo / ".dagster_home")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None:
            assert process.poll() is None, f"make dev exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


def start_dev(repo: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DAGSTER_HOME", "MAKEFLAGS")}
    return subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"PORT={port}"],
        cwd=repo, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def instance(url: str) -> dict:
    try:
        return Client(url, timeout=10).query(INSTANCE_QUERY)["instance"]
    except GraphQLError:
        return {}


def ready(url: str) -> bool:
    try:
        if Client(url, timeout=10).location_state(LOCATION)[0] != "LOADED":
            return False
    except GraphQLError:
        return False
    statuses = instance(url).get("daemonHealth", {}).get("allDaemonStatuses", [])
    required = [s for s in statuses if s["required"]]
    return bool(required) and all(s["healthy"] for s in required)


def assert_nothing_left(repo: Path, port: int, case: str) -> None:
    deadline = time.monotonic() + 60
    while (left := of_repo(repo)) or not port_free(port):
        assert time.monotonic() < deadline, f"{case}: still running after 60 s: {left}; port free: {port_free(port)}"
        time.sleep(0.2)


def test_busy_port_is_refused_before_anything_starts(repo):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DAGSTER_HOME", "MAKEFLAGS")}
        result = subprocess.run(
            ["make", "--no-print-directory", "dev", f"PORT={port}"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert of_repo(repo) == {}, "a refused make dev left processes"
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("dev:")]
    assert len(lines) == 1, lines
    assert f"port {port} is already in use" in lines[0] and "make dev PORT=" in lines[0], lines[0]
    assert not (repo / ".dagster_home" / "dev-logs").exists(), "a process was started for a refused make dev"


def test_make_dev_ready_on_the_platforms_instance_and_stops_clean(repo, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "make-dev.log"
    process = start_dev(repo, port, log)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), "the webserver", process)
        wait_for(lambda: ready(url), "location LOADED and every required daemon healthy", process)
        wait_for(lambda: f"Dagster UI on {url}" in log.read_text(), "make dev's URL line", process)

        # The platform's instance (its strictest environment's, derived), not Dagster's default: its run queue
        # limits and the local run launcher.
        queue = helm_instance.derive_instance(config.default_env())["run_coordinator"]["config"]
        info = instance(url)
        assert info["runQueuingSupported"] is True
        assert info["runLauncher"]["name"] == "DefaultRunLauncher"
        assert info["runQueueConfig"]["maxConcurrentRuns"] == queue["max_concurrent_runs"]
        limits = yaml.safe_load(info["runQueueConfig"]["tagConcurrencyLimitsYaml"] or "[]")
        assert [limit["key"] for limit in limits] == [limit["key"] for limit in queue.get("tag_concurrency_limits", [])]
        assert (repo / ".dagster_home" / "dagster.yaml").read_text() == (repo / "dagster.yaml").read_text()
        text = log.read_text()
        assert "creating/migrating the instance schema" in text  # once, before any process opened it
        assert f"location {LOCATION} LOADED" in text
        for name in ("migrate", "code-server", "webserver", "daemon"):
            assert (repo / ".dagster_home" / "dev-logs" / f"{name}.log").exists(), name
    finally:
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: make and the runner
        process.wait(timeout=60)
    assert_nothing_left(repo, port, "Ctrl-C")
    assert "SIGINT received, stopping" in log.read_text()

    # `kill <make>` (SIGTERM to make only, which passes it on to the runner). A restart skips the migration
    # (stamp per Dagster version).
    log2 = tmp_path / "make-dev-2.log"
    process = start_dev(repo, port, log2)
    try:
        wait_for(lambda: f"location {LOCATION} LOADED" in log2.read_text(), "LOADED after a restart", process)
        assert "creating/migrating" not in log2.read_text()
        process.terminate()
        process.wait(timeout=60)
        assert_nothing_left(repo, port, "SIGTERM of make")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)

    # A SIGKILL of the runner (no chance to clean up): its children die with it (PR_SET_PDEATHSIG) and the
    # watchdog stops what they spawned.
    log3 = tmp_path / "make-dev-3.log"
    process = start_dev(repo, port, log3)
    try:
        wait_for(lambda: f"location {LOCATION} LOADED" in log3.read_text(), "LOADED after a restart", process)
        runner = [pid for pid, cmd in of_repo(repo).items() if "scripts/dev.py" in cmd]
        assert len(runner) == 1, of_repo(repo)
        os.kill(runner[0], signal.SIGKILL)
        assert_nothing_left(repo, port, "SIGKILL of the runner")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
