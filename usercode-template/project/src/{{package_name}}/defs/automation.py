"""How the orders pipeline runs: one asset job, a daily schedule and a sensor on a landing directory."""

import os
from pathlib import Path

import dagster as dg

orders_job = dg.define_asset_job(
    name="orders_job",
    selection=dg.AssetSelection.groups("orders"),
    description="Load raw orders and rebuild the daily totals and the summary.",
    # Counted by the platform's tag concurrency limit on warehouse-bound runs.
    tags={"platform/warehouse": "{{ location_name }}"},
)


# The schedule and the sensor start STOPPED (Dagster's default) until someone starts them in the UI. One
# that should start by itself once deployed declares
# `default_status=outside_previews(dg.DefaultScheduleStatus.RUNNING)` (previews.py): RUNNING in the
# location, STOPPED in a preview of a merge request.
@dg.schedule(job=orders_job, cron_schedule="0 6 * * *", execution_timezone="UTC")
def daily_orders_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Rebuild everything every morning from the seed (or last loaded) data."""
    day = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=f"daily-{day}", tags={"orders/date": day})


def landing_dir() -> Path:
    """Where the shop system drops order files (ORDERS_LANDING_DIR; a local folder by default)."""
    default = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home") / "landing"
    return Path(os.environ.get("ORDERS_LANDING_DIR") or default)


@dg.sensor(job=orders_job, minimum_interval_seconds=30)
def new_order_files(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One run per new CSV file in the landing directory; the cursor is the last file name handled."""
    folder = landing_dir()
    if not folder.is_dir():
        return dg.SkipReason(f"landing directory {folder} does not exist yet")
    new_files = sorted(p for p in folder.glob("*.csv") if p.name > (context.cursor or ""))
    if not new_files:
        return dg.SkipReason(f"no new files in {folder}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=path.name,
                run_config={"ops": {"raw_orders": {"config": {"source_files": [str(path)]}}}},
                tags={"orders/file": path.name},
            )
            for path in new_files
        ],
        cursor=new_files[-1].name,
    )
