"""Run retention: delete every finished run (SUCCESS, FAILURE, CANCELED) created more than N days ago,
with its event log, through Dagster's own API (instance.delete_run). Queued, starting, started and
canceling runs are never touched, nor is the retention run itself. Runs are fetched oldest first in batches
(500 by default), so a large backlog is never loaded at once.

N: the op config's `days`, else env PLATFORM_RETENTION_DAYS (set per environment), else 90. Tick history
of schedules and sensors is purged by the daemon itself (`retention:` in platform/instance/instance.yaml).
"""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg

RETENTION_DAYS_ENV = "PLATFORM_RETENTION_DAYS"
DEFAULT_DAYS = 90
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class RetentionConfig(dg.Config):
    days: int | None = None  # None: PLATFORM_RETENTION_DAYS, else 90
    batch_size: int = 500


def retention_days(configured: int | None) -> tuple[int, str]:
    """(days, where it came from); refuses anything but a whole number of days >= 1."""
    if configured is not None:
        days, source = configured, "op config"
    elif raw := os.environ.get(RETENTION_DAYS_ENV, "").strip():
        try:
            days, source = int(raw), RETENTION_DAYS_ENV
        except ValueError:
            raise dg.Failure(f"{RETENTION_DAYS_ENV}={raw!r} is not a whole number of days") from None
    else:
        days, source = DEFAULT_DAYS, "default"
    if days < 1:
        raise dg.Failure(f"retention of {days} days ({source}) refused: it must be at least 1")
    return days, source


@dg.op(description="Deletes finished runs older than the retention, with their event logs, in batches.")
def delete_old_runs(context: dg.OpExecutionContext, config: RetentionConfig) -> dg.Output[int]:
    days, source = retention_days(config.days)
    cutoff = datetime.now(UTC) - timedelta(days=days)
    filters = dg.RunsFilter(created_before=cutoff, statuses=FINISHED)
    context.log.info(f"deleting finished runs created before {cutoff:%Y-%m-%d %H:%M} UTC ({days} days, {source})")
    deleted = 0
    while True:
        batch = context.instance.get_run_records(filters=filters, limit=config.batch_size, ascending=True)
        doomed = [record.dagster_run.run_id for record in batch if record.dagster_run.run_id != context.run_id]
        for run_id in doomed:
            context.instance.delete_run(run_id)  # the run and its event log
        deleted += len(doomed)
        if doomed:
            context.log.info(f"deleted a batch of {len(doomed)} runs ({deleted} so far)")
        if len(batch) < config.batch_size or not doomed:
            break
    context.log.info(f"deleted {deleted} finished runs older than {days} days")
    return dg.Output(deleted, metadata={"deleted_runs": deleted, "days": days, "cutoff": cutoff.isoformat()})


@dg.job(description="Deletes finished runs older than the environment's retention (daily).")
def run_retention():
    delete_old_runs()


run_retention_schedule = dg.ScheduleDefinition(
    name="run_retention_daily",
    job=run_retention,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
