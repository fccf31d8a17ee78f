"""The exporter's numbers are the instance's: a SQLite instance with a known history (bench/metrics.py writes it
straight into the runs table), the exporter from the ops location's own .venv serving it, every series compared
with what the instance's public API says, and the finished-runs counter counting a run that finishes after start."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bench import metrics as bench_metrics
from dagster_platform import net
from tests.local.helpers import sample, scrape, wait_until

HISTORY = 300
WINDOW_S = 30 * 86400  # a third of the 90-day history


@pytest.fixture(scope="module")
def instance_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("history")
    bench_metrics.write_history(home, HISTORY)
    return home


@pytest.fixture(scope="module")
def exporter(instance_home):
    venv = bench_metrics.ops_venv()
    port = net.free_port()
    env = {"DAGSTER_HOME": str(instance_home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    argv = [str(venv / "bin" / "python"), "-m", "platform_ops.exporter", "--host", net.HOST, "--port", str(port),
            "--window", str(WINDOW_S)]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, cwd=instance_home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: net.port_open(net.HOST, port) or proc.poll() is not None, 120, "the exporter to listen")
        assert proc.poll() is None, "the exporter exited"
        yield f"http://{net.HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def location_of(run) -> str:
    return run.remote_job_origin.location_name


@pytest.mark.slow
def test_every_series_is_what_the_instance_says(instance_home, exporter):
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    samples = scrape(exporter)
    since = datetime.now(UTC) - timedelta(seconds=WINDOW_S)
    with DagsterInstance.from_config(str(instance_home)) as instance:
        finished = RunsFilter(statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE], updated_after=since)
        recent = Counter((r.status.value, location_of(r)) for r in instance.get_runs(filters=finished))
        in_flight = RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED])
        flying = Counter((r.status.value, location_of(r)) for r in instance.get_runs(filters=in_flight))
        queued = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
    assert recent and flying, "the history has runs in the window and in flight"
    exported_recent = {(dict(k[1])["status"], dict(k[1])["location"]): v for k, v in samples.items()
                       if k[0] == "dagster_runs_recent"}  # fmt: skip
    assert exported_recent == {key: float(n) for key, n in recent.items()}
    for (status, location), count in flying.items():
        assert sample(samples, "dagster_runs_in_flight", status=status, location=location) == count
        assert sample(samples, "dagster_run_oldest_age_seconds", status=status, location=location) > 0
    assert sample(samples, "dagster_run_queue_length") == queued
    # No webserver given: only the instance is read, and it is.
    assert sample(samples, "dagster_exporter_source_up", source="instance") == 1.0
    assert sample(samples, "dagster_exporter_source_up", source="webserver") is None
    # The history's runs all finished before the exporter started: the counter starts at zero.
    assert not [v for k, v in samples.items() if k[0] == "dagster_runs_finished_total" and v]
    assert sample(samples, "dagster_exporter_scrape_duration_seconds") < 5


@pytest.mark.slow
def test_a_run_failing_after_start_is_counted_once(instance_home, exporter):
    from dagster import DagsterInstance, DagsterRunStatus

    scrape(exporter)
    with DagsterInstance.from_config(str(instance_home)) as instance:
        template = instance.get_runs(limit=1)[0]
        run = instance.add_run(template.with_status(DagsterRunStatus.FAILURE)._replace(run_id="f" * 36))
    location = location_of(run)

    def failures() -> float | None:
        return sample(scrape(exporter), "dagster_runs_finished_total", status="FAILURE", location=location)

    wait_until(lambda: failures() == 1.0, 30, "the failed run to be counted")
    time.sleep(1)
    assert failures() == 1.0
