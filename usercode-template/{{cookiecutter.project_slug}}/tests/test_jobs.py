def test_orders_job_runs_in_process(defs, local_env):
    result = defs.resolve_job_def("orders_job").execute_in_process()
    assert result.success
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"raw_orders", "daily_order_totals", "order_summary"}
    # The run wrote to the local warehouse file under DAGSTER_HOME, nowhere else.
    assert (local_env / "warehouse.sqlite").exists()
    assert result.dagster_run.tags["platform/warehouse"] == "{{ cookiecutter.location_name }}"
