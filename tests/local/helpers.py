"""Helpers shared by the local runtime's tests (fixtures stay in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dagster_platform import net, procs
from dagster_platform.local import lifecycle, locations
from dagster_platform.net import port_open
from dagster_platform.paths import INSTANCE_YAML, ROOT

EXAMPLE = "example-pipelines"
CANARY = "platform-canary"
BROKEN = "broken-import"
OPS = "platform-ops"
ARTIFACTS = ROOT / "test-artifacts"
PLATFORM_CLI = Path(sys.executable).parent / "dagster-platform"


@contextlib.contextmanager
def running_stack(prefix: str, stack_locations: list[locations.Location]) -> Iterator[lifecycle.Stack]:
    """A stack started by the same code as `make stack`, in a .stack/<prefix>* state dir (not pytest's 0700 tmp
    dirs: the `postgres` user must reach its data directory when the tests run as root), stopped by PID even when
    a test or the start-up fails, with nothing left alive; the state is deleted unless KEEP_STACK_STATE is set."""
    (ROOT / ".stack").mkdir(exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / ".stack"))
    state_dir.chmod(0o755)
    for loc in stack_locations:
        if loc.name == CANARY:
            loc.env["CANARY_TRIGGER_DIR"] = str(state_dir / "triggers")
    try:
        yield lifecycle.up(state_dir, port=net.free_port(), stack_locations=stack_locations, timeout=400)
    finally:
        lifecycle.down(state_dir, quiet=True)
        leftovers = lifecycle.status(state_dir)
        assert not [n for n, i in leftovers.items() if i["alive"]], f"still running after down: {leftovers}"
        if not os.environ.get("KEEP_STACK_STATE"):
            lifecycle.down(state_dir, wipe=True, quiet=True)
            shutil.rmtree(state_dir, ignore_errors=True)


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition` until it returns something truthy (returned); fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the condition's transient errors are reported at the end
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error!r}")


def max_concurrent_runs() -> int:
    return yaml.safe_load(INSTANCE_YAML.read_text())["run_coordinator"]["config"]["max_concurrent_runs"]


# --- make dev ----------------------------------------------------------------------------------------------
def start_dev(dev_dir: Path, port: int, log: Path) -> subprocess.Popen:
    """`make dev` in its own session: a terminal's signals for pytest never reach it, ours reach only whom we pick."""
    argv = ["make", "--no-print-directory", "dev", f"PORT={port}", f"DEV_FLAGS=--dev-dir {dev_dir}"]
    return subprocess.Popen(argv, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def started_by(dev_dir: Path) -> dict[int, str]:
    """PID → command line of every process of this dev dir: its command line or working directory is in it,
    or its environment has the example's DAGSTER_HOME (the code server's gRPC subprocess and run workers included)."""
    return procs.processes_of(dev_dir, dev_dir / EXAMPLE / ".dagster_home")


def assert_nothing_left(dev_dir: Path, port: int, case: str, timeout: float = 60) -> float:
    """Poll until no process of the dev dir is left and the port is free; returns the seconds it took."""
    began = time.monotonic()
    deadline = began + timeout
    while started_by(dev_dir) or port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            leftovers = "\n".join(f"  {pid}: {cmd}" for pid, cmd in started_by(dev_dir).items())
            pytest.fail(
                f"{case}: after {timeout:.0f}s still running:\n{leftovers or '  (none)'}\n"
                f"port {port} {'busy' if port_open('127.0.0.1', port) else 'free'}"
            )
        time.sleep(0.2)
    return time.monotonic() - began


# --- platform-ops' alerts -----------------------------------------------------------------------------------
def alerts(path: Path, **props: str) -> list[dict]:
    """The alerts the receiver wrote to `path` (one JSON object per line) whose props match `props`."""
    lines = path.read_text().splitlines() if path.exists() else []
    found = [json.loads(line) for line in lines if line.strip()]
    return [a for a in found if all(a.get("props", {}).get(k) == v for k, v in props.items())]


def start_alert_receiver(port: int, out: Path, status: int = 200) -> subprocess.Popen:
    """The stack's own receiver (dagster_platform.local.alert_receiver) on `port`, ready when it returns."""
    argv = [sys.executable, "-m", "dagster_platform.local.alert_receiver", "--port", str(port), "--out", str(out)]
    log = out.with_suffix(".log").open("w")
    proc = subprocess.Popen([*argv, "--status", str(status)], stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open("127.0.0.1", port) or proc.poll() is not None, 30, "the alert receiver to listen")
    assert proc.poll() is None, out.with_suffix(".log").read_text()
    return proc


# --- the stack's Prometheus, Alertmanager and exporter --------------------------------------------------------
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:\\.|[^"\\])*)"')


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """The exporter's /metrics as {(metric name, frozenset of (label, value)): value} (Prometheus text format)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) and not line.startswith("#"):
            labels = frozenset(_LABEL.findall(match["labels"] or ""))
            samples[(match["name"], labels)] = float(match["value"])
    return samples


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def notified(path: Path, alertname: str, status: str = "firing", **labels: str) -> list[dict]:
    """The alerts of Alertmanager's webhook bodies in the receiver's file (lines with `alerts`), named `alertname`,
    with that status and those labels."""
    lines = path.read_text().splitlines() if path.exists() else []
    bodies = [json.loads(line) for line in lines if line.strip()]
    return [
        alert
        for body in bodies
        if isinstance(body.get("alerts"), list)
        for alert in body["alerts"]
        if alert["labels"].get("alertname") == alertname
        and alert["status"] == status
        and all(alert["labels"].get(k) == v for k, v in labels.items())
    ]
