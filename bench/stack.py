"""Numbers for the local stack, measured with the product's own runtime (`make bench`; the tests make no timed
assertions, tests/local checks that these functions measure).

measure() brings a fresh stack up in its own state directory and returns:
- stack_up_s:          process start (Postgres) → every required location LOADED and daemons healthy
                       (`make stack` with the location virtualenvs already synced)
- all_loaded_s:        process start → every required location LOADED in the webserver
- prepare_s:           rendering/copying locations and `uv sync` of their virtualenvs (cached after the first)
- run_latency_s:       launchRun → SUCCESS of a trivial run after `settle_s` idle, per sample, and median
- total_s:             the whole `up`: prepare + processes until ready (what `make stack` takes)
- drain_s:             N runs submitted at once → all finished (QueuedRunCoordinator limits apply; runs=0 skips)
- rss_mib:             per component: the process itself and its whole process group (run workers, backends)
The helpers also work against an already running stack (`Stack` from lifecycle.up).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from dagster_platform import net, procs
from dagster_platform.graphql import TERMINAL, Client
from dagster_platform.local import lifecycle, locations, postgres
from dagster_platform.paths import ROOT

TRIVIAL = ("platform-canary", "canary_job")
NAP = ("platform-canary", "nap_job")


def run_latency(client: Client, location: str, job: str, samples: int = 3, timeout: float = 300) -> list[float]:
    """Seconds from launchRun to SUCCESS, one run after the other."""
    latencies = []
    for _ in range(samples):
        started = time.monotonic()
        run = client.wait_run(client.launch_run(location, job, tags={"bench": "latency"}), timeout, interval=0.1)
        if run["status"] != "SUCCESS":
            raise RuntimeError(f"latency run {run['runId']} ended {run['status']}")
        latencies.append(time.monotonic() - started)
    return latencies


def drain_time(
    client: Client,
    pg: postgres.PgConnection,
    runs: int = 20,
    location: str = NAP[0],
    job: str = NAP[1],
    nap_seconds: float = 0.0,
    timeout: float = 900,
) -> dict:
    """Submit `runs` runs at once; seconds until all are finished, plus the peak in flight seen in Postgres."""
    started = time.monotonic()
    run_ids = [
        client.launch_run(
            location, job, {"ops": {"nap": {"config": {"seconds": nap_seconds}}}}, tags={"bench": "drain"}
        )
        for _ in range(runs)
    ]
    submitted = time.monotonic() - started
    peak = 0
    while True:
        rows = dict(postgres.query(pg, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,)))
        peak = max(peak, sum(1 for status in rows.values() if status in ("STARTING", "STARTED")))
        if all(rows.get(run_id) in TERMINAL for run_id in run_ids):
            break
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{runs} runs not finished after {timeout:.0f}s")
        time.sleep(0.2)
    failed = [run_id for run_id in run_ids if rows[run_id] != "SUCCESS"]
    return {
        "runs": runs,
        "drain_s": round(time.monotonic() - started, 2),
        "submit_s": round(submitted, 2),
        "peak_in_flight_sampled": peak,
        "failed": failed,
    }


def _process_groups() -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for pid, fields in procs.all_stat_fields().items():
        groups.setdefault(int(fields[procs.PGRP]), []).append(pid)
    return groups


def rss_per_process(state_dir: Path) -> dict[str, dict[str, float]]:
    """MiB resident per component: its own process and its process group (children included)."""
    groups = _process_groups()
    result = {}
    for name, info in lifecycle.status(state_dir).items():
        if not info["alive"]:
            continue
        members = groups.get(info["pid"], [info["pid"]])
        result[name] = {
            "rss_mib": round(procs.rss_mib(info["pid"]), 1),
            "group_rss_mib": round(sum(procs.rss_mib(pid) for pid in members), 1),
            "processes": len(members),
        }
    return result


def measure(
    runs: int = 20,
    latency_samples: int = 3,
    stack_locations: list[locations.Location] | None = None,
    pg_url: str | None = None,
    state_dir: Path | None = None,
    keep: bool = False,
    settle_s: float = 10.0,
) -> dict:
    """Bring a fresh stack up, measure, tear it down (unless keep); returns the numbers as a dict.

    Runs are measured after `settle_s` of idling: right after start-up the daemon's first iterations (sensors,
    asset and backfill daemons, run monitoring) compete for the two cores, which is not what a run launched on a
    running stack sees (about 0.5 s slower here)."""
    own_state_dir = state_dir is None
    if own_state_dir:
        (ROOT / ".stack").mkdir(exist_ok=True)
        state_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / ".stack"))
        state_dir.chmod(0o755)  # the postgres user must reach its data directory when we are root
    stack = lifecycle.up(state_dir, port=net.free_port(), stack_locations=stack_locations, pg_url=pg_url)
    try:
        client = stack.client
        time.sleep(settle_s)
        rss_idle = rss_per_process(stack.state_dir)
        latencies = run_latency(client, *TRIVIAL, samples=latency_samples)
        drain = drain_time(client, stack.pg, runs=runs) if runs else {}
        rss_after = rss_per_process(stack.state_dir)
        return {
            "cpus": os.cpu_count(),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "prepare_s": round(stack.timings["prepare"], 2),
            "postgres_s": round(stack.timings["postgres"], 2),
            "migrate_s": round(stack.timings["migrate"], 2),
            "all_loaded_s": round(stack.timings["all_loaded"], 2),
            "stack_up_s": round(stack.timings["ready"], 2),
            "total_s": round(stack.timings["total"], 2),
            "run_latency_s": [round(x, 2) for x in latencies],
            "run_latency_median_s": round(statistics.median(latencies), 2),
            **{f"drain_{k}": v for k, v in drain.items()},
            "rss_idle": rss_idle,
            "rss_after_drain": rss_after,
            "locations": sorted(stack.locations),
        }
    finally:
        if not keep:
            lifecycle.down(stack.state_dir, wipe=True, quiet=True)
            if own_state_dir:  # the wipe keeps locations/ (a cache); a throwaway dir goes entirely
                shutil.rmtree(stack.state_dir, ignore_errors=True)
