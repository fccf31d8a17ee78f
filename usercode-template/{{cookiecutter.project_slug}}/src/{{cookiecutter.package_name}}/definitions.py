from pathlib import Path

import dagster as dg

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


@dg.definitions
def defs():
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=EXECUTOR),
    )
