"""`stack down` (and `make dev`'s stop) stop the components in one order, whatever order they were recorded in."""

from dagster_platform.local.lifecycle import stop_order


def test_webserver_first_postgres_last():
    recorded = ["postgres", "object-store", "code-server-a", "code-server-b", "webserver", "daemon"]
    expected = ["webserver", "daemon", "code-server-a", "code-server-b", "object-store", "postgres"]
    assert stop_order(recorded) == expected


def test_prometheus_and_alertmanager_stop_before_what_they_watch():
    recorded = ["postgres", "metrics-exporter", "webserver", "daemon", "alertmanager", "prometheus"]
    expected = ["prometheus", "alertmanager", "webserver", "daemon", "metrics-exporter", "postgres"]
    assert stop_order(recorded) == expected
