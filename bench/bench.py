"""`make bench`: the developer loop and the platform, measured side by side with plain Dagster (docs/bench.md).

Not a test: it prints a Markdown table, writes it into docs/bench.md's results block (with date, machine and
load) and the same figures as JSON to bench/results/ (git-ignored).
Every figure is the median of several runs, with min and max; figures with a target (issue 6, on the 2-core
machines) get a pass/FAIL against it. Sections (`--only`):

- dev:      `make dev` (the example's own `make dev`: dg dev), and plain `dg dev` and `dagster dev` in the
            repo it renders, on its instance, alternating: until ready (daemon healthy included), Ctrl-C until
            no process is left; ratios per pair.
- template: render a new repo from usercode-template/ and run its `make lint test` (warm uv cache).
- check:    the generated repo's `make check` vs plain `dg check defs` in it.
- runs:     the example job launched from `make dev`'s UI: launch → SUCCESS, one run after the other.
- stack:    the local stack (bench/stack.py): up, trivial run latency, draining N queued runs, RSS.
- locations20: one webserver and daemon with 20 template locations + 1 broken one, next to 1 location
            (bench/locations.py): until all LOADED, RSS, GraphQL latency of the asset graph and the runs page.
- metrics:  the Prometheus exporter (bench/metrics.py): GET /metrics and its own scrape duration with 1,000 and
            100,000 runs in history (SQLite), and its RSS.
- test:     wall time of the platform's own `make test` (a few minutes, so one run unless asked).

bench/sections.py measures (one function per section), bench/report.py aggregates and writes the table and
JSON, this module runs the sections and is the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import locations, metrics
from bench import sections as s
from bench.report import SECTIONS, Figure, build_report, merge_previous, render_report, write_doc, write_report
from dagster_platform.paths import ROOT, dagster_version

RESULTS_DIR = ROOT / "bench" / "results"  # git-ignored
DOC = ROOT / "docs" / "bench.md"  # its "Latest results" block: the figures the docs show
# Variables of the caller's shell (or of an outer `make bench`) that a user's own `make dev` would not see.
SCRUBBED_ENV = (
    "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "DAGSTER_HOME", "PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL",
)  # fmt: skip


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LoadSampler(threading.Thread):
    """The 1-minute load average every 5 s while the bench runs (the machine may be shared)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples = [os.getloadavg()[0]]
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append(os.getloadavg()[0])


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While measuring, whatever the product's functions and their commands print goes to stderr (the
    progress), so that stdout holds the table only."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the sections chosen on the command line (in SECTIONS order); the report as build_report makes it."""
    s.LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = now_iso()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "dagster": dagster_version(),
        "commit": commit.stdout.strip() or "unknown",
    }
    sampler = LoadSampler()
    sampler.start()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    measures: dict[str, Callable[[], list[Figure]]] = {
        "dev": lambda: s.dev_figures(args.runs),
        "template": lambda: s.template_figures(args.runs),
        "check": lambda: s.check_figures(args.runs),
        "runs": lambda: s.runs_figures(args.runs),
        "stack": lambda: s.stack_figures(args.runs, args.drain_runs, args.stack_baseline),
        "locations20": lambda: locations.locations_figures(args.locations_runs, args.locations),
        "metrics": lambda: metrics.metrics_figures(),
        "test": lambda: s.test_figures(args.make_test_runs),
    }
    for section in (name for name in SECTIONS if name in args.only):
        load_before = os.getloadavg()[0]
        s.say(f"--- {section} (load average {load_before:.2f})")
        # A failing section (a command, a timeout, a RuntimeError: the bench's BenchError, the product's
        # GraphQLError or ComponentFailed) is "not measured"; the other sections still run.
        try:
            with stdout_to_stderr():
                found = measures[section]()
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            s.say(f"{section}: not measured: {exc}")
            errors[section] = (str(exc) or repr(exc)).splitlines()[0]
            found = []
        stamp, load_after = now_iso(), os.getloadavg()[0]
        for fig in found:
            fig.measured_at, fig.load, fig.commit = stamp, [load_before, load_after], machine["commit"]
        figures += found
    sampler.stop()
    machine.update(load_start=sampler.samples[0], load_end=sampler.samples[-1], load_max=max(sampler.samples))
    latest = Path(args.results_dir) / "latest.json"
    if args.merge and latest.exists():
        previous = json.loads(latest.read_text())
        figures = merge_previous(figures, args.only, previous)
        errors = {**{k: v for k, v in previous.get("errors", {}).items() if k not in args.only}, **errors}
    options = {
        name: getattr(args, name)
        for name in ("runs", "make_test_runs", "drain_runs", "locations", "locations_runs", "only")
    }
    return build_report(figures, errors, machine, options, started, now_iso())


def parse_only(value: str) -> list[str]:
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    if not chosen or any(name not in SECTIONS for name in chosen):
        raise argparse.ArgumentTypeError(f"--only takes a comma-separated subset of {','.join(SECTIONS)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--runs", type=int, default=3, help="repetitions per figure (default 3)")
    add("--only", type=parse_only, default=list(SECTIONS), help=f"sections (default {','.join(SECTIONS)})")
    add("--make-test-runs", type=int, default=1, help="repetitions of the platform's `make test` (default 1)")
    add("--drain-runs", type=int, default=100, help="queued runs to drain on the local stack")
    add("--locations", type=int, default=locations.LOCATIONS, help="code locations of the locations20 section")
    add("--locations-runs", type=int, default=1, help="pairs of stacks (1 and N locations) in locations20 (default 1)")
    add("--merge", action="store_true", help="keep figures of sections not run now from the previous latest.json")
    add("--stack-baseline", metavar="REV", help="also measure the local stack of this git revision (a worktree)")
    add("--strict", action="store_true", help="exit 1 when a figure misses its target")
    add("--results-dir", default=str(RESULTS_DIR), help="where the JSON goes (default bench/results)")
    add("--doc", default=str(DOC), help="the Markdown page whose results block it rewrites (default docs/bench.md)")
    add("--profile", action="store_true", help="log each dev server's processes and readiness as they appear")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in SCRUBBED_ENV:  # every command below is started as a user would start it
        os.environ.pop(name, None)
    s.PROFILE = args.profile
    report = run_bench(args)
    dated, latest = write_report(report, Path(args.results_dir))
    write_doc(report, Path(args.doc))
    print(render_report(report))
    print(f"wrote {dated}, {latest} and the results block of {args.doc}")
    return 1 if report["errors"] or (args.strict and not report["passed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
