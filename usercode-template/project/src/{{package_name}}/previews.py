"""A preview of a merge request (DAGSTER_PREVIEW=mr-<iid>, set by the platform; settings.py) never starts a
schedule or sensor by itself: in a preview every one of them is STOPPED by default (one can still be started
by hand in the UI to try it).

Dagster has no public way to change a definition's default status after it is built, so a schedule or sensor
that should start by itself in the location declares that with `outside_previews`, which gives RUNNING in the
location and STOPPED in a preview:

    @dg.sensor(job=orders_job, default_status=outside_previews(dg.DefaultSensorStatus.RUNNING))

Any other schedule or sensor that declares itself RUNNING would start in a preview: `preview_safe` (called by
definitions.py) refuses to load such a preview, naming it, and tests/test_previews.py fails on it first.
"""

import dagster as dg

from {{ package_name }}.settings import current_preview

STOPPED = (dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED)


def outside_previews(
    status: dg.DefaultScheduleStatus | dg.DefaultSensorStatus,
) -> dg.DefaultScheduleStatus | dg.DefaultSensorStatus:
    """`status` in the location itself; STOPPED in a preview (of the same kind: schedule or sensor)."""
    return type(status).STOPPED if current_preview() else status


def preview_safe(definitions: dg.Definitions) -> dg.Definitions:
    """`definitions` unchanged, unless this is a preview and one of its schedules or sensors would start by
    itself there: then loading stops with an error naming each one."""
    if not current_preview():
        return definitions
    running = [
        f"{kind} {item.name}"
        for kind, items in (("schedule", definitions.schedules), ("sensor", definitions.sensors))
        for item in items or []
        if item.default_status not in STOPPED
    ]
    if running:
        raise dg.DagsterInvalidDefinitionError(
            f"in this preview ({current_preview()}), which never starts automation by itself, these would "
            f"start by themselves: {', '.join(running)}. Declare each with default_status="
            f"outside_previews(dg.DefaultScheduleStatus.RUNNING) (or dg.DefaultSensorStatus.RUNNING) from "
            f"{__name__}: RUNNING in the location, STOPPED in a preview"
        )
    return definitions
