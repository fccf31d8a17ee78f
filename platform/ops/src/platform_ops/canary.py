"""Canary: a trivial job on a 15-minute schedule. Its SUCCESS proves the whole path on the cluster: the
daemon's scheduler ticks, the run queue dequeues, the run launcher starts a run worker from this image, the
worker writes its events to the instance's storage (and step logs to the bucket). A failure of it is
alerted like any other run's; a schedule that stops ticking shows as a stale canary in the UI."""

import os
import socket
import time

import dagster as dg

from platform_ops import alerts


@dg.op(description="Returns the time and where it ran; its output event lands in the instance's event log.")
def canary_probe(context: dg.OpExecutionContext) -> dg.Output[float]:
    now = time.time()
    return dg.Output(
        now,
        metadata={"environment": alerts.environment(), "host": socket.gethostname(), "pid": os.getpid()},
    )


@dg.job(description="Launch → SUCCESS end to end, every 15 minutes.", tags={"platform/ops": "canary"})
def platform_canary():
    canary_probe()


platform_canary_schedule = dg.ScheduleDefinition(
    name="platform_canary_every_15_minutes",
    job=platform_canary,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
