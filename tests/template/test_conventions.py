"""A rendered repo's tests check conventions over whatever its definitions load, not a hard-coded list of
assets: a correct new asset needs no test change; one that breaks a rule fails naming the asset and the rule."""

import pytest

from dagster_platform.template.render import render

from .helpers import run_make

pytestmark = pytest.mark.slow

CORRECT_ASSET = '''"""Customers who ordered: a new asset that follows the location's conventions."""

import dagster as dg

from {package}.defs.orders import GROUP, OWNERS, raw_orders
from {package}.defs.warehouse import Warehouse


@dg.asset(group_name=GROUP, owners=OWNERS, deps=[raw_orders], kinds={{"sql"}})
def customer_count(warehouse: Warehouse) -> dg.MaterializeResult:
    """How many distinct customers placed an order."""
    count = warehouse.query("SELECT COUNT(DISTINCT customer_id) AS n FROM raw_orders")[0]["n"]
    return dg.MaterializeResult(metadata={{"customers": int(count)}})
'''

# In the orders group (so orders_job runs it) but with no owner and no description.
CARELESS_ASSET = """import dagster as dg


@dg.asset(group_name="orders")
def careless_orders() -> None:
    pass
"""


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.py"))}


def test_a_new_asset_is_checked_by_the_existing_tests(tmp_path):
    # Its own repo (the session's shared renders stay untouched), with a team of its own.
    repo = render(tmp_path / "repo", {"project_name": "Shop Pipelines", "owner_team": "shop-data"})
    defs_dir = repo / "src" / "shop_pipelines" / "defs"
    tests_before = snapshot(repo / "tests")

    (defs_dir / "customers.py").write_text(CORRECT_ASSET.format(package="shop_pipelines"))
    result = run_make(repo, "test")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    (defs_dir / "careless.py").write_text(CARELESS_ASSET)
    result = run_make(repo, "test")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    # The failures name the asset and the rule it breaks, and nothing else fails.
    assert "rule: every asset is owned by team:shop-data" in output
    assert "asset careless_orders: owners are not set" in output
    assert "rule: every asset says what it is" in output
    assert "asset careless_orders: no description" in output
    failed = sorted(line.split()[1] for line in output.splitlines() if line.startswith("FAILED "))
    assert failed == [
        "tests/test_definitions.py::test_every_asset_follows_the_rule[description]",
        "tests/test_definitions.py::test_every_asset_follows_the_rule[owner]",
    ], output[-4000:]

    assert snapshot(repo / "tests") == tests_before  # no test was changed for either asset
