"""The warehouse resource: SQLite on disk locally, PostgreSQL in every platform environment, where the
location's tables live in the warehouse user's default schema and a preview's in its own (`db_schema`:
`<package>_mr_<iid>`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from {{ package_name }}.settings import SCHEMA, warehouse_settings


class Warehouse(dg.ConfigurableResource):
    """Runs SQL against the environment's warehouse. Build it with `warehouse_from_env()`."""

    env: str
    db_schema: str = SCHEMA  # `schema` would shadow pydantic's BaseModel.schema
    sqlite_path: str = ""
    host: str = ""
    port: int = 5432
    dbname: str = ""
    user: str = ""
    password: str = ""

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.env == "local":
            Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.sqlite_path)
        else:
            import psycopg2  # only needed where a network warehouse exists

            conn = psycopg2.connect(
                host=self.host, port=self.port, dbname=self.dbname, user=self.user, password=self.password
            )
            if self.db_schema != SCHEMA:  # a preview: every statement, .sql files' too, in its own schema
                with conn.cursor() as cur:
                    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.db_schema}")
                    cur.execute(f"SET search_path TO {self.db_schema}")
        try:
            yield conn
            conn.commit()
        finally:
            conn.close()

    def query(self, sql: str) -> list[dict[str, Any]]:
        with self.connect() as conn:
            cur = conn.cursor()
            cur.execute(sql)
            columns = [col[0] for col in cur.description]
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def replace_table(self, table: str, columns: Mapping[str, str], rows: Sequence[Sequence[Any]]) -> int:
        """Replace `table` with `rows` in one transaction; `columns` maps column name to SQL type."""
        marker = "?" if self.env == "local" else "%s"
        column_sql = ", ".join(f"{name} {sql_type}" for name, sql_type in columns.items())
        placeholders = ", ".join(marker for _ in columns)
        with self.connect() as conn:
            cur = conn.cursor()
            cur.execute(f"DROP TABLE IF EXISTS {table}__staging")
            cur.execute(f"CREATE TABLE {table}__staging ({column_sql})")
            cur.executemany(f"INSERT INTO {table}__staging VALUES ({placeholders})", list(rows))
            self._swap_in(cur, table)
        return len(rows)

    def create_table_as(self, table: str, select_sql: str) -> int:
        """Replace `table` with the result of `select_sql` (which may read `table`); returns its row count."""
        with self.connect() as conn:
            cur = conn.cursor()
            cur.execute(f"DROP TABLE IF EXISTS {table}__staging")
            cur.execute(f"CREATE TABLE {table}__staging AS {select_sql.strip().rstrip(';')}")
            self._swap_in(cur, table)
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            return int(cur.fetchone()[0])

    @staticmethod
    def _swap_in(cur: Any, table: str) -> None:
        # Readers see the old table or the new one, never a half-written one.
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"ALTER TABLE {table}__staging RENAME TO {table}")


def warehouse_from_env() -> Warehouse:
    """The warehouse of the current DAGSTER_ENV; raises (and the code location refuses to load) when the
    environment's settings are missing or point at another environment."""
    settings = warehouse_settings()
    if settings.env == "local":
        return Warehouse(env="local", db_schema=settings.schema, sqlite_path=settings.sqlite_path)
    return Warehouse(
        env=settings.env,
        db_schema=settings.schema,
        host=settings.host,
        port=settings.port,
        dbname=settings.dbname,
        user=settings.user,
        # Resolved at run time from the pod's environment, so the secret never shows in the UI.
        password=dg.EnvVar("WAREHOUSE_PASSWORD"),
    )


# Dagster finds assets, jobs, schedules and sensors at module level, not resources: this module hands its
# resource over from a @dg.definitions function, built when the location loads. Dagster then loads only what
# that function returns from this module, so an asset, job, schedule or sensor defined beside it would be
# dropped (tests/test_defs_modules.py fails naming it): keep those in modules without one, like orders.py.
@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"warehouse": warehouse_from_env()})
