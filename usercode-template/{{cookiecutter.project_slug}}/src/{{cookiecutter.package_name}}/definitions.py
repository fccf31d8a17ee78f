import copy
from pathlib import Path

import dagster as dg
from dagster._record import replace

from {{ cookiecutter.package_name }}.settings import current_preview

# How every job of this location runs its steps, on a laptop (`make dev`) and in the cluster's run pods
# alike: one after another in the run's own process (the in-process executor). For steps like these (SQL
# handed to the warehouse, small frames) a process per step costs more than the step: the example job's
# launch -> SUCCESS is measured in the platform's docs/bench.md (issue 11) against per-step processes
# forked from a preloaded forkserver and against Dagster's default `spawn`.
EXECUTOR = dg.in_process_executor

# For a job whose steps must run in parallel, or apart (a step's memory or a native crash must not take
# the run down): `@dg.job(executor_def=PARALLEL_STEPS)` or `dg.define_asset_job(..., executor_def=...)`.
# Each step then runs in its own process, forked from a server that imports these modules once per run
# (Dagster's default `spawn` starts a fresh Python per step, 1-2 s each on 2 cores):
# - this package's definitions (and Dagster with them);
# - dagster_postgres: the cluster's run and event storage (SQLAlchemy, Dagster's SQL storage);
# - dagster_aws' S3 step-log manager: the cluster's step logs.
PARALLEL_STEPS = dg.multiprocess_executor.configured(
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
