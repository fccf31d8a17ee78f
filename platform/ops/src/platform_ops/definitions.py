"""The platform's operations code location `platform-ops` (`dagster api grpc -m platform_ops.definitions`):
run-failure alerts for every location, the canary, run retention. The daemon heartbeat check is not a
Dagster definition (the daemon cannot report its own death): `python -m platform_ops.heartbeat`."""

import dagster as dg

from platform_ops.canary import platform_canary, platform_canary_schedule
from platform_ops.retention import run_retention, run_retention_schedule
from platform_ops.run_alerts import platform_run_failure_alert

defs = dg.Definitions(
    jobs=[platform_canary, run_retention],
    schedules=[platform_canary_schedule, run_retention_schedule],
    sensors=[platform_run_failure_alert],
    # One process per run, none per step: both jobs have one op.
    executor=dg.in_process_executor,
)
