"""`make bench --only locations20` (issue 12): one webserver and one daemon serving 20 code locations generated
from the template, plus one whose import is broken, next to the same stack with 1 location in the same run.

Each location is rendered once from usercode-template/ with its own answers (`Bench Loc 01` → location
`bench-loc-01`, package `bench_loc_01`), into .bench/locations/. All of them run from ONE synced virtualenv,
the first location's (`Location.venv_from`; the others find their own package through PYTHONPATH), to keep
the disk and the time of a 2-core machine sane: on the cluster each has its own image. Each still runs its
own gRPC code server process (`dagster api grpc`), as on the cluster.

Per stack (lifecycle.up on a throwaway Postgres, as `make stack`): processes started → every location LOADED,
→ daemons healthy; that the broken location failed alone (the others LOADED, webserver and daemon alive); after
SETTLE_S idle the resident memory of the webserver's, the daemon's and the code servers' process trees; then
RUNS_LAUNCHED runs of the template's `orders_job` (so the runs page is not empty) and the GraphQL latency of
the asset graph's data and of the runs page, as the UI asks them (`Client.asset_graph`, `Client.runs_feed`),
one request after the other, after one unmeasured warm-up request each.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench.report import Figure, Values, alternate, percentile, ratios
from bench.sections import BENCH_DIR, BenchError, say
from bench.stack import SETTLE_S
from dagster_platform import net, procs
from dagster_platform.graphql import Client
from dagster_platform.local import lifecycle
from dagster_platform.local.locations import Location
from dagster_platform.paths import ROOT
from dagster_platform.template.render import render

LOCATIONS = 20  # --locations
BROKEN = "bench-broken-import"
BROKEN_SOURCE = '''"""A code location whose import fails, as a user's broken commit would: it must fail alone."""

import dagster as dg
import bench_module_that_does_not_exist  # noqa: F401

defs = dg.Definitions()
'''
WORK_DIR = BENCH_DIR / "locations"  # rendered repos and the broken file, rendered again by every bench run
# One state dir for both sides, one after the other: `down --wipe` keeps its locations/ (the one synced venv).
STATE_DIR = ROOT / ".stack" / "bench-locations"
LATENCY_SAMPLES = 20  # requests per query and stack
RUNS_LAUNCHED = 5  # orders_job runs before the latencies, round-robin over the locations
JOB = "orders_job"
PPID = 1  # index of the parent PID in procs.stat_fields()


def location_name(i: int) -> str:
    return f"bench-loc-{i:02d}"


def render_locations(count: int, work: Path = WORK_DIR) -> tuple[list[Path], Path]:
    """`count` repos rendered from the template, each with its own project name (so its own location, package
    and module), and the broken location's file; returns (repos, broken file)."""
    shutil.rmtree(work, ignore_errors=True)
    repos = [render(work / "repos", {"project_name": location_name(i).replace("-", " ").title()})
             for i in range(1, count + 1)]  # fmt: skip
    broken = work / "broken" / "broken_location.py"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN_SOURCE)
    return repos, broken


def stack_locations(repos: list[Path], broken: Path | None = None) -> list[Location]:
    """The first repo with its own synced venv; the others (and the broken file) in that venv, each with its
    own sources on PYTHONPATH and its own code server."""
    shared = repos[0].name
    found = []
    for i, repo in enumerate(repos):
        module = f"{repo.name.replace('-', '_')}.definitions"
        if i == 0:
            found.append(Location(repo.name, module, str(repo)))
        else:
            found.append(Location(repo.name, module, str(repo), {"PYTHONPATH": str(repo / "src")}, venv_from=shared))
    if broken is not None:
        found.append(Location(BROKEN, "", "", python_file=str(broken), venv_from=shared, required=False))
    return found


def failed_alone(
    state: dict[str, dict], required: list[str], broken: str | None, components: dict[str, dict]
) -> list[str]:
    """What is wrong with "the broken location failed alone" (nothing: an empty list): every required location
    LOADED without error, the broken one (if any) with a load error, no other location, webserver and daemon
    alive. `state` as Client.locations() returns it, `components` as lifecycle.status()."""
    problems = []
    for name in required:
        entry = state.get(name)
        if entry is None:
            problems.append(f"{name} is not in the workspace")
        elif entry["status"] != "LOADED" or entry["error"]:
            problems.append(f"{name} is {entry['status']}: {entry['error'] or 'not loaded'}")
    if broken is not None and not (state.get(broken) or {}).get("error"):
        problems.append(f"{broken} shows no load error: {state.get(broken)}")
    if unexpected := sorted(set(state) - {*required, broken}):
        problems.append(f"unexpected locations: {', '.join(unexpected)}")
    for name in ("webserver", "daemon"):
        if not components.get(name, {}).get("alive"):
            problems.append(f"{name} is not alive")
    return problems


def tree_rss_mib(root: int, table: dict[int, list[str]]) -> float:
    """Resident memory of a process and all its descendants (from procs.all_stat_fields()), MiB."""
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[PPID]), []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs.rss_mib(pid)
        todo += children.get(pid, [])
    return total


def rss_trees(state_dir: Path) -> dict[str, float]:
    """MiB: the webserver's and the daemon's process trees, and the sum over every code server's tree."""
    table, result = procs.all_stat_fields(), {"webserver": 0.0, "daemon": 0.0, "code_servers": 0.0}
    for name, info in lifecycle.status(state_dir).items():
        key = "code_servers" if name.startswith("code-server-") else name
        if info["alive"] and key in result:
            result[key] += tree_rss_mib(info["pid"], table)
    return result


def latencies(request: Callable[[], object], samples: int) -> list[float]:
    """Seconds per request, one after the other, after one unmeasured warm-up request."""
    request()
    took = []
    for _ in range(samples):
        began = time.perf_counter()
        request()
        took.append(time.perf_counter() - began)
    return took


def launch_runs(client: Client, names: list[str], runs: int, timeout: float = 600) -> None:
    """`runs` orders_job runs launched at once, round-robin over the locations; waits until all succeeded."""
    run_ids = [client.launch_run(names[i % len(names)], JOB, tags={"bench": "locations"}) for i in range(runs)]
    deadline = time.monotonic() + timeout
    for run_id in run_ids:
        run = client.wait_run(run_id, max(deadline - time.monotonic(), 1), interval=0.5)
        if run["status"] != "SUCCESS":
            raise BenchError(f"{JOB} run {run_id} ended {run['status']}")


def measure(
    repos: list[Path], broken: Path | None, samples: int = LATENCY_SAMPLES, runs: int = RUNS_LAUNCHED,
    timeout: float = 900, state_dir: Path = STATE_DIR, settle: float = SETTLE_S,
) -> Values:  # fmt: skip
    """One stack with these locations: up, failed alone, RSS, runs, latencies, down (data wiped)."""
    locations = stack_locations(repos, broken)
    required = [loc.name for loc in locations if loc.required]
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o755)  # the postgres user must reach its data directory when we are root
    try:  # a failed up stops what it started; the finally also wipes its data (this state dir is reused)
        stack = lifecycle.up(state_dir, port=net.free_port(), stack_locations=locations, timeout=timeout)
        client = stack.client
        deadline = time.monotonic() + 60  # the broken one's entry settles once its code server has exited
        while broken and (state := client.locations()).get(BROKEN, {}).get("status") != "LOADED":
            if time.monotonic() > deadline:
                raise BenchError(f"{BROKEN} did not settle within 60 s: {state.get(BROKEN)}")
            time.sleep(0.5)
        if problems := failed_alone(client.locations(), required, broken and BROKEN, lifecycle.status(state_dir)):
            raise BenchError("the broken location did not fail alone: " + "; ".join(problems))
        time.sleep(settle)
        rss = rss_trees(state_dir)
        began = time.monotonic()
        launch_runs(client, required, runs)
        say(f"{len(required)} locations: up {stack.timings['total']:.1f}s, {runs} runs {time.monotonic() - began:.1f}s")
        graph = client.asset_graph()
        if empty := [name for name in required if not graph.get(name)]:
            raise BenchError(f"no asset nodes for {', '.join(empty)}")
        values: Values = {
            "up": stack.timings["total"],
            "all_loaded": stack.timings["all_loaded"],
            "ready": stack.timings["ready"],
            **{f"rss_{key}": value for key, value in rss.items()},
            "asset_graph": [s * 1000 for s in latencies(client.asset_graph, samples)],
            "runs_page": [s * 1000 for s in latencies(client.runs_feed, samples)],
            "asset_nodes": sum(len(nodes) for nodes in graph.values()),
            "runs_listed": len(client.runs_feed()),
            "loaded": len(required),
            "failed": 1 if broken else 0,
        }
        if problems := failed_alone(client.locations(), required, broken and BROKEN, lifecycle.status(state_dir)):
            raise BenchError("after the runs and queries: " + "; ".join(problems))
        for query in ("asset_graph", "runs_page"):
            values[f"{query}_p95"] = percentile(values[query], 95)
        return values
    finally:
        began = time.monotonic()
        lifecycle.down(state_dir, wipe=True, quiet=True)
        say(f"{len(required)} locations: stack down {time.monotonic() - began:.1f}s")


# Rows: (value name, label, unit, note); each for the N-location stack and the 1-location baseline.
ROWS = (
    ("all_loaded", "stack processes started → all {n} LOADED", "s", "{failed_note}"),
    ("ready", "stack processes started → all {n} LOADED, daemons healthy", "s", ""),
    ("up", "`lifecycle.up` → ready, {n}", "s", "incl. copying the sources and `uv sync` (no-op after the first)"),
    ("rss_webserver", "RSS webserver process tree, {n}", "MiB", "after {settle} s idle"),
    ("rss_daemon", "RSS daemon process tree, {n}", "MiB", "after {settle} s idle"),
    ("rss_code_servers", "RSS code servers (sum of trees), {n}", "MiB", "idle; one server per location"),
    ("asset_graph", "GraphQL asset graph, {n}", "ms", "{asset_nodes} asset nodes; {samples} requests a stack"),
    ("asset_graph_p95", "GraphQL asset graph p95, {n}", "ms", "p95 of each stack's requests"),
    ("runs_page", "GraphQL runs page, {n}", "ms", "runsFeedOrError: {runs_listed} runs; {samples} requests a stack"),
    ("runs_page_p95", "GraphQL runs page p95, {n}", "ms", "p95 of each stack's requests"),
)  # fmt: skip


def figures_of(sides: dict[str, dict[str, list[float]]], count: int, samples: int) -> list[Figure]:
    """The section's rows from alternate()'s samples of the two sides ("many": count locations + 1 broken,
    "one": the baseline), each N-location row followed by its baseline, then the per-pair ratios."""
    many, one = sides["many"], sides["one"]
    figures = []
    for name, label, unit, note in ROWS:
        for side, values, n, suffix in ((many, many, f"{count} locations", ""), (one, one, "1 location", ".baseline")):
            text = note.format(
                settle=f"{SETTLE_S:.0f}",
                samples=samples,
                asset_nodes=f"{values['asset_nodes'][0]:.0f}",
                runs_listed=f"{values['runs_listed'][0]:.0f}",
                failed_note=(
                    f"+1 broken location in error: {values['loaded'][0]:.0f} LOADED + {values['failed'][0]:.0f} "
                    "failed, alone (webserver and daemon alive); one shared venv, one code server each"
                    if values["failed"][0]
                    else "baseline: the same stack with 1 location"
                ),
            )
            figures.append(Figure(f"locations20.{name}{suffix}", label.format(n=n), unit, side[name], text))
    for name, what in (("all_loaded", "all LOADED"), ("asset_graph", "asset graph latency (median per stack)")):
        figures.append(
            Figure(
                f"locations20.{name}_ratio",
                f"{what}: {count} locations / 1 location",
                "x",
                ratios(per_stack(many[name], many), per_stack(one[name], one)),
                "per pair of stacks measured back to back",
            )
        )
    return figures


def per_stack(values: list[float], side: dict[str, list[float]]) -> list[float]:
    """One value per stack: itself, or the median of that stack's requests (latencies come `samples` a stack)."""
    stacks = len(side["up"])
    if len(values) == stacks:
        return values
    size = len(values) // stacks
    return [percentile(values[i * size : (i + 1) * size], 50) for i in range(stacks)]


def locations_figures(runs: int, count: int = LOCATIONS, samples: int = LATENCY_SAMPLES) -> list[Figure]:
    """`runs` pairs of stacks, alternating: 1 location (baseline), then `count` locations + the broken one."""
    if count < 2:
        raise BenchError("--locations must be at least 2 (the baseline is 1 location)")
    say(f"rendering {count} locations from the template into {WORK_DIR}")
    repos, broken = render_locations(count)
    try:
        sides = alternate(
            runs,
            {
                "one": lambda _: measure(repos[:1], None, samples),
                "many": lambda _: measure(repos, broken, samples),
            },
            lambda line: say(line[:300]),
        )
    finally:
        if not os.environ.get("KEEP_BENCH_LOCATIONS"):
            shutil.rmtree(WORK_DIR, ignore_errors=True)
    return figures_of(sides, count, samples)
