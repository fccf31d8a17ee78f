"""Helpers shared by the template tests (fixtures live in conftest.py)."""

import os
import subprocess
from pathlib import Path

# The second answer set differs in every answer a data engineer types, and comes from a platform with other
# settings (the private `_...` variables `make new-usercode` takes from platform/usercode.yaml and values).
CUSTOM_ANSWERS = {
    "project_name": "Sales Forecasts",
    "location_name": "sales-forecasts",
    "package_name": "sales_forecasting",
    "owner_team": "sales-analytics",
    "owner_email": "sales-analytics@example.org",
    "description": "Sales forecasts for finance",
    "_image_registry": "registry.example.org/analytics",
    "_acceptance_namespace": "analytics-acc",
    "_production_namespace": "analytics-prod",
    "_acceptance_postgres_secret": "analytics-acc-postgresql",
    "_production_postgres_secret": "analytics-prod-postgresql",
    "_acceptance_db_domain": "acc.dwh.example.org",
    "_production_db_domain": "prod.dwh.example.org",
}


def run_make(repo: Path, *targets: str, offline: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_OFFLINE": "1"} if offline else dict(os.environ)
    # The rendered repo must not borrow the platform's virtualenv.
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["make", "--no-print-directory", *targets], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
