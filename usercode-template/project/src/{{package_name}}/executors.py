"""How this location's jobs run their steps: EXECUTOR for every job (definitions.py sets it as the default),
PARALLEL_STEPS for a job that opts out."""

import dagster as dg

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
                    "{{ package_name }}.definitions",
                    "dagster_postgres",
                    "dagster_aws.s3.compute_log_manager",
                ]
            }
        }
    }
)
