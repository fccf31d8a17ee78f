import datetime as dt

import dagster as dg

from {{ package_name }}.defs.automation import daily_orders_schedule, new_order_files


def test_schedule_requests_one_run_per_day():
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC)
    )
    request = daily_orders_schedule(context)
    assert request.run_key == "daily-2026-11-25"
    assert request.tags["orders/date"] == "2026-11-25"
    assert daily_orders_schedule.cron_schedule == "0 6 * * *"
    assert daily_orders_schedule.execution_timezone == "UTC"


def test_sensor_skips_without_landing_directory(local_env):
    result = new_order_files(dg.build_sensor_context())
    assert isinstance(result, dg.SkipReason)
    assert "does not exist" in result.skip_message


def test_sensor_requests_a_run_per_new_file_and_advances_its_cursor(local_env, monkeypatch):
    landing = local_env / "landing"
    landing.mkdir()
    monkeypatch.setenv("ORDERS_LANDING_DIR", str(landing))
    for name in ("orders_2026-11-01.csv", "orders_2026-11-02.csv"):
        (landing / name).write_text("order_id,order_date,customer_id,amount_cents\n")
    (landing / "notes.txt").write_text("not an order file")

    first = new_order_files(dg.build_sensor_context())
    assert [r.run_key for r in first.run_requests] == ["orders_2026-11-01.csv", "orders_2026-11-02.csv"]
    assert first.run_requests[0].run_config == {
        "ops": {"raw_orders": {"config": {"source_files": [str(landing / "orders_2026-11-01.csv")]}}}
    }
    assert first.cursor == "orders_2026-11-02.csv"

    # Nothing new since the cursor: skip. A later file: exactly one run.
    again = new_order_files(dg.build_sensor_context(cursor=first.cursor))
    assert isinstance(again, dg.SkipReason)
    (landing / "orders_2026-11-03.csv").write_text("order_id,order_date,customer_id,amount_cents\n")
    later = new_order_files(dg.build_sensor_context(cursor=first.cursor))
    assert [r.run_key for r in later.run_requests] == ["orders_2026-11-03.csv"]
