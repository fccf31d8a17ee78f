import dagster as dg


def test_definitions_load_and_validate(defs):
    dg.Definitions.validate_loadable(defs)
    asset_graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in asset_graph.get_all_asset_keys()} == {
        "raw_orders",
        "daily_order_totals",
        "order_summary",
    }
    assert defs.resolve_job_def("orders_job")
    assert defs.resolve_schedule_def("daily_orders_schedule").job_name == "orders_job"
    assert defs.resolve_sensor_def("new_order_files").job_name == "orders_job"


def test_every_asset_has_an_owner_and_a_group(defs):
    asset_graph = defs.resolve_asset_graph()
    for key in asset_graph.get_all_asset_keys():
        spec = asset_graph.get(key)
        assert spec.owners, f"asset {key.to_user_string()} has no owner"
        assert spec.group_name and spec.group_name != "default", f"asset {key.to_user_string()} has no group"


def test_asset_dependency_chain(defs):
    asset_graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): {p.to_user_string() for p in asset_graph.get(key).parent_keys}
        for key in asset_graph.get_all_asset_keys()
    }
    assert parents == {
        "raw_orders": set(),
        "daily_order_totals": {"raw_orders"},
        "order_summary": {"daily_order_totals"},
    }
