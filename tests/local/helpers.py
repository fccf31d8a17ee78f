"""Helpers shared by the local runtime's tests (fixtures stay in conftest.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from dagster_platform import procs
from dagster_platform.net import port_open
from dagster_platform.paths import INSTANCE_YAML, ROOT

EXAMPLE = "example-pipelines"
CANARY = "platform-canary"
BROKEN = "broken-import"
OPS = "platform-ops"
ARTIFACTS = ROOT / "test-artifacts"
PLATFORM_CLI = Path(sys.executable).parent / "dagster-platform"


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
def start_dev(dev_dir: Path, port: int, log: Path, via_make: bool = False, *flags: str) -> subprocess.Popen:
    """`make dev` (make → uv → the CLI) or the CLI itself (`dagster-platform dev`), in its own session: a
    terminal's signals for pytest never reach it, ours reach only whom we pick."""
    if via_make:
        argv = ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {dev_dir} {' '.join(flags)}"]
    else:
        argv = [str(PLATFORM_CLI), "dev", "--port", str(port), "--dev-dir", str(dev_dir), *flags]
    return subprocess.Popen(argv, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def started_by(dev_dir: Path) -> dict[int, str]:
    """PID → command line of every process of this dev dir: its command line or working directory is in it,
    or its environment has its DAGSTER_HOME (the code server's gRPC subprocess and run workers included)."""
    return procs.processes_of(dev_dir, dev_dir / "dagster_home")


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
