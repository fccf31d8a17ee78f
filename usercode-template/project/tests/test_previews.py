"""A preview of a merge request (DAGSTER_PREVIEW=mr-<iid>, set by the platform's deploy-preview job)
touches neither the location's tables nor its automation: its schedules and sensors are STOPPED by default
(previews.py), and the warehouse resource writes to the schema <package>_mr_<iid>. The automation rules hold
for whatever schedules and sensors the location defines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from {{ package_name }} import definitions
from {{ package_name }}.defs.warehouse import warehouse_from_env
from {{ package_name }}.previews import outside_previews, preview_safe
from {{ package_name }}.settings import (
    DATABASE_DOMAINS,
    PREVIEW_ENVIRONMENTS,
    SCHEMA,
    EnvironmentConfigError,
    warehouse_settings,
)

STOPPED = {dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED}
RUNNING = {dg.DefaultScheduleStatus.RUNNING, dg.DefaultSensorStatus.RUNNING}

# Loads the location in a fresh Python, as a preview's code server does: DAGSTER_PREVIEW is read when the
# modules under defs/ are imported. Prints name -> default status of every schedule and sensor.
LOAD_AND_LIST = """
import json
from {{ package_name }}.definitions import defs
repo = defs().get_repository_def()
print(json.dumps({item.name: item.default_status.value for item in [*repo.schedule_defs, *repo.sensor_defs]}))
"""


def statuses(defs: dg.Definitions) -> dict[str, object]:
    """name → default status of every schedule and sensor the location loads (Dagster's own included)."""
    repo = defs.get_repository_def()
    return {item.name: item.default_status for item in [*repo.schedule_defs, *repo.sensor_defs]}


def loaded_in_a_fresh_process(**environ: str) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_LIST],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        pytest.fail(f"the location did not load with {environ}:\n{result.stderr[-3000:]}", pytrace=False)
    return json.loads(result.stdout.strip().splitlines()[-1])


def running_by_default() -> dg.Definitions:
    """A branch whose automation declares itself RUNNING: what a preview must not start."""

    @dg.asset
    def something() -> None:
        """An asset."""

    job = dg.define_asset_job("something_job", selection=[something])

    @dg.sensor(job=job, default_status=dg.DefaultSensorStatus.RUNNING)
    def eager_sensor():
        return dg.SkipReason("nothing")

    schedule = dg.ScheduleDefinition(
        name="eager_schedule",
        job=job,
        cron_schedule="* * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(assets=[something], jobs=[job], schedules=[schedule], sensors=[eager_sensor])


def test_in_a_preview_every_schedule_and_sensor_is_stopped_by_default(defs):
    in_preview = loaded_in_a_fresh_process(DAGSTER_PREVIEW="mr-12")
    assert set(in_preview) == set(statuses(defs)), "a preview loads the same schedules and sensors"
    running = {name: status for name, status in in_preview.items() if status != "STOPPED"}
    assert not running, f"rule: in a preview every schedule and sensor is STOPPED by default; not: {running}"


@pytest.mark.parametrize(
    "status", [dg.DefaultScheduleStatus.RUNNING, dg.DefaultSensorStatus.RUNNING], ids=["schedule", "sensor"]
)
def test_outside_previews_is_as_declared_in_the_location_and_stopped_in_a_preview(status, monkeypatch):
    assert outside_previews(status) == status
    monkeypatch.setenv("DAGSTER_PREVIEW", "mr-12")
    assert outside_previews(status) == type(status).STOPPED


def test_a_preview_refuses_automation_that_would_start_by_itself(monkeypatch):
    declared = running_by_default()
    assert set(statuses(declared).values()) == RUNNING
    monkeypatch.setenv("DAGSTER_PREVIEW", "mr-12")
    with pytest.raises(dg.DagsterInvalidDefinitionError) as refused:
        preview_safe(declared)
    assert "schedule eager_schedule, sensor eager_sensor" in str(refused.value)
    assert "outside_previews" in str(refused.value)


def test_without_a_preview_the_definitions_are_as_declared(defs):
    declared = running_by_default()
    assert preview_safe(declared) is declared
    # definitions.py loads the schedules and sensors of the modules under defs/ as they declare them.
    folder = dg.load_from_defs_folder(path_within_project=Path(definitions.__file__).parent)
    assert statuses(defs) == statuses(folder)


def test_a_preview_writes_to_its_own_schema(local_env, monkeypatch):
    assert warehouse_from_env().db_schema == SCHEMA
    monkeypatch.setenv("DAGSTER_PREVIEW", "mr-12")
    warehouse = warehouse_from_env()
    assert warehouse.db_schema == "{{ package_name }}_mr_12"
    assert warehouse.sqlite_path == str(local_env / "warehouse.sqlite"), "the platform gave it its file"
    monkeypatch.delenv("WAREHOUSE_SQLITE_PATH")
    assert warehouse_from_env().sqlite_path == str(local_env / "warehouse_mr_12.sqlite")


# The platform's environments where previews may run, and those where they never do (settings.py).
PREVIEW_ENVS = [env for env in DATABASE_DOMAINS if env in PREVIEW_ENVIRONMENTS]
NO_PREVIEW_ENVS = [env for env in DATABASE_DOMAINS if env not in PREVIEW_ENVIRONMENTS]


@pytest.mark.parametrize("env", PREVIEW_ENVS)
def test_a_preview_in_a_preview_environment_uses_the_suffixed_schema(env):
    environ = {
        "DAGSTER_ENV": env,
        "DAGSTER_PREVIEW": "mr-7",
        "WAREHOUSE_HOST": f"warehouse.{DATABASE_DOMAINS[env]}",
        "WAREHOUSE_DB": "warehouse",
        "WAREHOUSE_USER": "dagster",
        "WAREHOUSE_PASSWORD": "from-a-k8s-secret",
    }
    assert warehouse_settings(environ).schema == "{{ package_name }}_mr_7"
    assert warehouse_settings({**environ, "DAGSTER_PREVIEW": ""}).schema == SCHEMA


NOT_HERE = "previews of merge requests run in"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DAGSTER_PREVIEW": "feature-x"}, "is not mr-<merge request IID>"),
        *(({"DAGSTER_PREVIEW": "mr-12", "DAGSTER_ENV": env}, NOT_HERE) for env in NO_PREVIEW_ENVS),
    ],
)
def test_a_bad_preview_or_one_where_previews_never_run_is_refused(environ, message):
    with pytest.raises(EnvironmentConfigError, match=message):
        warehouse_settings({"DAGSTER_HOME": "/tmp/x", **environ})
