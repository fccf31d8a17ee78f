"""`stack down` (and `make dev`'s stop) stop the components in one order, whatever order they were recorded in."""

from dagster_platform.local.lifecycle import stop_order


def test_webserver_first_postgres_last():
    recorded = ["postgres", "object-store", "code-server-a", "code-server-b", "webserver", "daemon"]
    expected = ["webserver", "daemon", "code-server-a", "code-server-b", "object-store", "postgres"]
    assert stop_order(recorded) == expected
