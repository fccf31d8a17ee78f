"""The stack's backing services under the supervisor: Postgres (a throwaway cluster, or an existing server
from --pg-url / DAGSTER_PG_URL) and the S3-compatible object store, started with what state.json recorded
last time (data directory, password, port, credentials) and found again from it."""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import yaml

from dagster_platform import net
from dagster_platform.local import objectstore, postgres
from dagster_platform.local.supervisor import Supervisor
from dagster_platform.net import HOST


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def _port(saved: dict) -> int:
    """The recorded port when it is still free, else a new one."""
    port = saved.get("port")
    return port if port and not net.port_open(HOST, port) else net.free_port()


def _record(sup: Supervisor, key: str, value: dict) -> None:
    sup.meta[key] = value
    sup.save()


def start_postgres(sup: Supervisor, pg_url: str | None) -> tuple[postgres.PgConnection, float]:
    started = time.monotonic()
    if pg_url:
        conn = postgres.from_url(pg_url)
        postgres.wait_accepting(conn, timeout=30)
        _record(sup, "postgres", {"external": True, "url": pg_url})  # state.json is 0600
        say(f"postgres: using existing server {conn.host}:{conn.port}/{conn.db_name}")
        return conn, time.monotonic() - started
    saved = sup.meta.get("postgres") or {}
    cluster = postgres.Cluster(
        data_dir=postgres.data_dir_for(sup.state_dir, saved),
        port=_port(saved),
        password=saved.get("password") or secrets.token_urlsafe(18),
    )
    fresh = not cluster.initialized
    # Recorded before initdb: a restart finds the data dir, `down --wipe` removes it even after a failed init.
    _record(sup, "postgres", {"external": False, "port": cluster.port, "password": cluster.password,
                              "data_dir": str(cluster.data_dir)})  # fmt: skip
    cluster.init()
    start_postgres_server(sup, cluster)
    postgres.ensure_database(cluster.connection)
    say(
        f"postgres: ready on {HOST}:{cluster.port} ({'new cluster' if fresh else 'existing data'} in "
        f"{cluster.data_dir}, {time.monotonic() - started:.1f}s)"
    )
    return cluster.connection, time.monotonic() - started


def start_postgres_server(sup: Supervisor, cluster: postgres.Cluster, timeout: float = 60) -> None:
    sup.start(
        "postgres",
        cluster.server_command(),
        env={"PATH": os.environ.get("PATH", ""), "LANG": "C"},
        cwd=cluster.workdir,  # a directory the server's user can enter (as root: not the checkout)
        user=postgres.run_as(),
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open transactions, then exit cleanly
        info={"port": cluster.port},
    )
    sup.wait_ready("postgres", lambda: net.port_open(HOST, cluster.port), timeout=timeout)
    postgres.wait_accepting(cluster.connection, timeout=timeout, alive=lambda: sup.alive("postgres"))


def cluster_from_state(state_dir: Path) -> postgres.Cluster:
    saved = Supervisor(state_dir).meta["postgres"]
    if saved.get("external"):
        raise RuntimeError("this stack uses an external PostgreSQL server; it does not manage it")
    return postgres.Cluster(postgres.data_dir_for(state_dir, saved), saved["port"], saved["password"])


def start_object_store(sup: Supervisor, instance_path: Path) -> tuple[objectstore.ObjectStore, float]:
    """moto's S3 server on loopback, with the bucket the derived instance names."""
    started = time.monotonic()
    saved = sup.meta.get("object_store") or {}
    access, secret = (saved["access_key"], saved["secret_key"]) if saved else objectstore.new_credentials()
    store = objectstore.ObjectStore(_port(saved), access, secret)
    _record(sup, "object_store", {"port": store.port, "access_key": access, "secret_key": secret})
    start_object_store_server(sup, store)
    bucket = (yaml.safe_load(instance_path.read_text()).get("compute_logs") or {}).get("config", {}).get("bucket")
    if bucket:
        store.ensure_bucket(bucket)
    say(f"object store: S3 on {store.endpoint_url}, bucket {bucket} ({time.monotonic() - started:.1f}s)")
    return store, time.monotonic() - started


def start_object_store_server(sup: Supervisor, store: objectstore.ObjectStore, timeout: float = 60) -> None:
    sup.start("object-store", objectstore.server_command(store.port), env=dict(os.environ), info={"port": store.port})
    sup.wait_ready("object-store", lambda: net.http_ok(f"{store.endpoint_url}/moto-api/"), timeout=timeout)
