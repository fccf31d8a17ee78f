from pathlib import Path

import dagster as dg

from {{ package_name }}.executors import EXECUTOR
from {{ package_name }}.previews import preview_safe


@dg.definitions
def defs():
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # How every job runs its steps, here and in the cluster's run pods (executors.py: which, and why).
    with_executor = dg.Definitions.merge(loaded, dg.Definitions(executor=EXECUTOR))
    # A preview of a merge request never starts a schedule or sensor by itself (previews.py).
    return preview_safe(with_executor)
