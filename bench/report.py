"""`make bench`'s figures and outputs, with no measuring in them (tested in tests/test_bench.py): aggregation
(median, min, max), pass/fail against the targets, the Markdown table and the JSON report."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = ("dev", "template", "check", "runs", "stack", "locations20", "metrics", "test")
SCHEMA_VERSION = 1

# Targets from issue 6, for the 2-core machines: figure key → upper limit, checked on the median (every target
# is a "≤"; the JSON still states the operator). Since issue 21 `make dev` is `dg dev` itself (the platform's runs
# the example's own): its ratio to plain `dg dev` (dev.ratio) shows make's overhead and has no target.
TARGETS: dict[str, float] = {
    "dev.make_dev_daemon": 10.0,
    "template.green": 60.0,
    "stack.launch_success": 3.0,
    "runs.example_job": 5.0,  # issue 11
    "test.make_test": 600.0,  # issue 22: a fresh clone, an idle 2-core machine
    "test.make_test_fast": 60.0,  # issue 22
}


@dataclass
class Figure:
    key: str  # "<section>.<name>"; targets are looked up by key
    label: str
    unit: str  # "s", "ms", "x" (ratio), "MiB", "runs/min"
    samples: list[float] = field(default_factory=list)
    note: str = ""
    failed: str = ""  # why a run failed (the figure then FAILs whatever its numbers)
    measured_at: str = ""
    load: list[float] = field(default_factory=list)  # 1-minute load average when its section began and ended
    commit: str = ""  # the commit it was measured at (a figure kept by --merge keeps its own)

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def target(self) -> float | None:
        return TARGETS.get(self.key)

    @property
    def stats(self) -> dict[str, float | int | None]:
        """Median, min and max of the runs (None when there are none)."""
        if not self.samples:
            return {"median": None, "min": None, "max": None, "runs": 0}
        return {
            "median": float(statistics.median(self.samples)),
            "min": float(min(self.samples)),
            "max": float(max(self.samples)),
            "runs": len(self.samples),
        }

    @property
    def passed(self) -> bool | None:
        """True/False against the target (on the median); None when the figure has no target."""
        if self.failed:
            return False
        if self.target is None:
            return None
        return bool(self.samples) and self.stats["median"] <= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "section": self.section,
            "label": self.label,
            "unit": self.unit,
            "samples": [round(s, 4) for s in self.samples],
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.stats.items()},
            "target": {"op": "<=", "value": self.target} if self.target is not None else None,
            "passed": self.passed,
            "note": self.note,
            "failed": self.failed,
            "measured_at": self.measured_at,
            "load": [round(v, 2) for v in self.load],
            "commit": self.commit,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        names = ("key", "label", "unit", "samples", "note", "failed", "measured_at", "load", "commit")
        return cls(**{name: data[name] for name in names if name in data})


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-pair ratios of runs made back to back (same machine load for both sides of each pair)."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d > 0]


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile, linear between the closest ranks (numpy's default; q=50 is the median)."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


Values = dict[str, float | list[float]]


def alternate(
    runs: int, sides: dict[str, Callable[[int], Values]], log: Callable[[str], None]
) -> dict[str, dict[str, list[float]]]:
    """Each side measured once per round, in turn (machine load drifts hit all sides alike; round i of two
    sides is one back-to-back pair). A measurement returns named values (a number or a list of them);
    returns side → value name → samples."""
    collected: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
    for i in range(runs):
        for name, measure in sides.items():
            values = {k: v if isinstance(v, list) else [v] for k, v in measure(i).items()}
            shown = ", ".join(f"{k}={'/'.join(f'{x:.2f}' for x in v)}" for k, v in values.items())
            log(f"{name} run {i + 1}/{runs}: {shown}")
            for key, value in values.items():
                collected[name].setdefault(key, []).extend(value)
    return collected


# --- Markdown and JSON -------------------------------------------------------------------------------------
FORMATS = {"x": "{:.2f}×", "MiB": "{:.0f} MiB", "runs/min": "{:.1f}/min", "ms": "{:.0f} ms"}  # seconds: fmt_value


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"
    return FORMATS.get(unit, "{:.2f} " + unit).format(value)


def result_cell(figure: Figure) -> str:
    if figure.failed:
        return f"FAIL ({figure.failed})"
    return {None: "", True: "pass", False: "FAIL"}[figure.passed]


def render_table(figures: Iterable[Figure]) -> str:
    lines = [
        "| figure | median | min | max | runs | target | result | load | note |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for fig in figures:
        s, target = fig.stats, fig.target
        cells = [
            fig.label,
            *(fmt_value(s[k], fig.unit) for k in ("median", "min", "max")),
            str(s["runs"]),
            f"≤ {fmt_value(target, fig.unit)}" if target is not None else "",
            result_cell(fig),
            "→".join(f"{v:.1f}" for v in fig.load),
            fig.note,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render_report(report: dict[str, Any]) -> str:
    """The whole Markdown block: machine line, table, sections that could not be measured."""
    m = report["machine"]
    head = (
        f"Measured {report['started']} → {report['finished']} on {m['cpus']} CPUs ({m['platform']}, "
        f"Python {m['python']}, Dagster {m['dagster']}, commit {m['commit']}); "
        f"load average (1 min) {m['load_start']:.2f} at start, {m['load_end']:.2f} at the end, "
        f"max {m['load_max']:.2f} (sampled every 5 s); the load column: at the start → end of each section."
    )
    figures = [Figure.from_json(f) for f in report["figures"]]
    parts = [head, *kept_line(figures, report["started"]), "", render_table(figures)]
    if report.get("errors"):
        parts += ["", "Not measured:", *(f"- {section}: {message}" for section, message in report["errors"].items())]
    return "\n".join(parts) + "\n"


def kept_line(figures: Sequence[Figure], started: str) -> list[str]:
    """The sections `--merge` kept from earlier runs, each with its own time and commit (the header's are this
    run's), as one line; none when every figure is this run's."""
    kept: dict[str, tuple[str, str]] = {}
    for fig in figures:
        if fig.measured_at and fig.measured_at < started:
            kept.setdefault(fig.section, (fig.measured_at, fig.commit or "unknown"))
    if not kept:
        return []
    each = "; ".join(f"{section} at {at}, commit {commit}" for section, (at, commit) in kept.items())
    return ["", f"Kept from earlier runs (`--merge`), measured at their own time: {each}."]


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


def write_report(report: dict[str, Any], results_dir: Path) -> tuple[Path, Path]:
    """bench-<timestamp>.json and latest.json (same content); latest.md holds the Markdown block."""
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    dated = results_dir / f"bench-{report['started'].replace(':', '').replace('-', '')}.json"
    latest = results_dir / "latest.json"
    for path in (dated, latest):
        path.write_text(text)
    (results_dir / "latest.md").write_text(render_report(report))
    return dated, latest


# docs/bench.md's "Latest results" lie between these markers; `make bench` rewrites them, nothing else does.
DOC_BEGIN = "<!-- make bench writes from here: do not edit by hand -->"
DOC_END = "<!-- make bench writes up to here -->"


def write_doc(report: dict[str, Any], doc: Path) -> None:
    """Replace the block between the markers of `doc` with this report (table, date, machine, load)."""
    text = doc.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise ValueError(f"{doc} has no {DOC_BEGIN!r} … {DOC_END!r} block for the results")
    head, rest = text.split(DOC_BEGIN, 1)
    doc.write_text(f"{head}{DOC_BEGIN}\n{render_report(report)}{DOC_END}{rest.split(DOC_END, 1)[1]}")


def merge_previous(figures: list[Figure], sections_run: Iterable[str], previous: dict[str, Any]) -> list[Figure]:
    """Figures of sections not run this time, taken from an earlier report (each keeps its measured_at and
    commit; one from a report older than the commit field gets that report's commit if that run measured it)."""
    ran = set(sections_run)
    kept = [Figure.from_json(f) for f in previous.get("figures", []) if f["section"] not in ran]
    for fig in kept:
        if not fig.commit and fig.measured_at >= previous.get("started", "~"):
            fig.commit = previous.get("machine", {}).get("commit", "")
    order = {s: i for i, s in enumerate(SECTIONS)}
    return sorted([*figures, *kept], key=lambda f: order.get(f.section, len(order)))
