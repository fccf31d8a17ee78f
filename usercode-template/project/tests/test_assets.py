import dagster as dg
import pytest

from {{ package_name }}.defs.orders import (
    daily_order_totals,
    order_summary,
    parse_orders,
    raw_orders,
    summarize,
    totals_match_raw_orders,
)
from {{ package_name }}.defs.warehouse import Warehouse

ASSETS = [raw_orders, daily_order_totals, order_summary, totals_match_raw_orders]


@pytest.fixture
def warehouse(tmp_path):
    return Warehouse(env="local", sqlite_path=str(tmp_path / "wh.sqlite"))


def write_csv(path, rows):
    path.write_text("order_id,order_date,customer_id,amount_cents\n" + "".join(f"{r}\n" for r in rows))
    return str(path)


def test_parse_orders_accepts_valid_rows():
    rows = parse_orders(["order_id,order_date,customer_id,amount_cents", "1,2026-11-01,7,1250"], "x.csv")
    assert rows == [(1, "2026-11-01", 7, 1250)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,2026-13-01,7,1250", "x.csv:2: malformed order row"),
        ("1,2026-11-01,seven,1250", "x.csv:2: malformed order row"),
        ("1,2026-11-01,7,-5", "x.csv:2: amount_cents must not be negative"),
    ],
)
def test_parse_orders_rejects_bad_rows(line, message):
    with pytest.raises(dg.Failure, match=message):
        parse_orders(["order_id,order_date,customer_id,amount_cents", line], "x.csv")


def test_parse_orders_rejects_wrong_header():
    with pytest.raises(dg.Failure, match="header must be"):
        parse_orders(["id,date", "1,2026-11-01"], "x.csv")


def test_pipeline_from_files_computes_daily_totals(tmp_path, warehouse):
    source = write_csv(
        tmp_path / "orders.csv",
        ["1,2026-11-01,7,1000", "2,2026-11-01,8,500", "3,2026-11-02,7,2500"],
    )
    result = dg.materialize(
        ASSETS,
        resources={"warehouse": warehouse},
        run_config={"ops": {"raw_orders": {"config": {"source_files": [source]}}}},
    )
    assert result.success
    assert warehouse.query("SELECT * FROM daily_order_totals ORDER BY order_date") == [
        {"order_date": "2026-11-01", "order_count": 2, "revenue_cents": 1500},
        {"order_date": "2026-11-02", "order_count": 1, "revenue_cents": 2500},
    ]
    summary = result.asset_materializations_for_node("order_summary")[0].metadata
    assert summary["orders"].value == 3
    assert summary["revenue_cents"].value == 4000
    assert summary["best_day"].value == "2026-11-02"
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("totals_match_raw_orders", True)]


def test_seed_data_loads_when_no_files_are_given(warehouse):
    result = dg.materialize([raw_orders], resources={"warehouse": warehouse})
    assert result.success
    count = warehouse.query("SELECT COUNT(*) AS n FROM raw_orders")[0]["n"]
    assert count == result.asset_materializations_for_node("raw_orders")[0].metadata["row_count"].value
    assert count > 0


def test_check_fails_when_totals_lose_orders(tmp_path, warehouse):
    source = write_csv(tmp_path / "orders.csv", ["1,2026-11-01,7,1000", "2,2026-11-02,8,500"])
    dg.materialize(
        ASSETS[:2],
        resources={"warehouse": warehouse},
        run_config={"ops": {"raw_orders": {"config": {"source_files": [source]}}}},
    )
    assert totals_match_raw_orders(warehouse=warehouse).passed
    # Lose every order from the totals: the check must notice.
    warehouse.create_table_as("daily_order_totals", "SELECT * FROM daily_order_totals WHERE 1 = 0")
    evaluation = totals_match_raw_orders(warehouse=warehouse)
    assert not evaluation.passed
    assert evaluation.metadata["raw_orders"].value == 2
    assert evaluation.metadata["totalled"].value == 0


def test_summarize_handles_no_data():
    assert summarize([])["days"] == 0


def test_orders_lineage(defs):
    """raw_orders → daily_order_totals → order_summary, whatever else the location defines."""
    graph = defs.resolve_asset_graph()
    assert graph.get(raw_orders.key).parent_keys == set()
    assert graph.get(daily_order_totals.key).parent_keys == {raw_orders.key}
    assert graph.get(order_summary.key).parent_keys == {daily_order_totals.key}
