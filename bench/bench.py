"""`make bench`: the developer loop and the platform, measured side by side with plain Dagster.

Not a test: a script that measures, prints a Markdown table and writes the same figures as JSON to
bench/results/bench-<timestamp>.json and bench/results/latest.json (git-ignored). Every figure is the
median of several runs, with min and max; figures with a target (issue 6, on the 2-core machines) get a
pass/FAIL against it. Sections (`--only`):

- dev:      `make dev` (exactly as a user runs it) until the UI answers and every location is LOADED, next
            to `dg dev` on a bare `create-dagster project` scaffold with one asset; runs alternate, so both
            see the same machine load; the ratio is taken per pair. Also: when the daemon is healthy, the
            cold first run (render + install) and how long Ctrl-C takes until no process is left.
- template: render a new repo from usercode-template/ and run its `make lint test` (warm uv cache).
- check:    `dg check defs` on the example location vs the bare scaffold.
- runs:     the example job (orders_job, three assets and a check) launched from `make dev`'s UI (GraphQL):
            launch → SUCCESS, one run after the other, on a fresh dev dir rendered from the current template.
- stack:    the production-like local stack (dagster_platform.local.measure): up until all locations
            LOADED, launch→SUCCESS of a trivial run, draining N queued runs, RSS per process.
- test:     wall time of the platform's own `make test` (a few minutes, so one run unless asked).

Measuring functions return seconds (or MiB, runs/min); the pure parts (aggregation, table, JSON) are
tested in tests/test_bench.py. Docs and the latest table: docs/bench.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster_platform import procs
from dagster_platform.graphql import Client, GraphQLError
from dagster_platform.net import free_port, http_ok
from dagster_platform.paths import ROOT, dagster_version, uv_executable

BENCH_DIR = ROOT / ".bench"  # scratch: scaffold, dev dir, rendered repos (git-ignored)
RESULTS_DIR = ROOT / "bench" / "results"  # git-ignored
SCAFFOLD_DIR = BENCH_DIR / "bare-scaffold"
DEV_DIR = BENCH_DIR / "dev"
LOG_DIR = BENCH_DIR / "logs"
SECTIONS = ("dev", "template", "check", "runs", "stack", "test")
SCHEMA_VERSION = 1

# Targets from issue 6, for the 2-core machines: figure key → (operator, value), checked on the median.
TARGETS: dict[str, tuple[str, float]] = {
    "dev.ratio": ("<=", 0.3),
    "dev.make_dev_daemon": ("<=", 10.0),
    "template.green": ("<=", 60.0),
    "stack.launch_success": ("<=", 3.0),
    "runs.example_job": ("<=", 5.0),  # issue 11
    "dev.repo_ratio": ("<=", 0.3),  # issue 11: a generated repo's own make dev
    "test.make_test": ("<=", 600.0),
}

# Variables of the caller's shell (or of an outer `make bench`) that a user's own `make dev` would not see.
SCRUBBED_ENV = (
    "VIRTUAL_ENV",
    "UV_PROJECT_ENVIRONMENT",
    "DAGSTER_HOME",
    "PYTHONPATH",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
)

SCAFFOLD_ASSET = '''"""The one asset of the bare scaffold the benchmark compares against."""

import dagster as dg


@dg.asset
def hello() -> str:
    return "hello"
'''


class BenchError(RuntimeError):
    pass


# --- figures: aggregation, pass/fail ---------------------------------------------------------------------
@dataclass
class Figure:
    key: str  # "<section>.<name>"; targets are looked up by key
    label: str
    unit: str  # "s", "x" (ratio), "MiB", "runs/min"
    samples: list[float] = field(default_factory=list)
    note: str = ""
    failed: str = ""  # why a run failed (the figure then FAILs whatever its numbers)
    measured_at: str = ""
    load: list[float] = field(default_factory=list)  # 1-minute load average when its section began and ended

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def target(self) -> tuple[str, float] | None:
        return TARGETS.get(self.key)

    @property
    def stats(self) -> dict[str, float | int | None]:
        return summarize(self.samples)

    @property
    def passed(self) -> bool | None:
        """True/False against the target (on the median); None when the figure has no target."""
        if self.failed:
            return False
        target = self.target
        if target is None or not self.samples:
            return None if target is None else False
        return meets(self.stats["median"], target)

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "key": self.key,
            "section": self.section,
            "label": self.label,
            "unit": self.unit,
            "samples": [round(s, 4) for s in self.samples],
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.stats.items()},
            "target": {"op": target[0], "value": target[1]} if target else None,
            "passed": self.passed,
            "note": self.note,
            "failed": self.failed,
            "measured_at": self.measured_at,
            "load": [round(v, 2) for v in self.load],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        return cls(
            key=data["key"],
            label=data["label"],
            unit=data["unit"],
            samples=list(data["samples"]),
            note=data.get("note", ""),
            failed=data.get("failed", ""),
            measured_at=data.get("measured_at", ""),
            load=list(data.get("load", [])),
        )


def summarize(samples: Sequence[float]) -> dict[str, float | int | None]:
    """Median, min and max of the runs (None when there are none)."""
    if not samples:
        return {"median": None, "min": None, "max": None, "runs": 0}
    return {
        "median": float(statistics.median(samples)),
        "min": float(min(samples)),
        "max": float(max(samples)),
        "runs": len(samples),
    }


def meets(value: float, target: tuple[str, float]) -> bool:
    op, limit = target
    if op == "<=":
        return value <= limit
    if op == ">=":
        return value >= limit
    raise ValueError(f"unknown target operator {op!r}")


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-pair ratios of runs made back to back (same machine load for both sides of each pair)."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d > 0]


def repeat(measure: Callable[[], dict[str, float]], runs: int, what: str, log=None) -> dict[str, list[float]]:
    """Run `measure` `runs` times; each run returns named values; returns name → samples."""
    log = log or _say
    collected: dict[str, list[float]] = {}
    for i in range(runs):
        values = measure()
        log(f"{what} run {i + 1}/{runs}: " + ", ".join(f"{k}={v:.2f}" for k, v in values.items()))
        for key, value in values.items():
            collected.setdefault(key, []).append(value)
    return collected


# --- Markdown and JSON -------------------------------------------------------------------------------------
def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "s":
        return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "runs/min":
        return f"{value:.1f}/min"
    return f"{value:.2f} {unit}"


def fmt_target(target: tuple[str, float] | None, unit: str) -> str:
    if target is None:
        return ""
    op, limit = target
    return f"{'≤' if op == '<=' else '≥'} {fmt_value(limit, unit)}"


def result_cell(figure: Figure) -> str:
    if figure.failed:
        return f"FAIL ({figure.failed})"
    passed = figure.passed
    return "" if passed is None else ("pass" if passed else "FAIL")


def render_table(figures: Iterable[Figure]) -> str:
    lines = [
        "| figure | median | min | max | runs | target | result | load | note |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for fig in figures:
        s = fig.stats
        cells = [
            fig.label,
            fmt_value(s["median"], fig.unit),
            fmt_value(s["min"], fig.unit),
            fmt_value(s["max"], fig.unit),
            str(s["runs"]),
            fmt_target(fig.target, fig.unit),
            result_cell(fig),
            "→".join(f"{v:.1f}" for v in fig.load),
            fig.note,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render_report(report: dict[str, Any]) -> str:
    """The whole Markdown block: machine line, table, sections that could not be measured."""
    figures = [Figure.from_json(f) for f in report["figures"]]
    m = report["machine"]
    head = (
        f"Measured {report['started']} → {report['finished']} on {m['cpus']} CPUs ({m['platform']}, "
        f"Python {m['python']}, Dagster {m['dagster']}, commit {m['commit']}); "
        f"load average (1 min) {m['load_start']:.2f} at start, {m['load_end']:.2f} at the end, "
        f"max {m['load_max']:.2f} (sampled every 5 s); the load column: at the start → end of each section."
    )
    parts = [head, "", render_table(figures)]
    if report.get("errors"):
        parts += ["", "Not measured:"]
        parts += [f"- {section}: {message}" for section, message in report["errors"].items()]
    return "\n".join(parts) + "\n"


def build_report(
    figures: Sequence[Figure],
    errors: dict[str, str],
    machine: dict[str, Any],
    options: dict[str, Any],
    started: str,
    finished: str,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "started": started,
        "finished": finished,
        "machine": machine,
        "options": options,
        "figures": [f.to_json() for f in figures],
        "errors": dict(errors),
        "passed": all(f.passed is not False for f in figures) and not errors,
    }


def write_report(report: dict[str, Any], results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """bench-<timestamp>.json and latest.json (same content); latest.md holds the Markdown block."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["started"].replace(":", "").replace("-", "")
    dated = results_dir / f"bench-{stamp}.json"
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    dated.write_text(text)
    latest = results_dir / "latest.json"
    latest.write_text(text)
    (results_dir / "latest.md").write_text(render_report(report))
    return dated, latest


def merge_previous(figures: list[Figure], sections_run: Iterable[str], previous: dict[str, Any]) -> list[Figure]:
    """Figures of sections not run this time, taken from an earlier report (each keeps its measured_at)."""
    ran = set(sections_run)
    kept = [Figure.from_json(f) for f in previous.get("figures", []) if f["section"] not in ran]
    order = {s: i for i, s in enumerate(SECTIONS)}
    return sorted([*figures, *kept], key=lambda f: order.get(f.section, len(order)))


# --- processes ---------------------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(extra)
    return env


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid → (ppid, state, start time in clock ticks) for every process, from /proc."""
    return {
        pid: (int(f[procs.PPID]), f[procs.STATE], f[procs.START_TICKS]) for pid, f in procs.all_stat_fields().items()
    }


def descendants(root: int) -> dict[int, str]:
    """The process tree under root (root included): pid → start time, so a recycled pid is not mistaken."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found[pid] = table[pid][2]
            todo.extend(children.get(pid, []))
    return found


def alive(processes: dict[int, str]) -> list[int]:
    table = _proc_table()
    return [pid for pid, start in processes.items() if pid in table and table[pid][2] == start and table[pid][1] != "Z"]


def all_locations_loaded(url: str) -> bool:
    """Every location of the webserver's workspace is LOADED (there is at least one)."""
    try:
        return Client(url, timeout=5).all_loaded()
    except GraphQLError:
        return False


def daemons_healthy(url: str, since: float) -> bool:
    return Client(url, timeout=5).daemons_healthy(since)


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def time_server(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    port: int,
    log: Path,
    timeout: float = 300.0,
    then: Callable[[str], dict[str, float]] | None = None,
) -> dict[str, float]:
    """Start a dev server command in its own session and time it, the same way for `make dev` and `dg dev`:

    webserver = /server_info answers; ready = that AND every location LOADED; daemon = every required
    daemon healthy with a heartbeat from this session; stop = SIGINT to its process group (a terminal's
    Ctrl-C) until no process of its tree is left. Seconds from the start of the command. `then(url)`, when
    given, runs once everything is ready (before the stop); its values are added to the result.
    """
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        started, started_epoch = time.monotonic(), time.time()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    tree: dict[int, str] = {}
    result: dict[str, float] = {}
    try:
        deadline = started + timeout
        while "ready" not in result or "daemon" not in result:
            now = time.monotonic()
            if proc.poll() is not None:
                raise BenchError(f"{argv[0]} exited ({proc.returncode}) before it was ready; log tail:\n{_tail(log)}")
            if now > deadline:
                missing = [k for k in ("webserver", "ready", "daemon") if k not in result]
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {missing}; log {log}")
            if "webserver" not in result:
                if http_ok(f"{url}/server_info", timeout=1):
                    result["webserver"] = time.monotonic() - started
            else:
                if "ready" not in result and all_locations_loaded(url):
                    result["ready"] = time.monotonic() - started
                if "daemon" not in result and daemons_healthy(url, started_epoch):
                    result["daemon"] = time.monotonic() - started
            tree.update(descendants(proc.pid))
            time.sleep(0.1)
        if then is not None:
            result.update(then(url))
    finally:
        tree.update(descendants(proc.pid))
        result["stop"] = stop_tree(proc, tree)
    return result


def stop_tree(proc: subprocess.Popen, tree: dict[int, str], timeout: float = 60.0) -> float:
    """Ctrl-C the command's process group, wait until none of its processes is left; seconds taken."""
    began = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    deadline = began + timeout
    while True:
        proc.poll()
        left = alive(tree)
        if not left and proc.returncode is not None:
            return time.monotonic() - began
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(10)
            raise BenchError(f"processes left {timeout:.0f}s after Ctrl-C (killed): {left}")
        time.sleep(0.1)


def run_timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float = 1800) -> tuple[float, int]:
    """Wall time and exit code of a command (output to log)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        began = time.monotonic()
        result = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    return time.monotonic() - began, result.returncode


# --- dev loop ----------------------------------------------------------------------------------------------
def measure_make_dev(dev_dir: Path, log: Path) -> dict[str, float]:
    """`make dev` exactly as a user runs it, on a free port and the bench's own dev dir."""
    port = free_port()
    argv = ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {dev_dir}"]
    return time_server(argv, ROOT, user_env(), port, log)


def ensure_scaffold(path: Path = SCAFFOLD_DIR) -> Path:
    """A bare `create-dagster project` (same Dagster version) with one asset in defs/, made once."""
    if not (path / ".venv" / "bin" / "dg").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        _say(f"scaffolding a bare project with create-dagster@{dagster_version()} into {path}")
        subprocess.run(
            [uv_executable(), "tool", "run", f"create-dagster@{dagster_version()}", "project", "--uv-sync", str(path)],
            env=user_env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    module = path.name.replace("-", "_")
    asset = path / "src" / module / "defs" / "assets.py"
    if not asset.exists():
        asset.write_text(SCAFFOLD_ASSET)
    return path


def scaffold_env(scaffold: Path) -> dict[str, str]:
    """The environment after `source .venv/bin/activate` in the scaffold, as its README says."""
    venv = scaffold / ".venv"
    return user_env(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")


def measure_dg_dev(scaffold: Path, log: Path) -> dict[str, float]:
    """Plain `dg dev` in the bare scaffold (its venv activated, its default temporary instance)."""
    port = free_port()
    argv = [str(scaffold / ".venv" / "bin" / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)]
    return time_server(argv, scaffold, scaffold_env(scaffold), port, log)


REPO_DEV_DIR = BENCH_DIR / "repo-dev"  # a repo generated from the template, for its own `make dev`


def ensure_repo(path: Path = REPO_DEV_DIR) -> Path:
    """A repo rendered from the template (once) with its locked .venv installed by its own `make install`."""
    repo = path / "bench-dev-pipelines"
    if not (repo / "pyproject.toml").exists():
        shutil.rmtree(path, ignore_errors=True)
        _render(path, {"project_name": "Bench Dev Pipelines"})
    subprocess.run(
        ["make", "--no-print-directory", "install"], cwd=repo, env=user_env(), check=True, capture_output=True
    )
    return repo


def measure_repo_dev(repo: Path, log: Path) -> dict[str, float]:
    """The generated repo's `make dev PORT=<free>` (scripts/dev.py) exactly as a data engineer runs it;
    `all` = UI answers, location LOADED and every required daemon healthy."""
    port = free_port()
    values = time_server(["make", "--no-print-directory", "dev", f"PORT={port}"], repo, user_env(), port, log)
    return {**values, "all": max(values["ready"], values["daemon"])}


def dev_figures(runs: int, fresh: bool = True) -> list[Figure]:
    scaffold = ensure_scaffold()
    if fresh:
        shutil.rmtree(DEV_DIR, ignore_errors=True)
        shutil.rmtree(REPO_DEV_DIR, ignore_errors=True)
    repo = ensure_repo()
    figures = []
    cold_note = "first run in an empty dev dir: renders the example and installs its venv (uv cache warm)"
    if not (DEV_DIR / "example-pipelines" / ".venv").exists():
        cold = measure_make_dev(DEV_DIR, LOG_DIR / "make-dev-cold.log")
        _say(f"make dev cold run: ready {cold['ready']:.2f}s")
        figures.append(Figure("dev.make_dev_cold", "`make dev` first run → ready", "s", [cold["ready"]], cold_note))
    repo_note = "UI answers, location LOADED and every required daemon healthy (GraphQL), from the command's start"
    if not (repo / ".dagster_home" / "dev-logs").exists():
        cold = measure_repo_dev(repo, LOG_DIR / "repo-dev-cold.log")
        _say(f"generated repo make dev first run: ready {cold['all']:.2f}s")
        cold_label = "generated repo `make dev` first run → ready"
        figures.append(
            Figure("dev.repo_dev_cold", cold_label, "s", [cold["all"]], "creates the instance schema; " + repo_note)
        )
    make_dev: dict[str, list[float]] = {}
    repo_dev: dict[str, list[float]] = {}
    dg_dev: dict[str, list[float]] = {}
    # Alternate them, so machine load drifts hit all sides alike; each back-to-back pair gives one ratio.
    for i in range(runs):
        for name, into, measure in (
            ("make dev", make_dev, lambda i=i: measure_make_dev(DEV_DIR, LOG_DIR / f"make-dev-{i}.log")),
            ("repo make dev", repo_dev, lambda i=i: measure_repo_dev(repo, LOG_DIR / f"repo-dev-{i}.log")),
            ("dg dev", dg_dev, lambda i=i: measure_dg_dev(scaffold, LOG_DIR / f"dg-dev-{i}.log")),
        ):
            values = measure()
            _say(f"{name} run {i + 1}/{runs}: " + ", ".join(f"{k}={v:.2f}s" for k, v in values.items()))
            for key, value in values.items():
                into.setdefault(key, []).append(value)
    ready_note = "UI answers and every location LOADED (GraphQL), from the command's start"
    dg_all = [max(ready, daemon) for ready, daemon in zip(dg_dev["ready"], dg_dev["daemon"], strict=True)]
    figures += [
        Figure("dev.make_dev", "`make dev` → ready (warm)", "s", make_dev["ready"], ready_note),
        Figure("dev.dg_dev", "`dg dev`, bare scaffold → ready", "s", dg_dev["ready"], ready_note),
        Figure(
            "dev.ratio",
            "ready ratio `make dev` / `dg dev`",
            "x",
            ratios(make_dev["ready"], dg_dev["ready"]),
            "per pair of back-to-back runs",
        ),
        Figure(
            "dev.make_dev_daemon",
            "`make dev` → daemon healthy",
            "s",
            make_dev["daemon"],
            "every required daemon healthy (GraphQL daemonHealth)",
        ),
        Figure("dev.dg_dev_daemon", "`dg dev` → daemon healthy", "s", dg_dev["daemon"]),
        Figure("dev.make_dev_webserver", "`make dev` → UI answers", "s", make_dev["webserver"], "/server_info"),
        Figure("dev.dg_dev_webserver", "`dg dev` → UI answers", "s", dg_dev["webserver"], "/server_info"),
        Figure("dev.make_dev_stop", "`make dev` Ctrl-C → no process left", "s", make_dev["stop"]),
        Figure("dev.dg_dev_stop", "`dg dev` Ctrl-C → no process left", "s", dg_dev["stop"]),
        Figure("dev.repo_dev", "generated repo `make dev` → ready (warm)", "s", repo_dev["all"], repo_note),
        Figure(
            "dev.dg_dev_all",
            "`dg dev`, bare scaffold → ready incl. daemon",
            "s",
            dg_all,
            repo_note,
        ),
        Figure(
            "dev.repo_ratio",
            "ready ratio generated repo `make dev` / `dg dev`",
            "x",
            ratios(repo_dev["all"], dg_all),
            "both incl. daemon healthy; per pair of back-to-back runs",
        ),
        Figure("dev.repo_dev_stop", "generated repo `make dev` Ctrl-C → no process left", "s", repo_dev["stop"]),
    ]
    return figures


# --- template → green, dg check defs -----------------------------------------------------------------------
def _render(out: Path, answers: dict[str, str] | None = None) -> Path:
    from dagster_platform.template import generate as template

    return template.render(out, answers)


def measure_template_green(work: Path, log: Path) -> dict[str, float]:
    """Render a new repo from the template and run its own `make lint test`; seconds for both together."""
    shutil.rmtree(work, ignore_errors=True)
    began = time.monotonic()
    repo = _render(work, {"project_name": "Bench Pipelines"})
    took, code = run_timed(["make", "--no-print-directory", "lint", "test"], repo, user_env(), log)
    total = time.monotonic() - began
    if code != 0:
        raise BenchError(f"`make lint test` of the rendered repo failed (exit {code}); log {log}:\n{_tail(log)}")
    return {"green": total, "make_lint_test": took}


def warm_uv_cache(work: Path) -> None:
    """Render once and `uv sync --frozen`: the uv cache then holds every package a new repo needs."""
    shutil.rmtree(work, ignore_errors=True)
    repo = _render(work, {"project_name": "Bench Pipelines"})
    subprocess.run([uv_executable(), "sync", "--frozen"], cwd=repo, env=user_env(), check=True, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def template_figures(runs: int) -> list[Figure]:
    work = BENCH_DIR / "template"
    warm_uv_cache(work)
    samples = repeat(lambda: measure_template_green(work, LOG_DIR / "template-green.log"), runs, "template → green")
    shutil.rmtree(work, ignore_errors=True)
    return [
        Figure(
            "template.green",
            "template → green (render + `make lint test`)",
            "s",
            samples["green"],
            "fresh render each run, no .venv; uv cache warm",
        )
    ]


def ensure_example(dev_dir: Path = DEV_DIR) -> Path:
    """The example location as `make dev` renders it (rendered and installed once)."""
    repo = dev_dir / "example-pipelines"
    if not (repo / "pyproject.toml").exists():
        _render(dev_dir)
    subprocess.run(
        ["make", "--no-print-directory", "install"], cwd=repo, env=user_env(), check=True, capture_output=True
    )
    return repo


def measure_dg_check(project: Path, log: Path) -> dict[str, float]:
    """`dg check defs` as the template's `make check` runs it: local mode, no warehouse secrets."""
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as home:
        env = user_env(DAGSTER_ENV="local", DAGSTER_HOME=home)
        for secret in ("WAREHOUSE_HOST", "WAREHOUSE_PASSWORD"):
            env.pop(secret, None)
        took, code = run_timed([str(project / ".venv" / "bin" / "dg"), "check", "defs"], project, env, log)
    if code != 0:
        raise BenchError(f"`dg check defs` failed in {project} (exit {code}); log {log}:\n{_tail(log)}")
    return {"check": took}


def check_figures(runs: int) -> list[Figure]:
    example = ensure_example()
    scaffold = ensure_scaffold()
    example_s: list[float] = []
    scaffold_s: list[float] = []
    for i in range(runs):
        example_s.append(measure_dg_check(example, LOG_DIR / "check-example.log")["check"])
        scaffold_s.append(measure_dg_check(scaffold, LOG_DIR / "check-scaffold.log")["check"])
        _say(f"dg check defs run {i + 1}/{runs}: example {example_s[-1]:.2f}s, scaffold {scaffold_s[-1]:.2f}s")
    return [
        Figure("check.example", "`dg check defs`, example location", "s", example_s),
        Figure("check.scaffold", "`dg check defs`, bare scaffold", "s", scaffold_s),
        Figure("check.ratio", "`dg check defs` ratio example / scaffold", "x", ratios(example_s, scaffold_s)),
    ]


# --- the example job, launched from make dev's UI ----------------------------------------------------------
EXAMPLE_JOB = ("example-pipelines", "orders_job")


def launch_runs(url: str, count: int, idle: float = 10.0) -> dict[str, float]:
    """After `idle` seconds (the daemon's first iterations compete for the CPUs right after start-up), launch
    the example job `count` times one after the other: seconds launch → SUCCESS as the client sees it, and
    the run's own start → end (its run worker and steps, without the queue)."""
    time.sleep(idle)
    client = Client(url)
    values: dict[str, float] = {}
    for i in range(count):
        began = time.monotonic()
        run_id = client.launch_run(*EXAMPLE_JOB)
        run = client.wait_run(run_id, timeout=240, interval=0.1)
        took = time.monotonic() - began
        if run["status"] != "SUCCESS":
            raise BenchError(f"{EXAMPLE_JOB[1]} run {run_id} ended {run['status']} after {took:.1f}s")
        values[f"launch_success_{i}"] = took
        values[f"execution_{i}"] = run["endTime"] - run["startTime"]
    return values


def measure_example_job(dev_dir: Path, log: Path, count: int = 3) -> dict[str, float]:
    """`make dev` on a free port with `dev_dir`; once ready, `count` runs of the example job."""
    port = free_port()
    argv = ["make", "--no-print-directory", "dev", f"DEV_FLAGS=--port {port} --dev-dir {dev_dir}"]
    return time_server(argv, ROOT, user_env(), port, log, then=lambda url: launch_runs(url, count))


def runs_figures(runs: int, per_session: int = 3) -> list[Figure]:
    dev_dir = BENCH_DIR / "runs-dev"
    shutil.rmtree(dev_dir, ignore_errors=True)  # rendered from the current template on the first start
    launch: list[float] = []
    execution: list[float] = []
    for i in range(runs):
        values = measure_example_job(dev_dir, LOG_DIR / f"runs-{i}.log", per_session)
        launch += [values[f"launch_success_{n}"] for n in range(per_session)]
        execution += [values[f"execution_{n}"] for n in range(per_session)]
        _say(f"example job session {i + 1}/{runs}: " + ", ".join(f"{v:.2f}s" for v in launch[-per_session:]))
    note = f"`make dev`, {per_session} runs per session one after the other, after 10 s idle"
    return [
        Figure("runs.example_job", f"`{EXAMPLE_JOB[1]}` launch → SUCCESS (`make dev`)", "s", launch, note),
        Figure(
            "runs.example_job_execution",
            f"`{EXAMPLE_JOB[1]}` run start → end",
            "s",
            execution,
            "the run's own startTime → endTime: run worker and steps, without the queue",
        ),
    ]


# --- local stack -------------------------------------------------------------------------------------------
def stack_figures(runs: int, drain_runs: int, baseline_rev: str | None = None) -> list[Figure]:
    try:
        from dagster_platform.local import measure
    except ImportError as exc:
        raise BenchError("dagster_platform.local.measure is not there yet (the local stack's measuring)") from exc
    baseline = baseline_checkout(baseline_rev) if baseline_rev else None
    return measure_stack(measure, runs, drain_runs, baseline, baseline_rev)


# The baseline's own measure(), run in its own checkout and environment; its numbers come back as JSON.
BASELINE_MEASURE = (
    "import json; from dagster_platform.local import measure; "
    "print(json.dumps(measure.measure(runs=0, latency_samples=3)))"
)


def baseline_checkout(rev: str) -> Path:
    """A git worktree of `rev` in .bench/baseline-<sha> with its own locked .venv (kept: a cache)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = BENCH_DIR / f"baseline-{sha}"
    if not tree.exists():
        add = ["git", "worktree", "add", "--detach", str(tree), sha]
        subprocess.run(add, cwd=ROOT, check=True, capture_output=True)
    subprocess.run([uv_executable(), "sync", "--frozen", "--compile-bytecode"], cwd=tree, env=user_env(), check=True)
    return tree


def measure_baseline(tree: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(tree / ".venv/bin/python"), "-c", BASELINE_MEASURE],
        cwd=tree,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise BenchError(f"baseline stack in {tree} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_stack(
    measure: Any, runs: int, drain_runs: int, baseline: Path | None = None, baseline_rev: str | None = None
) -> list[Figure]:
    """`runs` fresh stacks (each up → 3 trivial runs → RSS → down); the drain only on the first (it takes minutes).
    With a baseline checkout, each run is followed by one of the baseline's stack (same machine, same load)."""
    figures: dict[str, Figure] = {}

    def add(key: str, label: str, unit: str, value: float, note: str = "") -> None:
        figures.setdefault(key, Figure(key, label, unit, note=note)).samples.append(value)

    for i in range(runs):
        if baseline is not None:
            old = measure_baseline(baseline)
            add("stack.up.baseline", f"`make stack` → ready, baseline {baseline_rev}", "s", old["total_s"])
            label = f"trivial run launch → SUCCESS, baseline {baseline_rev}"
            for latency in old["run_latency_s"]:
                add("stack.launch_success.baseline", label, "s", latency)
        try:
            result = measure.measure(runs=drain_runs if i == 0 else 0, latency_samples=3)
        except Exception as exc:  # noqa: BLE001 - any failure of the stack makes the section "not measured"
            raise BenchError(f"local stack run {i + 1}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        add(
            "stack.up",
            "`make stack` → all LOADED, daemons healthy",
            "s",
            result["total_s"],
            "fresh state dir: render, venvs from the warm uv cache, initdb, migrate",
        )
        add("stack.all_loaded", "stack processes started → all locations LOADED", "s", result["all_loaded_s"])
        for latency in result["run_latency_s"]:
            add(
                "stack.launch_success",
                "trivial run launch → SUCCESS (local stack)",
                "s",
                latency,
                "3 runs per stack, one after the other, after 10 s idle",
            )
        if result.get("drain_runs"):
            if result["drain_failed"]:
                raise BenchError(f"{len(result['drain_failed'])} of {result['drain_runs']} drained runs failed")
            runs_n, drain_s = result["drain_runs"], result["drain_drain_s"]
            limit_note = (
                f"{runs_n} runs submitted at once; peak in flight seen {result['drain_peak_in_flight_sampled']}"
            )
            add("stack.drain", f"drain {runs_n} queued runs", "s", drain_s, limit_note)
            add("stack.drain_rate", "runs per minute while draining", "runs/min", runs_n / drain_s * 60)
        for component, rss in sorted(result["rss_idle"].items()):
            add(
                f"stack.rss_{component}",
                f"RSS {component} (idle)",
                "MiB",
                rss["rss_mib"],
                f"whole process group {rss['group_rss_mib']:.0f} MiB, {rss['processes']} processes",
            )
        _say(
            f"stack run {i + 1}/{runs}: up={result['total_s']:.1f}s loaded={result['all_loaded_s']:.1f}s "
            f"latency={result['run_latency_median_s']:.2f}s"
            + (f" drain={result['drain_drain_s']:.0f}s" if result.get("drain_runs") else "")
        )
    return list(figures.values())


# --- platform make test ------------------------------------------------------------------------------------
def test_figures(runs: int) -> list[Figure]:
    samples, failures = [], []
    for i in range(runs):
        took, code = run_timed(["make", "--no-print-directory", "test"], ROOT, user_env(), LOG_DIR / "make-test.log")
        _say(f"make test run {i + 1}/{runs}: {took:.0f}s, exit {code}")
        samples.append(took)
        if code != 0:
            failures.append(f"run {i + 1} exit {code}")
    note = f"{runs} run{'s' if runs != 1 else ''} (each takes minutes; --make-test-runs N for more)"
    return [Figure("test.make_test", "platform `make test` wall time", "s", samples, note, failed=", ".join(failures))]


# --- runner ------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "dagster": dagster_version(),
        "commit": commit.stdout.strip() or "unknown",
    }


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds while the bench runs (the machine may be shared)."""

    def __init__(self, interval: float = 5.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples = [os.getloadavg()[0]]
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append(os.getloadavg()[0])


def run_bench(
    sections: Sequence[str],
    runs: int,
    make_test_runs: int,
    drain_runs: int,
    merge: bool = False,
    results_dir: Path = RESULTS_DIR,
    baseline_rev: str | None = None,
) -> dict[str, Any]:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    started = now_iso()
    machine = machine_info()
    sampler = LoadSampler()
    sampler.start()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    measures: dict[str, Callable[[], list[Figure]]] = {
        "dev": lambda: dev_figures(runs),
        "template": lambda: template_figures(runs),
        "check": lambda: check_figures(runs),
        "runs": lambda: runs_figures(runs),
        "stack": lambda: stack_figures(runs, drain_runs, baseline_rev),
        "test": lambda: test_figures(make_test_runs),
    }
    for section in SECTIONS:
        if section not in sections:
            continue
        load_before = os.getloadavg()[0]
        _say(f"--- {section} (load average {load_before:.2f})")
        try:
            found = measures[section]()
        except (BenchError, subprocess.SubprocessError, OSError) as exc:
            _say(f"{section}: not measured: {exc}")
            errors[section] = str(exc).splitlines()[0]
            found = []
        stamp, load_after = now_iso(), os.getloadavg()[0]
        for fig in found:
            fig.measured_at = fig.measured_at or stamp
            fig.load = fig.load or [load_before, load_after]
        figures += found
    sampler.stop()
    machine.update(load_start=sampler.samples[0], load_end=sampler.samples[-1], load_max=max(sampler.samples))
    if merge and (results_dir / "latest.json").exists():
        previous = json.loads((results_dir / "latest.json").read_text())
        figures = merge_previous(figures, sections, previous)
        errors = {**{k: v for k, v in previous.get("errors", {}).items() if k not in sections}, **errors}
    options = {"runs": runs, "make_test_runs": make_test_runs, "drain_runs": drain_runs, "only": list(sections)}
    return build_report(figures, errors, machine, options, started, now_iso())


def parse_only(value: str) -> list[str]:
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--only takes a comma-separated subset of {','.join(SECTIONS)}")
    return chosen


def _bench_command(args) -> int:
    results_dir = Path(args.results_dir)
    report = run_bench(
        args.only, args.runs, args.make_test_runs, args.drain_runs, args.merge, results_dir, args.stack_baseline
    )
    dated, latest = write_report(report, results_dir)
    print(render_report(report))
    print(f"wrote {dated} and {latest}")
    if report["errors"]:
        return 1
    return 1 if args.strict and not report["passed"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per figure (default 3)")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=list(SECTIONS),
        help=f"sections, comma-separated (default {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--make-test-runs", type=int, default=1, help="repetitions of the platform's `make test` (default 1: minutes)"
    )
    parser.add_argument("--drain-runs", type=int, default=100, help="queued runs to drain on the local stack")
    parser.add_argument(
        "--merge", action="store_true", help="keep figures of sections not run now from the previous latest.json"
    )
    parser.add_argument(
        "--stack-baseline",
        default=None,
        metavar="REV",
        help="also measure the local stack of this git revision (a worktree in .bench/), alternating with today's",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its target")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where the JSON goes (default bench/results)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return _bench_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
