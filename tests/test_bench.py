"""`make bench`'s pure parts: aggregation, pass/fail against the targets, the Markdown table, the JSON shape.
Nothing here is timed: the measuring itself runs only in `make bench`."""

from __future__ import annotations

import json

import pytest

from bench import bench, report
from bench.report import Figure


def report_of(figures, errors=None, **machine):
    machine = {
        "cpus": 2,
        "platform": "Linux",
        "python": "3.11.7",
        "dagster": "1.13.27",
        "commit": "abc1234",
        "load_start": 1.5,
        "load_end": 0.5,
        "load_max": 2.0,
        **machine,
    }
    return report.build_report(
        figures, errors or {}, machine, {"runs": 3}, "2026-11-25T10:35:00Z", "2026-11-25T10:50:00Z"
    )


def test_summary_is_median_min_max_of_the_runs():
    assert Figure("k.a", "a", "s", [5.0, 1.0, 3.0]).stats == {"median": 3.0, "min": 1.0, "max": 5.0, "runs": 3}
    # An even number of runs: the median is the mean of the middle two.
    assert Figure("k.a", "a", "s", [4.0, 1.0, 2.0, 10.0]).stats["median"] == 3.0
    assert Figure("k.a", "a", "s", []).stats == {"median": None, "min": None, "max": None, "runs": 0}


def test_ratios_are_taken_per_pair_of_runs():
    assert report.ratios([3.0, 4.0, 6.0], [10.0, 8.0, 12.0]) == [0.3, 0.5, 0.5]
    assert report.ratios([1.0], [0.0]) == []


def test_alternate_measures_the_sides_in_turn_and_collects_every_named_value():
    order, logged = [], []

    def side(name, values):
        return lambda i: order.append((name, i)) or values[i]

    collected = report.alternate(
        2,
        {
            "make dev": side("make dev", [{"ready": 2.0, "daemon": 5.0}, {"ready": 1.0, "daemon": 4.0}]),
            "job": side("job", [{"launch": [1.0, 2.0]}, {"launch": [3.0]}]),  # several samples per run
        },
        logged.append,
    )
    assert order == [("make dev", 0), ("job", 0), ("make dev", 1), ("job", 1)]
    assert collected == {"make dev": {"ready": [2.0, 1.0], "daemon": [5.0, 4.0]}, "job": {"launch": [1.0, 2.0, 3.0]}}
    assert logged[0] == "make dev run 1/2: ready=2.00, daemon=5.00"
    assert logged[1] == "job run 1/2: launch=1.00/2.00"


@pytest.mark.parametrize(
    ("key", "samples", "passed"),
    [
        ("dev.ratio", [0.2, 0.35, 0.25], True),  # the median counts, not the worst run
        ("dev.ratio", [0.31, 0.4, 0.2], False),
        ("dev.ratio", [0.3], True),  # the limit itself passes
        ("template.green", [61.0, 59.0, 75.0], False),
        ("stack.launch_success", [2.9, 3.4, 1.0], True),
        ("test.make_test", [599.0], True),
        ("dev.dg_dev", [30.0], None),  # no target
        ("dev.make_dev_daemon", [], False),  # a target and no measurement is not a pass
    ],
)
def test_pass_fail_is_the_median_against_the_target(key, samples, passed):
    assert Figure(key, "label", "s", samples).passed is passed


def test_a_failed_run_fails_the_figure_whatever_its_time():
    figure = Figure("test.make_test", "platform make test", "s", [100.0], failed="run 1 exit 2")
    assert figure.passed is False
    assert report.result_cell(figure) == "FAIL (run 1 exit 2)"


def test_every_issue_target_is_stated():
    assert report.TARGETS == {
        "dev.ratio": 0.3,
        "dev.make_dev_daemon": 10.0,
        "template.green": 60.0,
        "stack.launch_success": 3.0,
        "runs.example_job": 5.0,
        "dev.repo_ratio": 0.3,
        "test.make_test": 600.0,
    }


def test_table_rows_show_stats_target_and_result():
    table = report.render_table(
        [
            Figure("dev.ratio", "ready ratio", "x", [0.25, 0.5, 0.2], "per pair", load=[1.23, 2.5]),
            Figure("template.green", "template → green", "s", [70.5, 64.0, 80.25]),
            Figure("dev.dg_dev", "`dg dev` → ready", "s", [12.0, 11.0, 13.0]),
            Figure("stack.rss_webserver", "RSS webserver", "MiB", [180.4, 181.0, 179.0]),
            Figure("stack.drain_rate", "drain rate", "runs/min", [40.0, 42.5, 41.0]),
        ]
    )
    lines = table.splitlines()
    assert lines[0] == "| figure | median | min | max | runs | target | result | load | note |"
    assert lines[1] == "|---|---:|---:|---:|---:|---|---|---|---|"
    assert lines[2] == "| ready ratio | 0.25× | 0.20× | 0.50× | 3 | ≤ 0.30× | pass | 1.2→2.5 | per pair |"
    assert lines[3] == "| template → green | 70.5 s | 64.0 s | 80.2 s | 3 | ≤ 60.0 s | FAIL |  |  |"
    assert lines[4] == "| `dg dev` → ready | 12.0 s | 11.0 s | 13.0 s | 3 |  |  |  |  |"
    assert lines[5] == "| RSS webserver | 180 MiB | 179 MiB | 181 MiB | 3 |  |  |  |  |"
    assert lines[6] == "| drain rate | 41.0/min | 40.0/min | 42.5/min | 3 |  |  |  |  |"
    assert len(lines) == 7


def test_table_escapes_pipes_and_shows_long_times_without_decimals():
    table = report.render_table([Figure("test.make_test", "make test | all", "s", [412.4], "1 run")])
    assert "| make test \\| all | 412 s | 412 s | 412 s | 1 | ≤ 600 s | pass |  | 1 run |" in table


def test_report_names_the_machine_load_and_what_was_not_measured():
    data = report_of([Figure("dev.dg_dev", "dg dev", "s", [1.0])], errors={"stack": "no Postgres here"})
    text = report.render_report(data)
    assert "on 2 CPUs" in text
    assert "load average (1 min) 1.50 at start, 0.50 at the end, max 2.00 (sampled every 5 s)" in text
    assert "Not measured:\n- stack: no Postgres here" in text
    assert data["passed"] is False  # something was not measured


def test_json_shape(tmp_path):
    figures = [
        Figure(
            "dev.ratio",
            "ready ratio",
            "x",
            [0.25, 0.5, 0.2],
            "per pair",
            measured_at="2026-11-25T10:40:00Z",
            load=[1.5, 0.75],
        ),
        Figure("dev.dg_dev", "dg dev", "s", [12.0]),
    ]
    dated, latest = report.write_report(report_of(figures), tmp_path)
    assert dated.name == "bench-20261125T103500Z.json"
    data = json.loads(latest.read_text())
    assert data == json.loads(dated.read_text())
    assert (tmp_path / "latest.md").read_text() == report.render_report(data)
    assert set(data) == {"schema", "started", "finished", "machine", "options", "figures", "errors", "passed"}
    assert data["schema"] == report.SCHEMA_VERSION
    assert data["passed"] is True
    assert data["figures"][0] == {
        "key": "dev.ratio",
        "section": "dev",
        "label": "ready ratio",
        "unit": "x",
        "samples": [0.25, 0.5, 0.2],
        "median": 0.25,
        "min": 0.2,
        "max": 0.5,
        "runs": 3,
        "target": {"op": "<=", "value": 0.3},
        "passed": True,
        "note": "per pair",
        "failed": "",
        "measured_at": "2026-11-25T10:40:00Z",
        "load": [1.5, 0.75],
    }
    assert data["figures"][1]["target"] is None
    assert data["figures"][1]["passed"] is None
    # A figure read back from JSON is the same figure; one from an older report without load or failed, too.
    assert Figure.from_json(data["figures"][0]).to_json() == data["figures"][0]
    older = {k: v for k, v in data["figures"][1].items() if k not in ("load", "failed", "measured_at")}
    assert Figure.from_json(older) == Figure("dev.dg_dev", "dg dev", "s", [12.0])


def test_merge_keeps_earlier_sections_in_section_order():
    previous = report_of(
        [
            Figure("test.make_test", "make test", "s", [300.0], measured_at="2026-11-25T10:20:00Z"),
            Figure("dev.dg_dev", "old dg dev", "s", [99.0]),
        ]
    )
    merged = report.merge_previous([Figure("dev.dg_dev", "new dg dev", "s", [12.0])], ["dev"], previous)
    assert [(f.key, f.label) for f in merged] == [("dev.dg_dev", "new dg dev"), ("test.make_test", "make test")]
    assert merged[1].measured_at == "2026-11-25T10:20:00Z"


def test_only_accepts_known_sections():
    assert bench.parse_only("dev, stack") == ["dev", "stack"]
    with pytest.raises(Exception, match="--only"):
        bench.parse_only("dev,nope")


def test_command_line_options():
    args = bench.build_parser().parse_args(["--runs", "5", "--only", "dev,check", "--make-test-runs", "2"])
    assert (args.runs, args.only, args.make_test_runs) == (5, ["dev", "check"], 2)
    assert bench.build_parser().parse_args([]).only == list(report.SECTIONS)
    assert bench.build_parser().parse_args(["--profile"]).profile is True
