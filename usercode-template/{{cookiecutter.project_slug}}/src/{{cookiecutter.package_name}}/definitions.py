import copy
from pathlib import Path

import dagster as dg
from dagster._record import replace

from {{ cookiecutter.package_name }}.settings import current_preview

# How every job of this location runs its steps, on a laptop (`make dev`) and in the cluster's run pods alike:
# each step in its own process (the multiprocess executor, Dagster's default), but forked from a server that
# imports these modules once per run. Dagster's default start method, `spawn`, starts a fresh Python per step
# that imports Dagster, the instance's storage and this package again (1–2 s per step on 2 cores).
# - this package's definitions (and Dagster with them);
# - dagster_postgres: the cluster's run and event storage; it brings SQLAlchemy and Dagster's SQL storage,
#   which the local SQLite instance uses too (~0.6 s per step otherwise);
# - dagster_aws' S3 step-log manager: the cluster's step logs; the package is imported by every definitions
#   load anyway (its components are a Dagster plugin).
EXECUTOR = dg.multiprocess_executor.configured(
    {
        "start_method": {
            "forkserver": {
                "preload_modules": [
                    "{{ cookiecutter.package_name }}.definitions",
                    "dagster_postgres",
                    "dagster_aws.s3.compute_log_manager",
                ]
            }
        }
    }
)


def stopped(instigator):
    """A copy of a schedule or sensor that is STOPPED by default (Dagster 1.13's `with_attributes` cannot
    change `default_status`; every schedule and sensor class keeps it in `_default_status`, checked below)."""
    is_schedule = isinstance(instigator, dg.ScheduleDefinition)
    status = dg.DefaultScheduleStatus.STOPPED if is_schedule else dg.DefaultSensorStatus.STOPPED
    if not isinstance(instigator, dg.ScheduleDefinition | dg.SensorDefinition):  # e.g. a partitioned schedule
        return replace(instigator, default_status=status)
    if instigator.default_status == status:
        return instigator
    stopped_copy = copy.copy(instigator)
    stopped_copy._default_status = status
    if stopped_copy.default_status != status:
        raise RuntimeError(f"cannot stop {instigator.name} by default: Dagster changed where it keeps that")
    return stopped_copy


def preview_safe(definitions: dg.Definitions) -> dg.Definitions:
    """In a preview of a merge request (DAGSTER_PREVIEW=mr-<iid>, set by the platform) every schedule and
    sensor is STOPPED by default, whatever its code declares: a preview never starts automation by itself
    (one can still be started by hand in the UI). Without DAGSTER_PREVIEW the definitions are unchanged."""
    if not current_preview():
        return definitions
    return replace(
        definitions,
        schedules=[stopped(s) for s in definitions.schedules or []],
        sensors=[stopped(s) for s in definitions.sensors or []],
    )


@dg.definitions
def defs():
    return preview_safe(
        dg.Definitions.merge(
            dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
            dg.Definitions(executor=EXECUTOR),
        )
    )
