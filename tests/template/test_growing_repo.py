"""A data engineer grows a rendered repo; its tests check conventions over whatever its definitions load, not a
hard-coded list of assets. A new module under defs/ with an asset, its job, a schedule and a sensor that follow
the conventions passes the repo's own `make lint test` with no test changed. Modules that break a rule fail
`make test`, each failure naming the rule and what breaks it, and nothing else fails: an asset with no owner and
no description, and a module that would drop its definitions silently (a `@dg.definitions` function beside
module-level ones), named with each object it drops."""

import json
import os
import subprocess

import pytest

from dagster_platform.template.render import render

from .helpers import run_make

pytestmark = pytest.mark.slow

ANSWERS = {"project_name": "Shop Pipelines", "owner_team": "shop-data"}
PACKAGE = "shop_pipelines"

# Everything a new piece of the pipeline needs, in one module, as the template's README and modules show it.
GROWN = '''"""Customers: who ordered, counted after every load of the raw orders and every morning."""

import dagster as dg

from {package}.defs.orders import OWNERS, raw_orders
from {package}.defs.warehouse import Warehouse
from {package}.previews import outside_previews


@dg.asset(group_name="customers", owners=OWNERS, deps=[raw_orders], kinds={{"sql"}})
def customer_count(warehouse: Warehouse) -> dg.MaterializeResult:
    """How many distinct customers placed an order."""
    count = warehouse.query("SELECT COUNT(DISTINCT customer_id) AS n FROM raw_orders")[0]["n"]
    return dg.MaterializeResult(metadata={{"customers": int(count)}})


customers_job = dg.define_asset_job(
    name="customers_job",
    selection=dg.AssetSelection.groups("customers"),
    description="Count the customers who ordered.",
)

customers_schedule = dg.ScheduleDefinition(
    name="customers_schedule",
    job=customers_job,
    cron_schedule="0 7 * * *",
    execution_timezone="UTC",
    default_status=outside_previews(dg.DefaultScheduleStatus.RUNNING),
)


@dg.asset_sensor(asset_key=raw_orders.key, job=customers_job)
def customers_after_orders(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    """Count the customers again after every new load of the raw orders."""
    return dg.RunRequest(run_key=str(asset_event.storage_id))
'''

# warehouse.py's shape (a @dg.definitions function for a resource) with an asset, a job, a schedule and a
# sensor beside it: Dagster loads only what the function returns.
DROPPING = '''import dagster as dg

from {package}.defs.orders import OWNERS


@dg.asset(group_name="audit", owners=OWNERS)
def audit_log() -> None:
    """Who changed what."""


audit_job = dg.define_asset_job("audit_job", selection=[audit_log])
audit_schedule = dg.ScheduleDefinition(name="audit_schedule", job=audit_job, cron_schedule="0 5 * * *")


@dg.sensor(job=audit_job)
def audit_files() -> dg.SkipReason:
    return dg.SkipReason("nothing to audit")


@dg.definitions
def audit_resources() -> dg.Definitions:
    return dg.Definitions(resources={{"audit_sink": dg.ResourceDefinition.none_resource()}})
'''

# In the orders group (so orders_job runs it) but with no owner and no description.
CARELESS = """import dagster as dg


@dg.asset(group_name="orders")
def careless_orders() -> None:
    pass
"""

LOADED = f"""
import json
from {PACKAGE}.definitions import defs
loaded = defs()
repo = loaded.get_repository_def()
print(json.dumps({{
    "assets": [key.to_user_string() for key in loaded.resolve_all_asset_keys()],
    "jobs": list(repo.job_names),
    "schedules": {{s.name: s.default_status.value for s in repo.schedule_defs}},
    "sensors": {{s.name: s.default_status.value for s in repo.sensor_defs}},
}}))
"""


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.py"))}


def failed_tests(output: str) -> list[str]:
    return sorted(line.split()[1] for line in output.splitlines() if line.startswith("FAILED "))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Its own rendered repo (the session's shared renders stay untouched), with a team of its own."""
    return render(tmp_path_factory.mktemp("growing") / "repo", ANSWERS)


def loaded(repo, **environ) -> dict:
    """What the repo's definitions load (in its own virtualenv), with `environ` set."""
    env = {**os.environ, "DAGSTER_ENV": "local", "DAGSTER_HOME": str(repo / ".dagster_home"), **environ}
    env.pop("VIRTUAL_ENV", None)
    python = str(repo / ".venv" / "bin" / "python")
    result = subprocess.run([python, "-c", LOADED], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_new_module_that_follows_the_conventions_passes_with_no_test_changed(repo):
    tests_before = snapshot(repo / "tests")
    (repo / "src" / PACKAGE / "defs" / "customers.py").write_text(GROWN.format(package=PACKAGE))

    result = run_make(repo, "lint", "test")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    # The repo's tests passed with the new module loaded, not beside it.
    found = loaded(repo)
    assert "customer_count" in found["assets"]
    assert "customers_job" in found["jobs"]
    assert found["schedules"]["customers_schedule"] == "RUNNING"  # as declared: it starts once deployed
    assert found["sensors"]["customers_after_orders"] == "STOPPED"
    in_preview = loaded(repo, DAGSTER_PREVIEW="mr-5")
    assert set(in_preview["schedules"].values()) | set(in_preview["sensors"].values()) == {"STOPPED"}
    assert snapshot(repo / "tests") == tests_before


def test_modules_that_break_a_rule_fail_naming_the_rule_and_what_breaks_it(repo):
    tests_before = snapshot(repo / "tests")
    defs = repo / "src" / PACKAGE / "defs"
    modules = {defs / "careless.py": CARELESS, defs / "audit.py": DROPPING.format(package=PACKAGE)}
    for module, text in modules.items():
        module.write_text(text)
    try:
        result = run_make(repo, "test")
    finally:
        for module in modules:
            module.unlink()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "rule: every asset is owned by team:shop-data" in output
    assert "asset careless_orders: owners are not set" in output
    assert "rule: every asset says what it is" in output
    assert "asset careless_orders: no description" in output
    assert (
        f"src/{PACKAGE}/defs/audit.py ({PACKAGE}.defs.audit): not loaded: "
        "asset audit_log, job audit_job, schedule audit_schedule, sensor audit_files"
    ) in output, output[-4000:]
    assert failed_tests(output) == [
        "tests/test_definitions.py::test_every_asset_follows_the_rule[description]",
        "tests/test_definitions.py::test_every_asset_follows_the_rule[owner]",
        "tests/test_defs_modules.py::test_everything_defined_under_defs_is_loaded",
    ], output[-4000:]
    assert snapshot(repo / "tests") == tests_before  # no test was changed
