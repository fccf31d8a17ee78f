"""A preview of a merge request (DAGSTER_PREVIEW=mr-<iid>, set by the platform's deploy-preview job)
touches neither the location's tables nor its automation: its schedules and sensors are STOPPED by default
whatever the code declares, and the warehouse resource writes to the schema <package>_mr_<iid>."""

import dagster as dg
import pytest

from {{ cookiecutter.package_name }}.definitions import preview_safe
from {{ cookiecutter.package_name }}.defs.warehouse import warehouse_from_env
from {{ cookiecutter.package_name }}.settings import (
    DATABASE_DOMAINS,
    PREVIEW_ENVIRONMENTS,
    SCHEMA,
    EnvironmentConfigError,
    warehouse_settings,
)

STOPPED = {dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED}


def statuses(defs: dg.Definitions) -> dict[str, object]:
    """name → default status of every schedule and sensor the location loads (Dagster's own included)."""
    repo = defs.get_repository_def()
    return {item.name: item.default_status for item in [*repo.schedule_defs, *repo.sensor_defs]}


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


def test_in_a_preview_every_schedule_and_sensor_loaded_is_stopped_by_default(defs, monkeypatch):
    monkeypatch.setenv("DAGSTER_PREVIEW", "mr-12")
    from {{ cookiecutter.package_name }}.definitions import defs as load_defs

    found = statuses(load_defs())
    assert found and set(found.values()) <= STOPPED, found


def test_a_preview_stops_what_the_code_declares_running(monkeypatch):
    declared = running_by_default()
    running = {dg.DefaultSensorStatus.RUNNING, dg.DefaultScheduleStatus.RUNNING}
    assert set(statuses(declared).values()) == running
    monkeypatch.setenv("DAGSTER_PREVIEW", "mr-12")
    previewed = preview_safe(declared)
    assert statuses(previewed) == {
        "eager_schedule": dg.DefaultScheduleStatus.STOPPED,
        "eager_sensor": dg.DefaultSensorStatus.STOPPED,
    }
    dg.Definitions.validate_loadable(previewed)
    assert set(statuses(running_by_default()).values()) == running, "the code itself is untouched"


def test_without_a_preview_the_definitions_are_unchanged(defs):
    declared = running_by_default()
    assert preview_safe(declared) is declared
    from {{ cookiecutter.package_name }}.defs.automation import (
        daily_orders_schedule,
        new_order_files,
    )

    assert statuses(defs) == {
        daily_orders_schedule.name: daily_orders_schedule.default_status,
        new_order_files.name: new_order_files.default_status,
    }


def test_a_preview_writes_to_its_own_schema(local_env, monkeypatch):
    assert warehouse_from_env().db_schema == SCHEMA
    monkeypatch.setenv("DAGSTER_PREVIEW", "mr-12")
    warehouse = warehouse_from_env()
    assert warehouse.db_schema == "{{ cookiecutter.package_name }}_mr_12"
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
    assert warehouse_settings(environ).schema == "{{ cookiecutter.package_name }}_mr_7"
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
