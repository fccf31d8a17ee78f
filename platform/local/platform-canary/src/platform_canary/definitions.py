"""The platform's canary code location, run only by the local stack (`make stack`, tests/local).

It is deliberately different from the example location rendered from the template: its own lock (another
`requests` version), trivial fast jobs for latency and concurrency measurements, a job that fails on purpose
(platform-ops' run-failure alert), a schedule that ticks every minute, a sensor that reacts within seconds,
and the in-process executor. Schedule and sensor start STOPPED; the stack tests start them through GraphQL.
"""

import os
import time
from pathlib import Path

import dagster as dg
import requests

GROUP = "canary"


@dg.asset(group_name=GROUP, kinds={"python"})
def canary_ping() -> dg.MaterializeResult:
    """A trivial asset: proves a run can start, write events to the instance and finish."""
    return dg.MaterializeResult(metadata={"requests_version": requests.__version__, "pid": os.getpid()})


@dg.asset(group_name=GROUP, kinds={"python"}, deps=[canary_ping])
def canary_pong() -> dg.MaterializeResult:
    """Downstream of canary_ping, so the job has a dependency chain."""
    return dg.MaterializeResult(metadata={"ok": True})


canary_job = dg.define_asset_job("canary_job", selection=dg.AssetSelection.groups(GROUP))


class NapConfig(dg.Config):
    seconds: float = 2.0


@dg.op
def nap(config: NapConfig) -> float:
    """Holds a run slot for a while, so concurrency limits become observable."""
    time.sleep(config.seconds)
    return config.seconds


@dg.job(description="Sleeps; used to check the run queue's concurrency limits.")
def nap_job():
    nap()


@dg.op
def speak() -> None:
    """One line to stdout, one to stderr: the step-log (compute log) round trip through the object store."""
    import sys

    print("canary says hello on stdout", flush=True)
    print("canary says hello on stderr", file=sys.stderr, flush=True)


@dg.job(description="Prints one line to stdout and one to stderr; the UI must show both after the run.")
def speak_job():
    speak()


@dg.op
def explode() -> None:
    raise RuntimeError("platform-canary fails on purpose")


# No automatic retry (the instance retries failed runs once): one failure, one run-failure alert to count.
@dg.job(description="Fails on purpose: the platform-ops run-failure alert's test.", tags={"dagster/max_retries": "0"})
def fail_job():
    explode()


@dg.schedule(job=canary_job, cron_schedule="* * * * *", execution_timezone="UTC")
def canary_every_minute(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time.isoformat()
    return dg.RunRequest(run_key=f"minute-{tick}", tags={"canary/trigger": "schedule"})


def trigger_dir() -> Path:
    """Where tests drop trigger files (CANARY_TRIGGER_DIR; under DAGSTER_HOME by default)."""
    default = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home") / "canary-triggers"
    return Path(os.environ.get("CANARY_TRIGGER_DIR") or default)


@dg.sensor(job=canary_job, minimum_interval_seconds=5)
def canary_trigger_files(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One run per new trigger file; the cursor is the last file name handled."""
    folder = trigger_dir()
    files = sorted(p.name for p in folder.glob("*.trigger")) if folder.is_dir() else []
    new = [name for name in files if name > (context.cursor or "")]
    if not new:
        return dg.SkipReason(f"no new trigger files in {folder}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=name, tags={"canary/trigger": "sensor", "canary/file": name}) for name in new
        ],
        cursor=new[-1],
    )


defs = dg.Definitions(
    assets=[canary_ping, canary_pong],
    # One process per run, no process per step: runs here measure the platform's overhead (queue,
    # launcher, run worker, storage), not the executor's.
    executor=dg.in_process_executor,
    jobs=[canary_job, nap_job, speak_job, fail_job],
    schedules=[canary_every_minute],
    sensors=[canary_trigger_files],
)
