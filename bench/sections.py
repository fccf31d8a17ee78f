"""`make bench`'s measuring: one function per section returning its figures (seconds, ratios, MiB, runs/min).

The bench starts every command exactly as its user would and watches it from outside with the product's own
pieces: the GraphQL client (`dagster_platform.graphql.Client`) for readiness and runs, `procs.processes_of`
for "no process left" (the same definition as the product's stop tests), `local.locations.ensure_example` and
`template.render.render` for the repos, `local.supervisor.run_once` for one-shot commands, `bench/stack.py`
(`measure`, `run_latency`) for the local stack and the example job's runs. Plain Dagster is measured on the same
generated repo and instance as that repo's own targets: `dg dev` and `dagster dev` against its `make dev`,
`dg check defs` against its `make check`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import stack
from bench.report import Figure, Values, alternate, ratios
from dagster_platform import procs
from dagster_platform.graphql import Client, GraphQLError
from dagster_platform.local.locations import default_module, ensure_example
from dagster_platform.local.supervisor import log_tail, run_once
from dagster_platform.net import free_port
from dagster_platform.paths import ROOT, uv_executable
from dagster_platform.template.render import render

BENCH_DIR = ROOT / ".bench"  # scratch: dev dirs, rendered repos, logs (git-ignored)
# `make dev`'s dev dir: the example rendered as a generated repo, where plain `dg dev`, `dagster dev` and
# `dg check defs` also run, on its instance (.dagster_home, the template's dagster.yaml copied by `make instance`).
DEV_DIR = BENCH_DIR / "dev"
LOG_DIR = BENCH_DIR / "logs"
MAKE = ["make", "--no-print-directory"]
EXAMPLE_JOB = ("example-pipelines", "orders_job")
RUNS_PER_SESSION = 3  # of the example job, one after the other, per `make dev` session
PROFILE = False  # --profile: log every server's process timeline and readiness events to stderr


class BenchError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- dev servers: make dev, and dg dev and dagster dev in the repo it runs ------------
def time_server(
    argv: list[str],
    cwd: Path,
    owned: Path,
    home: Path,
    log: Path,
    env: dict[str, str] | None = None,
    then: Callable[[str], Values] | None = None,
    timeout: float = 300.0,
) -> Values:
    """Start a dev server command (`{port}` in argv: a free port) in its own session and time it, the same way
    for every server: webserver = /server_info answers; ready = that AND every location LOADED; daemon = every
    required daemon healthy with a heartbeat from this session; all = ready and daemon; stop = SIGINT to its
    process group (a terminal's Ctrl-C) until none of its processes (`procs.processes_of(owned, home)`) is
    left. Seconds from the command's start. `then(url)` runs once all is ready, before the stop."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client, argv = Client(url, timeout=5), [arg.format(port=port) for arg in argv]
    with log.open("wb") as out:
        started, started_epoch = time.monotonic(), time.time()
        env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    result: Values = {}
    seen: set[int] = set()

    def reached(key: str, what: str) -> None:
        result[key] = time.monotonic() - started
        if PROFILE:
            say(f"{result[key]:7.2f}s  {what}")

    try:
        while "ready" not in result or "daemon" not in result:
            if proc.poll() is not None:
                raise BenchError(f"{argv[0]} exited ({proc.returncode}) before it was ready; log:\n{log_tail(log)}")
            if time.monotonic() > started + timeout:
                missing = [k for k in ("webserver", "ready", "daemon") if k not in result]
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {missing}; log {log}")
            for pid, cmdline in procs.processes_of(owned, home).items() if PROFILE else ():
                if pid not in seen:
                    seen.add(pid)
                    say(f"{time.monotonic() - started:7.2f}s  process {pid}: {' '.join(cmdline.split())[:150]}")
            if "webserver" not in result:
                if client.server_info() == 200:
                    reached("webserver", "webserver answers /server_info")
            else:
                with contextlib.suppress(GraphQLError):
                    if "ready" not in result and client.all_loaded():
                        reached("ready", "READY: every location LOADED")
                if "daemon" not in result and client.daemons_healthy(started_epoch):
                    reached("daemon", "daemon: every required daemon healthy")
            time.sleep(0.1)
        result["all"] = max(result["ready"], result["daemon"])
        if then is not None:
            result.update(then(url))
    finally:
        result["stop"] = stop(proc, owned, home)
    return result


def stop(proc: subprocess.Popen, owned: Path, home: Path, timeout: float = 60.0) -> float:
    """Ctrl-C the command's process group, wait until none of its processes is left; seconds taken."""
    began = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    while True:
        left = procs.processes_of(owned, home)
        if proc.poll() is not None and not left:
            return time.monotonic() - began
        if time.monotonic() > began + timeout:
            for pid in [proc.pid, *left]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(10)
            raise BenchError(f"processes left {timeout:.0f}s after Ctrl-C (killed): {sorted(left.values())}")
        time.sleep(0.1)


def make_dev(dev_dir: Path, log: Path, then: Callable[[str], Values] | None = None) -> Values:
    """The platform's `make dev PORT=<free>` exactly as a user runs it, rendering the example into dev_dir once
    and then running its own `make dev` (dg dev)."""
    argv = [*MAKE, "dev", "PORT={port}", f"DEV_FLAGS=--dev-dir {dev_dir}"]
    return time_server(argv, ROOT, dev_dir, dev_dir / EXAMPLE_JOB[0] / ".dagster_home", log, then=then)


def activated(repo: Path) -> dict[str, str]:
    """The repo's venv activated (`source .venv/bin/activate`), its instance and DAGSTER_ENV=local: what
    `make dev` sets, so that plain `dg dev` and `dagster dev` serve the same location on the same instance."""
    venv = repo / ".venv"
    return {
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "DAGSTER_HOME": str(repo / ".dagster_home"),
        "DAGSTER_ENV": "local",
    }


def dg_dev(repo: Path, log: Path) -> Values:
    """Plain `dg dev` in the same generated repo, on its instance."""
    argv = [str(repo / ".venv" / "bin" / "dg"), "dev", "--host", "127.0.0.1", "--port", "{port}"]
    return time_server(argv, repo, repo, repo / ".dagster_home", log, env=activated(repo))


def dagster_dev(repo: Path, log: Path) -> Values:
    """Plain `dagster dev -m <package>.definitions` in the same generated repo, on its instance."""
    argv = [str(repo / ".venv" / "bin" / "dagster"), "dev", "-m", default_module(repo), "-h", "127.0.0.1"]
    return time_server([*argv, "-p", "{port}"], repo, repo, repo / ".dagster_home", log, env=activated(repo))


def dev_figures(runs: int) -> list[Figure]:
    """`make dev` (the example's own `make dev`: dg dev behind make and the platform CLI) against plain `dg dev`
    and `dagster dev` in the same rendered repo, on the same instance, alternating in one run."""
    shutil.rmtree(DEV_DIR, ignore_errors=True)
    all_note = "UI answers, location LOADED and every required daemon healthy (GraphQL), from the command's start"
    same = "the same rendered repo and instance as `make dev`"
    pairs = "both incl. daemon healthy; per pair of back-to-back runs"
    cold = make_dev(DEV_DIR, LOG_DIR / "make-dev-cold.log")["all"]
    repo = DEV_DIR / EXAMPLE_JOB[0]
    say(f"first run: make dev ready {cold:.2f}s")
    sides = alternate(
        runs,
        {
            "make dev": lambda i: make_dev(DEV_DIR, LOG_DIR / f"make-dev-{i}.log"),
            "dg dev": lambda i: dg_dev(repo, LOG_DIR / f"dg-dev-{i}.log"),
            "dagster dev": lambda i: dagster_dev(repo, LOG_DIR / f"dagster-dev-{i}.log"),
        },
        say,
    )
    mine, dg, dagster = (sides[k] for k in ("make dev", "dg dev", "dagster dev"))
    return [
        Figure("dev.make_dev_cold", "`make dev` first run → ready", "s", [cold],
               "empty dev dir: renders the example, installs its venv (uv cache warm), creates the instance"),
        Figure("dev.make_dev", "`make dev` → ready (warm)", "s", mine["all"], all_note),
        Figure("dev.dg_dev_all", "`dg dev`, same repo → ready", "s", dg["all"], f"{same}; {all_note}"),
        Figure("dev.dagster_dev_all", "`dagster dev`, same repo → ready", "s", dagster["all"], f"{same}; {all_note}"),
        Figure("dev.ratio", "ready ratio `make dev` / `dg dev`", "x", ratios(mine["all"], dg["all"]), pairs),
        Figure("dev.dagster_ratio", "ready ratio `make dev` / `dagster dev`", "x",
               ratios(mine["all"], dagster["all"]), pairs),
        Figure("dev.make_dev_daemon", "`make dev` → daemon healthy", "s", mine["daemon"],
               "every required daemon healthy (GraphQL daemonHealth)"),
        Figure("dev.make_dev_stop", "`make dev` Ctrl-C → no process left", "s", mine["stop"]),
        Figure("dev.dg_dev_stop", "`dg dev` Ctrl-C → no process left", "s", dg["stop"]),
        Figure("dev.dagster_dev_stop", "`dagster dev` Ctrl-C → no process left", "s", dagster["stop"]),
    ]  # fmt: skip


# --- template → green, dg check defs -----------------------------------------------------------------------
def template_figures(runs: int) -> list[Figure]:
    work, log, answers = BENCH_DIR / "template", LOG_DIR / "template-green.log", {"project_name": "Bench Pipelines"}
    # Render once and `uv sync --frozen`: the uv cache then holds every package a new repo needs.
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run([uv_executable(), "sync", "--frozen"], cwd=render(work, answers), check=True, capture_output=True)

    def green(_: int) -> Values:
        """A fresh render (no .venv, no ruff cache) and its own `make lint test`: seconds for both."""
        shutil.rmtree(work, ignore_errors=True)
        began = time.monotonic()
        run_once([*MAKE, "lint", "test"], os.environ, log, cwd=render(work, answers))
        return {"green": time.monotonic() - began}

    samples = alternate(runs, {"template → green": green}, say)["template → green"]["green"]
    shutil.rmtree(work, ignore_errors=True)
    label, note = "template → green (render + `make lint test`)", "fresh render each run, no .venv; uv cache warm"
    return [Figure("template.green", label, "s", samples, note)]


def dg_check(repo: Path, log: Path) -> Values:
    """Plain `dg check defs` in the generated repo, as its `make check` runs it: local mode, no warehouse secrets,
    the repo's instance."""
    env = {k: v for k, v in os.environ.items() if k not in ("WAREHOUSE_HOST", "WAREHOUSE_PASSWORD")}
    env.update(activated(repo))
    return {"check": run_once([str(repo / ".venv" / "bin" / "dg"), "check", "defs"], env, log, cwd=repo)}


def check_figures(runs: int) -> list[Figure]:
    """The generated repo's `make check` (dg check defs behind scripts/check.py) against plain `dg check defs`."""
    repo = ensure_example(DEV_DIR)
    sides = alternate(
        runs,
        {
            "make check": lambda _: {"check": run_once([*MAKE, "check"], os.environ, LOG_DIR / "make-check.log", repo)},
            "dg check defs": lambda _: dg_check(repo, LOG_DIR / "dg-check.log"),
        },
        say,
    )
    make_check, dg_s = sides["make check"]["check"], sides["dg check defs"]["check"]
    return [
        Figure("check.make_check", "generated repo `make check`", "s", make_check),
        Figure("check.dg_check", "`dg check defs`, same repo", "s", dg_s),
        Figure("check.ratio", "ratio `make check` / `dg check defs`", "x", ratios(make_check, dg_s)),
    ]


# --- the example job, launched from make dev's UI ----------------------------------------------------------
def launch_runs(url: str) -> Values:
    """After the local stack's settle time (why: stack.SETTLE_S), the example job one run after the other:
    seconds launch → SUCCESS as the client sees it, and the run's own start → end (without the queue)."""
    time.sleep(stack.SETTLE_S)
    client = Client(url)
    launch_success = stack.run_latency(client, *EXAMPLE_JOB, samples=RUNS_PER_SESSION)
    done = client.runs(tags={"bench": "latency"}, limit=RUNS_PER_SESSION)  # the same runs, newest first
    return {"launch_success": launch_success, "execution": [run["endTime"] - run["startTime"] for run in done]}


def runs_figures(runs: int) -> list[Figure]:
    dev_dir = BENCH_DIR / "runs-dev"
    shutil.rmtree(dev_dir, ignore_errors=True)  # rendered from the current template on the first start
    session = lambda i: make_dev(dev_dir, LOG_DIR / f"runs-{i}.log", then=launch_runs)  # noqa: E731
    values = alternate(runs, {"example job session": session}, say)["example job session"]
    job, idle = EXAMPLE_JOB[1], f"after {stack.SETTLE_S:.0f} s idle"
    return [
        Figure("runs.example_job", f"`{job}` launch → SUCCESS (`make dev`)", "s", values["launch_success"],
               f"`make dev`, {RUNS_PER_SESSION} runs per session one after the other, {idle}"),
        Figure("runs.example_job_execution", f"`{job}` run start → end", "s", values["execution"],
               "the run's own startTime → endTime: run worker and steps, without the queue"),
    ]  # fmt: skip


# --- local stack -------------------------------------------------------------------------------------------
# The baseline's own measure(), run in its own checkout and environment; its numbers come back as JSON.
# Where measure() lives moved with the layout: bench/stack.py, earlier dagster_platform.{local,stack}.measure.
BASELINE_MEASURE = """
import importlib, json
for name in ("bench.stack", "dagster_platform.local.measure", "dagster_platform.stack.measure"):
    try:
        measure = importlib.import_module(name)
        break
    except ImportError:
        continue
print(json.dumps(measure.measure(runs=0, latency_samples=3)))
"""


def baseline_checkout(rev: str) -> Path:
    """A git worktree of `rev` in .bench/baseline-<sha> with its own locked .venv (kept: a cache)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True)
    tree = BENCH_DIR / f"baseline-{sha.stdout.strip()}"
    if not tree.exists():
        add = ["git", "worktree", "add", "--detach", str(tree), sha.stdout.strip()]
        subprocess.run(add, cwd=ROOT, check=True, capture_output=True)
    subprocess.run([uv_executable(), "sync", "--frozen", "--compile-bytecode"], cwd=tree, check=True)
    return tree


def measure_baseline(tree: Path) -> dict[str, Any]:
    python = str(tree / ".venv/bin/python")
    done = subprocess.run([python, "-c", BASELINE_MEASURE], cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise BenchError(f"baseline stack in {tree} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stack_figures(runs: int, drain_runs: int, baseline_rev: str | None = None) -> list[Figure]:
    """`runs` fresh stacks (each up → 3 trivial runs → RSS → down); the drain only on the first (it takes minutes).
    With a baseline revision, each run is preceded by one of the baseline's stack (same machine, same load)."""
    baseline = baseline_checkout(baseline_rev) if baseline_rev else None
    figures: dict[str, Figure] = {}

    def add(key: str, label: str, unit: str, values: list[float], note: str = "") -> None:
        figures.setdefault(key, Figure(key, label, unit, note=note)).samples.extend(values)

    for i in range(runs):
        if baseline is not None:
            old = measure_baseline(baseline)
            add("stack.up.baseline", f"`make stack` → ready, baseline {baseline_rev}", "s", [old["total_s"]])
            label = f"trivial run launch → SUCCESS, baseline {baseline_rev}"
            add("stack.launch_success.baseline", label, "s", old["run_latency_s"])
        result = stack.measure(runs=drain_runs if i == 0 else 0, latency_samples=3)
        add("stack.up", "`make stack` → all LOADED, daemons healthy", "s", [result["total_s"]],
            "fresh state dir: render, venvs from the warm uv cache, initdb, migrate")  # fmt: skip
        add("stack.all_loaded", "stack processes started → all locations LOADED", "s", [result["all_loaded_s"]])
        add("stack.launch_success", "trivial run launch → SUCCESS (local stack)", "s", result["run_latency_s"],
            f"3 runs per stack, one after the other, after {stack.SETTLE_S:.0f} s idle")  # fmt: skip
        progress = f"up={result['total_s']:.1f}s loaded={result['all_loaded_s']:.1f}s"
        if drain := result["drain"]:
            if drain["failed"]:
                raise BenchError(f"{len(drain['failed'])} of {drain['runs']} drained runs failed")
            n, took = drain["runs"], drain["drain_s"]
            note = f"{n} runs submitted at once; peak in flight seen {drain['peak_in_flight_sampled']}"
            add("stack.drain", f"drain {n} queued runs", "s", [took], note)
            add("stack.drain_rate", "runs per minute while draining", "runs/min", [n / took * 60])
            progress += f" drain={took:.0f}s"
        for component, rss in sorted(result["rss_idle"].items()):
            note = f"whole process group {rss['group_rss_mib']:.0f} MiB, {rss['processes']} processes"
            add(f"stack.rss_{component}", f"RSS {component} (idle)", "MiB", [rss["rss_mib"]], note)
        say(f"stack run {i + 1}/{runs}: {progress} latency={result['run_latency_median_s']:.2f}s")
    return list(figures.values())


# --- platform make test ------------------------------------------------------------------------------------
def test_figures(runs: int) -> list[Figure]:
    """The platform's own `make test` and `make test-fast`, alternating (each on every core, as a developer
    runs them; the machine should be otherwise idle)."""

    def timed(target: str) -> Callable[[int], Values]:
        def run(_: int) -> Values:
            """Wall time and exit code: a failing suite still has a time (its figure FAILs, the bench goes on)."""
            with (LOG_DIR / f"make-{target}.log").open("wb") as out:
                began = time.monotonic()
                done = subprocess.run([*MAKE, target], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
            return {"took": time.monotonic() - began, "exit": done.returncode}

        return run

    sides = alternate(runs, {"make test": timed("test"), "make test-fast": timed("test-fast")}, say)
    note = f"{runs} run{'s' if runs != 1 else ''} (each takes minutes; --make-test-runs N for more)"
    figures = []
    for key, name in (("make_test", "make test"), ("make_test_fast", "make test-fast")):
        values = sides[name]
        failures = ", ".join(f"run {i + 1} exit {code:.0f}" for i, code in enumerate(values["exit"]) if code)
        label = f"platform `{name}` wall time"
        figures.append(Figure(f"test.{key}", label, "s", values["took"], note, failed=failures))
    return figures
