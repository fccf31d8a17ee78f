"""Run-failure alert: one webhook message per failed run, whichever code location ran it.

Dagster's run-failure sensor keeps a cursor (the event-log id of the last failure it handled) in the
instance, so each failure event is handed to this function once: one alert per failed run, across ticks
and daemon restarts; runs that failed before the sensor first ran are not alerted. When the webhook
refuses (non-2xx, after alerts.post's retries) the function raises: the tick is recorded as FAILURE with
that error (visible under Automation in the UI and in the daemon's log). Dagster then still moves the
cursor past that run (run-status sensors never repeat side effects), so that alert is not sent again.
"""

import dagster as dg

from platform_ops import alerts

SENSOR_NAME = "platform_run_failure_alert"


def _innermost(error):
    while error is not None and error.cause is not None:
        error = error.cause
    return error


def first_error_line(context: dg.RunFailureSensorContext) -> str:
    """The first line of the user's error (the innermost cause of the first failed step), else of the run
    failure's own error or message."""
    candidates = [event.step_failure_data.error for event in context.get_step_failure_events()]
    failure_data = context.failure_event.event_specific_data
    candidates.append(getattr(failure_data, "error", None))
    for error in map(_innermost, candidates):
        if error is not None and error.message.strip():
            return error.message.strip().splitlines()[0]
    return (context.failure_event.message or "no error message").strip().splitlines()[0]


def location_of(run: dg.DagsterRun) -> str:
    origin = run.remote_job_origin
    return origin.location_name if origin else run.tags.get("dagster/code_location", "unknown")


@dg.run_failure_sensor(
    name=SENSOR_NAME,
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one message per failed run (any code location) to PLATFORM_ALERT_WEBHOOK_URL.",
)
def platform_run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    url = alerts.webhook_url()
    if url is None:
        context.log.warning(
            f"alerts are off ({alerts.WEBHOOK_URL_ENV} is not set): not alerting on failed run {run.run_id}"
        )
        return
    payload = alerts.run_failure_body(run.run_id, run.job_name, location_of(run), first_error_line(context))
    status = alerts.post(payload, url)  # raises AlertDeliveryError: the tick fails with it
    context.log.info(f"alerted on failed run {run.run_id} ({run.job_name}): webhook answered {status}")
