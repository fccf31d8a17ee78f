"""A generated repo's `make dev` (`dg dev`, its own .venv only): ready with the location LOADED and the daemon
healthy, on the platform's instance (the template's dagster.yaml); Ctrl-C or SIGTERM of make leaves no process
and frees the port; a busy port is refused in one line before anything is installed or started; a location that
does not load still serves the UI, make dev prints its cause in one block, and it loads after the fix and a Reload.

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


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell: none of the platform's virtualenv, DAGSTER_HOME or make flags."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DAGSTER_HOME", "MAKEFLAGS")}
    return {**env, **extra}


def start_dev(repo: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"PORT={port}"],
        cwd=repo, env=user_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def ctrl_c(process: subprocess.Popen) -> None:
    """A terminal's Ctrl-C: SIGINT to the foreground process group (make, dg and what dg started)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=90)


def instance(url: str) -> dict:
    try:
        return Client(url, timeout=10).query(INSTANCE_QUERY)["instance"]
    except GraphQLError:
        return {}


def location_state(url: str) -> str:
    try:
        return Client(url, timeout=10).location_state(LOCATION)[0]
    except GraphQLError:
        return "UNREACHABLE"


def location_error(url: str) -> str:
    """The location's load error as the UI shows it ("" while it loads, once it is LOADED, or unreachable)."""
    try:
        state, detail = Client(url, timeout=10).location_state(LOCATION)
    except GraphQLError:
        return ""
    return detail if state == "ERROR" else ""


def ready(url: str) -> bool:
    if location_state(url) != "LOADED":
        return False
    statuses = instance(url).get("daemonHealth", {}).get("allDaemonStatuses", [])
    required = [s for s in statuses if s["required"]]
    return bool(required) and all(s["healthy"] for s in required)


def assert_nothing_left(repo: Path, port: int, case: str) -> None:
    deadline = time.monotonic() + 60
    while (left := of_repo(repo)) or not port_free(port):
        assert time.monotonic() < deadline, f"{case}: still running after 60 s: {left}; port free: {port_free(port)}"
        time.sleep(0.2)


def test_busy_port_is_refused_before_anything_is_installed_or_started(tmp_path):
    fresh = render(tmp_path / "fresh", {"project_name": "Dev Loop Pipelines"})  # no .venv yet
    home = tmp_path / "home"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["make", "--no-print-directory", "dev", f"PORT={port}"],
            cwd=fresh, env=user_env(DAGSTER_HOME=str(home)), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert of_repo(fresh) == {}, "a refused make dev left processes"
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("dev:")]
    assert len(lines) == 1, result.stdout + result.stderr
    assert f"port {port} is already in use" in lines[0] and f"make dev PORT={port + 1}" in lines[0], lines[0]
    assert not (fresh / ".venv").exists(), "make dev installed before refusing the port"
    assert not home.exists(), "make dev created the instance before refusing the port"


def test_make_dev_ready_on_the_platforms_instance_and_stops_clean(repo, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "make-dev.log"
    process = start_dev(repo, port, log)
    try:
        wait_for(lambda: http_ok(f"{url}/server_info"), "the webserver", process)
        wait_for(lambda: ready(url), "location LOADED and every required daemon healthy", process)
        assert f"Serving dagster-webserver on {url}" in log.read_text()

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

        # Dagster's own dev server, started by make directly: no runner of ours, no `uv run` in between (uv
        # would pass Ctrl-C on a second time and dg would abort its clean shutdown).
        commands = list(of_repo(repo).values())
        assert any("bin/dg dev " in cmd for cmd in commands), commands
        assert not any("uv run" in cmd or "scripts/" in cmd for cmd in commands), commands
    finally:
        ctrl_c(process)
    assert_nothing_left(repo, port, "Ctrl-C")
    text = log.read_text()
    assert "Dagster services shut down." in text and "Aborted!" not in text, text[-2000:]

    # `kill <make>`: SIGTERM to make only, which passes it on to dg (its SIGTERM is its Ctrl-C).
    log2 = tmp_path / "make-dev-2.log"
    process = start_dev(repo, port, log2)
    try:
        wait_for(lambda: ready(url), "ready after a restart", process)
        process.terminate()
        process.wait(timeout=90)
        assert_nothing_left(repo, port, "SIGTERM of make")
    finally:
        ctrl_c(process)
    assert "Dagster services shut down." in log2.read_text()


def test_a_location_that_does_not_load_shows_its_cause_and_loads_after_a_reload(repo, tmp_path):
    module = repo / "src" / "dev_loop_pipelines" / "defs" / "orders.py"
    original = module.read_text()
    broken_line = len(original.splitlines()) + 2
    module.write_text(original + "\ndef broken(:\n    pass\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "make-dev-broken.log"
    process = start_dev(repo, port, log)
    try:
        # The UI serves the location in ERROR: its definitions failed to load (not a code server still starting;
        # the UI shows the SyntaxError as that error's cause).
        failed = "Error occurred during the loading of Dagster definitions"
        wait_for(lambda: failed in location_error(url), "the location's load error in the UI", process)
        # make dev names the cause once, in one short block: exception, file and line, the next step; no
        # traceback, no colour codes in a file.
        wait_for(lambda: "Reload" in log.read_text(), "the cause in make dev's output", process)
        text = log.read_text()
        at = f"at {module.relative_to(repo)}:{broken_line}: def broken(:"
        block = [line for line in text.splitlines() if line.startswith(("make dev:", "  "))]
        assert block[:4] == [
            "make dev: the definitions of dev_loop_pipelines.definitions do not load",
            "  SyntaxError: invalid syntax",
            f"  {at}",
            '  fix it, then press "Reload" on the location in the UI',
        ], text[-3000:]
        assert text.count("SyntaxError") == 1 and "Stack Trace" not in text, text[-3000:]
        assert "\x1b[" not in text, text[-3000:]

        # Fix it and press "Reload": the same server loads the location.
        module.write_text(original)
        Client(url).reload_location(LOCATION)
        wait_for(lambda: location_state(url) == "LOADED", "LOADED after the fix and a Reload", process)
    finally:
        module.write_text(original)
        ctrl_c(process)
    assert_nothing_left(repo, port, "Ctrl-C after a load error")
