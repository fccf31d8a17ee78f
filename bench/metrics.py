"""`make bench --only metrics`: the exporter's scrape time and memory with 1,000 and 100,000 runs in history.

Each history is a SQLite instance in .bench/metrics/<n>/ (DAGSTER_HOME), its runs written straight into the run
storage's `runs` table in one transaction (real DagsterRun bodies, serialized by Dagster): spread over 90 days
(run retention's default), 5 % failed, with a few queued and started, ~40 runs per hour like a busy cluster's
steady state. The exporter (`python -m platform_ops.exporter`, from the ops location's own .venv, prepared like
`make stack` does) then serves it; each sample is one GET /metrics (HTTP round trip, every query of a scrape)
and the exporter's own dagster_exporter_scrape_duration_seconds; RSS after the scrapes.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import Figure
from dagster_platform import net, procs
from dagster_platform.local import locations

HISTORIES = (1_000, 100_000)
SCRAPES = 10
DAYS = 90
LOCATIONS = ("sales", "finance", "marketing")  # bench data, not a company's locations
BENCH_DIR = Path(__file__).resolve().parents[1] / ".bench" / "metrics"


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def ops_venv() -> Path:
    """The ops location's .venv, as `make stack` prepares it (cached in .bench/metrics/locations/)."""
    ops = next(loc for loc in locations.default_locations() if loc.name == locations.OPS_LOCATION)
    return locations.prepare(ops, BENCH_DIR / "locations") / ".venv"


def write_history(home: Path, count: int, seed: int = 23) -> float:
    """`count` runs in a fresh SQLite instance at `home`; returns seconds taken."""
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.storage.runs.schema import RunsTable
    from dagster._serdes import serialize_value

    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    rng, now = random.Random(seed), datetime.now(UTC)
    rows = []
    for index in range(count):
        location = LOCATIONS[index % len(LOCATIONS)]
        origin = RemoteJobOrigin(
            RemoteRepositoryOrigin(GrpcServerCodeLocationOrigin("localhost", 4000, location_name=location), "repo"),
            f"job_{index % 20}",
        )
        created = now - timedelta(seconds=DAYS * 86400 * index / count) - timedelta(seconds=60)
        status = DagsterRunStatus.FAILURE if rng.random() < 0.05 else DagsterRunStatus.SUCCESS
        if index < 20:  # the newest: a few in flight
            status = (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED)[index % 2]
        run = DagsterRun(job_name=origin.job_name, run_id=str(uuid.UUID(int=rng.getrandbits(128))), status=status,
                         remote_job_origin=origin)  # fmt: skip
        duration = rng.uniform(5, 600)
        finished = status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
        rows.append({
            "run_id": run.run_id, "pipeline_name": run.job_name, "status": status.value,
            "run_body": serialize_value(run), "create_timestamp": created.replace(tzinfo=None),
            "update_timestamp": (created + timedelta(seconds=duration if finished else 0)).replace(tzinfo=None),
            "start_time": created.timestamp() + 1, "end_time": created.timestamp() + duration if finished else None,
        })  # fmt: skip
    with DagsterInstance.from_config(str(home)) as instance:
        with instance.run_storage.connect() as conn:
            conn.execute(RunsTable.insert(), rows[::-1])  # oldest first: ids grow with time, as in a real history
        assert instance.get_runs_count() == count
    return time.monotonic() - started


def scrape_once(url: str) -> tuple[float, float]:
    """(seconds for GET /metrics, the exporter's own dagster_exporter_scrape_duration_seconds)."""
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=120) as response:
        text = response.read().decode()
    took = time.monotonic() - began
    line = next(line for line in text.splitlines() if line.startswith("dagster_exporter_scrape_duration_seconds "))
    return took, float(line.split()[1])


def measure(venv: Path, home: Path) -> dict[str, list[float] | float]:
    port = net.free_port()
    log = (home / "exporter.log").open("w")
    env = {"DAGSTER_HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    command = [str(venv / "bin" / "python"), "-m", "platform_ops.exporter", "--host", net.HOST, "--port", str(port)]
    proc = subprocess.Popen(command, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://{net.HOST}:{port}/metrics"
        deadline = time.monotonic() + 120
        while not net.port_open(net.HOST, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the exporter did not start; see {home / 'exporter.log'}")
            time.sleep(0.2)
        samples = [scrape_once(url) for _ in range(SCRAPES)]
        return {
            "http_s": [s[0] for s in samples],
            "scrape_s": [s[1] for s in samples],
            "rss_mib": procs.rss_mib(proc.pid),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def metrics_figures(histories: tuple[int, ...] = HISTORIES) -> list[Figure]:
    venv = ops_venv()
    figures = []
    for count in histories:
        home = BENCH_DIR / f"runs-{count}"
        if not (home / "history" / "runs.db").exists():
            say(f"metrics: writing {count} runs into {home}: {write_history(home, count):.1f}s")
        found = measure(venv, home)
        label = f"{count:,} runs"
        figures += [
            Figure(f"metrics.scrape_{count}", f"exporter: GET /metrics, {label} in history", "ms",
                   [1000 * s for s in found["http_s"]], note=f"{SCRAPES} scrapes, SQLite"),
            Figure(f"metrics.collect_{count}", f"exporter: its own scrape duration, {label}", "ms",
                   [1000 * s for s in found["scrape_s"]]),
            Figure(f"metrics.rss_{count}", f"exporter: RSS after {SCRAPES} scrapes, {label}", "MiB",
                   [found["rss_mib"]]),
        ]  # fmt: skip
        say(f"metrics: {label}: GET /metrics median {1000 * statistics.median(found['http_s']):.0f} ms, "
            f"RSS {found['rss_mib']:.0f} MiB")  # fmt: skip
    return figures
