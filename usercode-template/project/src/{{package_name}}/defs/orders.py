"""The orders pipeline: raw files → daily totals (SQL) → summary, with a check on the totals."""

# No `from __future__ import annotations` here: Dagster reads config and resource annotations at runtime.

import csv
import datetime as dt
from importlib import resources
from pathlib import Path

import dagster as dg

from {{ package_name }}.defs.warehouse import Warehouse

OWNERS = ["team:{{ owner_team }}", "{{ owner_email }}"]
GROUP = "orders"
ORDERS_COLUMNS = {
    "order_id": "INTEGER",
    "order_date": "DATE",
    "customer_id": "INTEGER",
    "amount_cents": "INTEGER",
}
SQL_DIR = Path(__file__).parent / "sql"


def parse_orders(lines: list[str], source: str) -> list[tuple[int, str, int, int]]:
    """Parse and validate order CSV lines; a bad row fails naming the file and line."""
    rows = []
    reader = csv.DictReader(lines)
    if reader.fieldnames != list(ORDERS_COLUMNS):
        raise dg.Failure(f"{source}: header must be {','.join(ORDERS_COLUMNS)}, got {reader.fieldnames}")
    for line_no, record in enumerate(reader, start=2):
        try:
            row = (
                int(record["order_id"]),
                dt.date.fromisoformat(record["order_date"]).isoformat(),
                int(record["customer_id"]),
                int(record["amount_cents"]),
            )
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"{source}:{line_no}: malformed order row {record}: {exc}") from exc
        if row[3] < 0:
            raise dg.Failure(f"{source}:{line_no}: amount_cents must not be negative, got {row[3]}")
        rows.append(row)
    return rows


class RawOrdersConfig(dg.Config):
    source_files: list[str] = []
    """CSV files to load; empty loads the seed data shipped with the package."""


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    tags={"domain": "sales", "tier": "bronze"},
    kinds={"python"},
)
def raw_orders(config: RawOrdersConfig, warehouse: Warehouse) -> dg.MaterializeResult:
    """Orders as delivered by the shop system, validated and loaded into the warehouse."""
    rows: list[tuple[int, str, int, int]] = []
    if config.source_files:
        for path in config.source_files:
            rows += parse_orders(Path(path).read_text().splitlines(), path)
    else:
        seed = resources.files("{{ package_name }}").joinpath("data/orders_seed.csv")
        rows = parse_orders(seed.read_text().splitlines(), "orders_seed.csv")
    count = warehouse.replace_table("raw_orders", ORDERS_COLUMNS, rows)
    return dg.MaterializeResult(
        metadata={"row_count": count, "sources": config.source_files or ["package seed"]}
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    tags={"domain": "sales", "tier": "silver"},
    kinds={"sql"},
    deps=[raw_orders],
    code_version="1",
)
def daily_order_totals(warehouse: Warehouse) -> dg.MaterializeResult:
    """Orders and revenue per day; the logic is sql/daily_order_totals.sql (linted by sqlfluff)."""
    select_sql = (SQL_DIR / "daily_order_totals.sql").read_text()
    count = warehouse.create_table_as("daily_order_totals", select_sql)
    return dg.MaterializeResult(metadata={"row_count": count})


@dg.asset_check(asset=daily_order_totals, blocking=True, description="Totals account for every raw order")
def totals_match_raw_orders(warehouse: Warehouse) -> dg.AssetCheckResult:
    raw = warehouse.query("SELECT COUNT(*) AS n FROM raw_orders")[0]["n"]
    totalled = warehouse.query("SELECT COALESCE(SUM(order_count), 0) AS n FROM daily_order_totals")[0]["n"]
    return dg.AssetCheckResult(
        passed=int(raw) == int(totalled), metadata={"raw_orders": int(raw), "totalled": int(totalled)}
    )


def summarize(totals: list[dict]) -> dict[str, float | int | str]:
    if not totals:
        return {"days": 0, "orders": 0, "revenue_cents": 0, "avg_revenue_cents_per_day": 0.0, "best_day": ""}
    revenue = sum(int(day["revenue_cents"]) for day in totals)
    best = max(totals, key=lambda day: int(day["revenue_cents"]))
    return {
        "days": len(totals),
        "orders": sum(int(day["order_count"]) for day in totals),
        "revenue_cents": revenue,
        "avg_revenue_cents_per_day": round(revenue / len(totals), 2),
        "best_day": str(best["order_date"]),
    }


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    tags={"domain": "sales", "tier": "gold"},
    kinds={"python"},
    deps=[daily_order_totals],
)
def order_summary(warehouse: Warehouse) -> dg.MaterializeResult:
    """Headline figures for the sales dashboard."""
    summary = summarize(warehouse.query("SELECT * FROM daily_order_totals ORDER BY order_date"))
    return dg.MaterializeResult(metadata=summary)
