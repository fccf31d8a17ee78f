"""Numbers for the local stack, measured with the product's own runtime (`make bench`; the tests make no timed
assertions, tests/local checks that these functions measure).

measure() brings a fresh stack up in its own state directory and returns:
- total_s:        the whole `up`: preparing the locations (venvs from the uv cache) + processes until every
                  required location is LOADED and the daemons healthy (what `make stack` takes)
- all_loaded_s:   processes started → every required location LOADED in the webserver
- run_latency_s:  launchRun → SUCCESS of a trivial run, per sample (and run_latency_median_s)
- drain:          N runs submitted at once → all finished (QueuedRunCoordinator limits apply; runs=0 skips)
- rss_idle:       MiB per component: the process itself and its whole process group (run workers, backends)
The helpers also work against an already running stack (`Stack` from lifecycle.up). `--stack-baseline` reads
total_s and run_latency_s from older revisions' measure() too: keep those keys.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from dagster_platform import net, procs
from dagster_platform.graphql import TERMINAL, Client
from dagster_platform.local import lifecycle, postgres
from dagster_platform.paths import ROOT

TRIVIAL = ("platform-canary", "canary_job")
NAP = ("platform-canary", "nap_job")
# Runs are measured after this much idling: right after start-up the daemon's first iterations (sensors, asset
# and backfill daemons, run monitoring) compete for the two cores, which is not what a run launched on a running
# stack sees (about 0.5 s slower here).
SETTLE_S = 10.0


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


def drain_time(client: Client, pg: postgres.PgConnection, runs: int = 20, timeout: float = 900) -> dict:
    """Submit `runs` runs of the canary's nap_job (no nap) at once; seconds until all are finished, plus the
    peak in flight seen in Postgres."""
    started = time.monotonic()
    config = {"ops": {"nap": {"config": {"seconds": 0.0}}}}
    run_ids = [client.launch_run(*NAP, config, tags={"bench": "drain"}) for _ in range(runs)]
    peak = 0
    while True:
        rows = dict(postgres.query(pg, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,)))
        peak = max(peak, sum(1 for status in rows.values() if status in ("STARTING", "STARTED")))
        if all(rows.get(run_id) in TERMINAL for run_id in run_ids):
            break
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{runs} runs not finished after {timeout:.0f}s")
        time.sleep(0.2)
    return {
        "runs": runs,
        "drain_s": round(time.monotonic() - started, 2),
        "peak_in_flight_sampled": peak,
        "failed": [run_id for run_id in run_ids if rows[run_id] != "SUCCESS"],
    }


def rss_per_process(state_dir: Path) -> dict[str, dict[str, float]]:
    """MiB resident per component: its own process and its process group (children included)."""
    groups: dict[int, list[int]] = {}
    for pid, fields in procs.all_stat_fields().items():
        groups.setdefault(int(fields[procs.PGRP]), []).append(pid)
    result = {}
    for name, info in lifecycle.status(state_dir).items():
        if info["alive"]:
            members = groups.get(info["pid"], [info["pid"]])
            result[name] = {
                "rss_mib": info["rss_mib"],
                "group_rss_mib": round(sum(procs.rss_mib(pid) for pid in members), 1),
                "processes": len(members),
            }
    return result


def measure(runs: int = 20, latency_samples: int = 3) -> dict:
    """Bring a fresh stack up in a throwaway state dir, measure, tear it down; returns the numbers as a dict."""
    (ROOT / ".stack").mkdir(exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / ".stack"))
    state_dir.chmod(0o755)  # the postgres user must reach its data directory when we are root
    stack = lifecycle.up(state_dir, port=net.free_port())
    try:
        time.sleep(SETTLE_S)
        rss_idle = rss_per_process(stack.state_dir)
        latencies = run_latency(stack.client, *TRIVIAL, samples=latency_samples)
        return {
            "total_s": round(stack.timings["total"], 2),
            "all_loaded_s": round(stack.timings["all_loaded"], 2),
            "run_latency_s": [round(x, 2) for x in latencies],
            "run_latency_median_s": round(statistics.median(latencies), 2),
            "drain": drain_time(stack.client, stack.pg, runs=runs) if runs else {},
            "rss_idle": rss_idle,
        }
    finally:
        lifecycle.down(stack.state_dir, wipe=True, quiet=True)
        shutil.rmtree(stack.state_dir, ignore_errors=True)  # the wipe keeps locations/ (a cache); this dir is ours
