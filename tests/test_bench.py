"""`make bench`'s pure parts: aggregation, pass/fail against the targets, the Markdown table, the JSON shape, the
locations20 section's rows and checks. Nothing here is timed: the measuring itself runs only in `make bench`
(one slow test runs a small stack of the locations20 section, to prove its measuring works)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench import bench, locations, report, sections
from bench.report import Figure
from dagster_platform import procs
from dagster_platform.local import lifecycle
from dagster_platform.paths import ROOT


def report_of(figures, errors=None, started="2026-11-25T10:35:00Z", **machine):
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
    return report.build_report(figures, errors or {}, machine, {"runs": 3}, started, "2026-11-26T10:50:00Z")


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
        ("runs.example_job", [4.0, 5.5, 4.5], True),  # the median counts, not the worst run
        ("runs.example_job", [5.1, 6.0, 4.0], False),
        ("runs.example_job", [5.0], True),  # the limit itself passes
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
        "dev.make_dev_daemon": 10.0,
        "template.green": 60.0,
        "stack.launch_success": 3.0,
        "runs.example_job": 5.0,
        "test.make_test": 600.0,
        "test.make_test_fast": 60.0,
    }


def test_table_rows_show_stats_target_and_result():
    table = report.render_table(
        [
            Figure("runs.example_job", "example job", "s", [2.5, 5.0, 2.0], "per pair", load=[1.23, 2.5]),
            Figure("template.green", "template → green", "s", [70.5, 64.0, 80.25]),
            Figure("dev.dg_dev", "`dg dev` → ready", "s", [12.0, 11.0, 13.0]),
            Figure("stack.rss_webserver", "RSS webserver", "MiB", [180.4, 181.0, 179.0]),
            Figure("stack.drain_rate", "drain rate", "runs/min", [40.0, 42.5, 41.0]),
        ]
    )
    lines = table.splitlines()
    assert lines[0] == "| figure | median | min | max | runs | target | result | load | note |"
    assert lines[1] == "|---|---:|---:|---:|---:|---|---|---|---|"
    assert lines[2] == "| example job | 2.5 s | 2.0 s | 5.0 s | 3 | ≤ 5.0 s | pass | 1.2→2.5 | per pair |"
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
            "runs.example_job",
            "example job",
            "s",
            [2.5, 5.0, 2.0],
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
        "key": "runs.example_job",
        "section": "runs",
        "label": "example job",
        "unit": "s",
        "samples": [2.5, 5.0, 2.0],
        "median": 2.5,
        "min": 2.0,
        "max": 5.0,
        "runs": 3,
        "target": {"op": "<=", "value": 5.0},
        "passed": True,
        "note": "per pair",
        "failed": "",
        "measured_at": "2026-11-25T10:40:00Z",
        "load": [1.5, 0.75],
        "commit": "",
    }
    assert data["figures"][1]["target"] is None
    assert data["figures"][1]["passed"] is None
    # A figure read back from JSON is the same figure; one from an older report without load or failed, too.
    assert Figure.from_json(data["figures"][0]).to_json() == data["figures"][0]
    older = {k: v for k, v in data["figures"][1].items() if k not in ("load", "failed", "measured_at", "commit")}
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


def test_kept_figures_keep_their_own_time_and_commit_in_the_report():
    """The header names this run's date and commit; a section --merge kept is named with its own, not those."""
    older = report_of([Figure("dev.dg_dev", "dg dev", "s", [5.0], measured_at="2026-11-25T10:40:00Z")])
    older["machine"]["commit"] = "0ld0001"  # measured by that run: its commit is that run's
    again = report.merge_previous([], ["test"], older)  # a later run kept it, then another one
    assert again[0].commit == "0ld0001"
    twice = report.merge_previous([], ["test"], report_of(again, commit="notthis"))
    assert twice[0].commit == "0ld0001"
    fresh = Figure("test.make_test", "make test", "s", [500.0], measured_at="2026-11-26T09:00:00Z", commit="new0002")
    data = report_of([*twice, fresh], started="2026-11-26T08:50:00Z")
    text = report.render_report(data)
    assert "commit abc1234" in text.splitlines()[0]
    kept = "Kept from earlier runs (`--merge`), measured at their own time: "
    kept += "dev at 2026-11-25T10:40:00Z, commit 0ld0001."
    assert text.splitlines()[1:3] == ["", kept]
    assert "Kept from" not in report.render_report(report_of([fresh], started="2026-11-26T08:50:00Z"))


def test_only_accepts_known_sections():
    assert bench.parse_only("dev, stack") == ["dev", "stack"]
    with pytest.raises(Exception, match="--only"):
        bench.parse_only("dev,nope")


def test_command_line_options():
    args = bench.build_parser().parse_args(["--runs", "5", "--only", "dev,check", "--make-test-runs", "2"])
    assert (args.runs, args.only, args.make_test_runs) == (5, ["dev", "check"], 2)
    assert bench.build_parser().parse_args([]).only == list(report.SECTIONS)
    assert bench.build_parser().parse_args(["--profile"]).profile is True


def test_dev_section_runs_plain_dagster_on_make_devs_repo_and_its_instance(tmp_path, monkeypatch):
    """`make dev`, `dg dev` and `dagster dev` alternate on the one repo `make dev` renders and its instance
    (.dagster_home); no other project is involved. Servers are not started: time_server records them."""
    dev_dir = tmp_path / "dev"
    repo = dev_dir / sections.EXAMPLE_JOB[0]
    started = []

    def fake_server(argv, cwd, owned, home, log, env=None, then=None, timeout=300.0):
        started.append({"argv": argv, "cwd": cwd, "owned": owned, "home": home, "env": env or {}})
        repo.mkdir(parents=True, exist_ok=True)  # what the cold make dev renders
        (repo / "pyproject.toml").write_text('[project]\nname = "example-pipelines"\n')
        return {"webserver": 1.0, "ready": 2.0, "daemon": 3.0, "all": 3.0, "stop": 0.5}

    monkeypatch.setattr(sections, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(sections, "DEV_DIR", dev_dir)
    monkeypatch.setattr(sections, "LOG_DIR", tmp_path / "logs")
    monkeypatch.setattr(sections, "time_server", fake_server)
    monkeypatch.setattr(sections, "say", lambda _message: None)
    figures = {f.key: f for f in sections.dev_figures(runs=2)}

    commands = [f"{Path(s['argv'][0]).name} {next(a for a in s['argv'][1:] if a[0] != '-')}" for s in started]
    # The cold make dev, then two rounds of: make dev, dg dev, dagster dev.
    assert commands == ["make dev"] + ["make dev", "dg dev", "dagster dev"] * 2
    assert all(f"DEV_FLAGS=--dev-dir {dev_dir}" in s["argv"] for s in started if s["argv"][0] == "make")
    assert {s["home"] for s in started} == {repo / ".dagster_home"}
    for plain in started[2:4]:
        assert plain["cwd"] == repo and Path(plain["argv"][0]).parent == repo / ".venv" / "bin"
        assert plain["env"]["DAGSTER_HOME"] == str(repo / ".dagster_home")
        assert plain["env"]["VIRTUAL_ENV"] == str(repo / ".venv")
        assert plain["env"]["DAGSTER_ENV"] == "local"
    assert figures["dev.ratio"].samples == [1.0, 1.0]
    assert figures["dev.ratio"].target is None  # make dev is dg dev: no custom runner's ≤ 0.5 target
    assert figures["dev.dagster_dev_all"].samples == [3.0, 3.0]
    assert figures["dev.dagster_ratio"].samples == [1.0, 1.0]


# --- locations20: one webserver, twenty locations ------------------------------------------------------------
def test_percentile_is_linear_between_the_closest_ranks():
    samples = [float(x) for x in range(10, 0, -1)]  # unsorted on purpose
    assert report.percentile(samples, 50) == 5.5
    assert report.percentile(samples, 95) == pytest.approx(9.55)
    assert report.percentile(samples, 100) == 10.0
    assert report.percentile([7.0], 95) == 7.0


def test_generated_locations_share_one_venv_each_with_its_own_package_and_server():
    repos = [Path(f"/w/repos/{locations.location_name(i)}") for i in (1, 2, 3)]
    found = locations.stack_locations(repos, Path("/w/broken/broken_location.py"))
    assert [(loc.name, loc.module, loc.venv_from, loc.required) for loc in found] == [
        ("bench-loc-01", "bench_loc_01.definitions", None, True),  # the one synced venv
        ("bench-loc-02", "bench_loc_02.definitions", "bench-loc-01", True),
        ("bench-loc-03", "bench_loc_03.definitions", "bench-loc-01", True),
        (locations.BROKEN, "", "bench-loc-01", False),
    ]
    assert found[1].env == {"PYTHONPATH": "/w/repos/bench-loc-02/src"}  # its own sources, not the venv's package
    assert found[3].python_file == "/w/broken/broken_location.py"
    assert "import bench_module_that_does_not_exist" in locations.BROKEN_SOURCE


def test_failed_alone_accepts_only_the_broken_location_in_error_with_webserver_and_daemon_alive():
    loaded = {"status": "LOADED", "error": None, "repositories": ["__repository__"]}
    broken = {"status": "LOADED", "error": "ModuleNotFoundError: No module named 'x'", "repositories": []}
    alive = {"webserver": {"alive": True}, "daemon": {"alive": True}, "code-server-b": {"alive": False}}
    state = {"a": loaded, "b": loaded, "bad": broken}
    assert locations.failed_alone(state, ["a", "b"], "bad", alive) == []
    assert locations.failed_alone({"a": loaded}, ["a"], None, alive) == []  # the 1-location baseline
    problems = locations.failed_alone(
        {"a": {"status": "LOADING", "error": None}, "bad": loaded, "extra": loaded},
        ["a", "b"],
        "bad",
        {"webserver": {"alive": True}, "daemon": {"alive": False}},
    )
    assert problems == [
        "a is LOADING: not loaded",
        "b is not in the workspace",
        f"bad shows no load error: {loaded}",
        "unexpected locations: extra",
        "daemon is not alive",
    ]


def test_process_tree_rss_counts_the_children(tmp_path):
    child = subprocess.Popen(["sleep", "30"])
    try:
        table = procs.all_stat_fields()
        mine = procs.rss_mib(os.getpid())
        assert locations.tree_rss_mib(os.getpid(), table) >= mine + procs.rss_mib(child.pid) > mine
    finally:
        child.kill()
        child.wait()


def fake_side(loaded, failed, stacks=2, samples=3, scale=1.0):
    return {
        "up": [30.0 * scale] * stacks,
        "all_loaded": [10.0 * scale, 12.0 * scale][:stacks],
        "ready": [14.0 * scale] * stacks,
        "rss_webserver": [160.0 + loaded] * stacks,
        "rss_daemon": [135.0] * stacks,
        "rss_code_servers": [140.0 * loaded] * stacks,
        "asset_graph": [20.0 * scale, 40.0 * scale, 30.0 * scale] * stacks,
        "asset_graph_p95": [39.0 * scale] * stacks,
        "runs_page": [25.0] * samples * stacks,
        "runs_page_p95": [25.0] * stacks,
        "asset_nodes": [3.0 * loaded] * stacks,
        "runs_listed": [5.0] * stacks,
        "loaded": [float(loaded)] * stacks,
        "failed": [float(failed)] * stacks,
    }


def test_locations_rows_pair_every_figure_with_its_one_location_baseline():
    sides = {"one": fake_side(1, 0), "many": fake_side(20, 1, scale=3.0)}
    figures = locations.figures_of(sides, 20, 3)
    keys = [f.key for f in figures]
    assert keys[:4] == [
        "locations20.all_loaded",
        "locations20.all_loaded.baseline",
        "locations20.ready",
        "locations20.ready.baseline",
    ]
    assert keys[-2:] == ["locations20.all_loaded_ratio", "locations20.asset_graph_ratio"]
    assert len(figures) == 2 * len(locations.ROWS) + 2
    assert all(f.section == "locations20" for f in figures)
    by_key = {f.key: f for f in figures}
    loaded = by_key["locations20.all_loaded"]
    assert loaded.label == "stack processes started → all 20 locations LOADED"
    assert "20 LOADED + 1 failed, alone (webserver and daemon alive)" in loaded.note
    assert by_key["locations20.all_loaded.baseline"].label == "stack processes started → all 1 location LOADED"
    assert by_key["locations20.asset_graph"].note.startswith("60 asset nodes; 3 requests a stack")
    # Ratios per pair of stacks: all LOADED directly, latencies as each stack's median.
    assert by_key["locations20.all_loaded_ratio"].samples == [3.0, 3.0]
    assert by_key["locations20.asset_graph_ratio"].samples == [3.0, 3.0]
    rows = report.render_table([by_key["locations20.asset_graph"], by_key["locations20.rss_code_servers"]])
    assert rows.splitlines()[2].startswith("| GraphQL asset graph, 20 locations | 90 ms | 60 ms | 120 ms | 6 |")
    assert rows.splitlines()[3].startswith("| RSS code servers (sum of trees), 20 locations | 2800 MiB |")


def test_locations20_is_a_section_with_its_location_count_option():
    assert "locations20" in report.SECTIONS
    assert bench.parse_only("locations20") == ["locations20"]
    args = bench.build_parser().parse_args(["--only", "locations20", "--locations", "3", "--locations-runs", "2"])
    assert (args.only, args.locations, args.locations_runs) == (["locations20"], 3, 2)
    defaults = bench.build_parser().parse_args([])
    assert (defaults.locations, defaults.locations_runs) == (20, 1)  # one pair of stacks takes minutes


@pytest.mark.slow
def test_locations_stack_measures_and_the_broken_location_fails_alone(tmp_path):
    """One real stack of the section, small: 2 template locations (one shared venv) + the broken one."""
    repos, broken = locations.render_locations(2, tmp_path / "work")
    (ROOT / ".stack").mkdir(exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="test-bench-", dir=ROOT / ".stack"))
    try:
        values = locations.measure(repos, broken, samples=2, runs=2, timeout=400, state_dir=state_dir, settle=0)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    assert (values["loaded"], values["failed"]) == (2, 1)  # measure() raises unless it failed alone
    assert values["asset_nodes"] > 0 and values["runs_listed"] == 2
    assert len(values["asset_graph"]) == len(values["runs_page"]) == 2
    for name in ("up", "all_loaded", "ready", "rss_webserver", "rss_daemon", "rss_code_servers"):
        assert values[name] > 0, name
    assert values["rss_code_servers"] > 100  # two live code servers (the broken one's has exited)
    assert not [name for name, info in lifecycle.status(state_dir).items() if info["alive"]]


def test_the_results_block_of_the_doc_is_rewritten_and_nothing_else(tmp_path):
    doc = tmp_path / "bench.md"
    before, after = "# Benchmarks\nhand-written reference\n\n## Latest results\n", "\n## After\nkept\n"
    doc.write_text(f"{before}{report.DOC_BEGIN}\nold table\n{report.DOC_END}{after}")
    data = report_of([Figure("dev.dg_dev", "dg dev", "s", [1.0])])
    report.write_doc(data, doc)
    assert doc.read_text() == f"{before}{report.DOC_BEGIN}\n{report.render_report(data)}{report.DOC_END}{after}"
    report.write_doc(data, doc)  # again: the same page, not a second block
    assert doc.read_text().count(report.DOC_BEGIN) == 1 and "old table" not in doc.read_text()


def test_a_doc_without_the_results_block_is_refused(tmp_path):
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n")
    with pytest.raises(ValueError, match="no .* block"):
        report.write_doc(report_of([Figure("dev.dg_dev", "dg dev", "s", [1.0])]), doc)
    assert doc.read_text() == "# Benchmarks\n"


def test_the_docs_page_holds_the_results_block():
    text = bench.DOC.read_text()
    assert text.count(report.DOC_BEGIN) == 1 and text.count(report.DOC_END) == 1
