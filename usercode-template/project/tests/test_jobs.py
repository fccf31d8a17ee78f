def test_orders_job_runs_in_process(defs, local_env):
    job = defs.resolve_job_def("orders_job")
    result = job.execute_in_process()
    assert result.success
    # Every asset the job selects (the orders group, whatever it holds) was materialized.
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialized == job.asset_layer.selected_asset_keys
    # The run wrote to the local warehouse file under DAGSTER_HOME, nowhere else.
    assert (local_env / "warehouse.sqlite").exists()
    assert result.dagster_run.tags["platform/warehouse"] == "{{ location_name }}"
