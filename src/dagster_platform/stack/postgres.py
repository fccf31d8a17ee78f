"""PostgreSQL for the local stack: a throwaway cluster from the machine's own server binaries, or an
existing server given as DAGSTER_PG_URL.

The throwaway cluster listens on 127.0.0.1 only (no Unix socket), on a free port, with password
authentication for TCP like a managed database. PostgreSQL refuses to run as root: when we are root the
data directory is handed to the `postgres` system user and initdb/postgres run as that user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

DB_NAME = "dagster"
DB_USER = "dagster"
PG_URL_ENV = "DAGSTER_PG_URL"


@dataclass(frozen=True)
class PgConnection:
    host: str
    port: int
    user: str
    password: str
    db_name: str

    def env(self) -> dict[str, str]:
        """The variables dagster.yaml reads (see config.STORAGE): the only way credentials travel."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    def connect(self, dbname: str | None = None):
        """A psycopg2 connection (psycopg2 comes with dagster-postgres in the platform's environment)."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.db_name,
            connect_timeout=5,
        )


def from_url(url: str) -> PgConnection:
    """postgresql://user:password@host:port/db → PgConnection (for an existing server)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.username:
        raise ValueError(f"{PG_URL_ENV} must look like postgresql://user:password@host:5432/dagster, got {url!r}")
    return PgConnection(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        db_name=parts.path.lstrip("/") or DB_NAME,
    )


def bin_dir() -> Path:
    """Directory with initdb/postgres: $PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True
    )
    if candidates:
        return candidates[0].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError(
        "no PostgreSQL server binaries found (initdb); install the `postgresql` package, set PG_BIN, "
        f"or point {PG_URL_ENV} at an existing server"
    )


def run_as() -> str | None:
    """The user the server must run as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs a `postgres` system user to run PostgreSQL as") from exc
    return "postgres"


def _chown_to(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@dataclass
class Cluster:
    """A throwaway cluster living in `data_dir` (created on first use)."""

    data_dir: Path
    port: int
    password: str

    @property
    def connection(self) -> PgConnection:
        return PgConnection("127.0.0.1", self.port, DB_USER, self.password, DB_NAME)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb with a superuser `dagster` (password auth over TCP) if the data dir is still empty."""
        if self.initialized:
            return
        user = run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        pwfile = self.data_dir.parent / ".pgpass-init"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        _chown_to(self.data_dir, user)
        _chown_to(pwfile, user)
        try:
            result = subprocess.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    DB_USER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                user=user,
                capture_output=True,
                text=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def server_command(self) -> list[str]:
        """The postgres server in the foreground (the supervisor owns the process)."""
        return [
            str(bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",  # a throwaway cluster: durability across power loss is not the point
            "-c",
            "logging_collector=off",
        ]


def new_password() -> str:
    return secrets.token_urlsafe(18)


def wait_accepting(conn: PgConnection, timeout: float = 60.0, alive=lambda: True) -> None:
    """Block until the server accepts an authenticated connection to the maintenance database."""
    import psycopg2

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the PostgreSQL server exited during start-up")
        try:
            conn.connect("postgres").close()
            return
        except psycopg2.OperationalError as exc:
            last = exc
            time.sleep(0.3)
    raise TimeoutError(f"PostgreSQL on {conn.host}:{conn.port} not accepting connections: {last}")


def ensure_database(conn: PgConnection) -> None:
    """CREATE DATABASE <db> when it does not exist yet (throwaway cluster only)."""
    admin = conn.connect("postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (conn.db_name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{conn.db_name}"')
    finally:
        admin.close()


def query(conn: PgConnection, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one read query against the instance database (used by tests and measurements)."""
    db = conn.connect()
    try:
        with db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        db.close()
