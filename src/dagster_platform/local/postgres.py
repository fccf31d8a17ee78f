"""PostgreSQL for the local stack: a throwaway cluster from the machine's own server binaries, or an
existing server given as DAGSTER_PG_URL.

The throwaway cluster listens on 127.0.0.1 only (no Unix socket), on a free port, with password
authentication over TLS only, like a managed database (production connects with `sslmode: require`).

PostgreSQL refuses to run as root: as root, initdb/postgres run as the `postgres` system user, and what that
user must read (data directory, initdb's password file, TLS key and certificate) lives in a directory made
for it outside the checkout (`/var/tmp/dagster-stack-pg-*`, owned by it, mode 0700): the checkout may sit
under a directory only root can enter (a `mktemp -d` clone). Its place is recorded in the stack's state, so
a restart finds it and `stack down --wipe` removes it. Not as root, the data stays in `<state dir>/pgdata`.
Whatever cannot work (no binaries, root without a `postgres` user, no openssl) is refused by preflight()
with one line naming the cause and the fix, before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dagster_platform import procs
from dagster_platform.local.config import PG_LOCATION
from dagster_platform.local.supervisor import write_private
from dagster_platform.net import HOST

DB_NAME = "dagster"
DB_USER = "dagster"
PG_URL_ENV = "DAGSTER_PG_URL"
SERVER_USER = "postgres"  # the system user PostgreSQL runs as when we are root (Debian's package creates it)
PRIVATE_PREFIX = "dagster-stack-pg-"  # /var/tmp/dagster-stack-pg-*: the server user's own directory (root)
# Where that directory may go, in order: kept across reboots like the rest of the stack's data, else $TMPDIR.
PRIVATE_BASES = tuple(dict.fromkeys(("/var/tmp", tempfile.gettempdir(), "/tmp")))


class PostgresUnavailable(RuntimeError):
    """The throwaway cluster cannot work here; the message is one line: the cause and the fix."""


@dataclass(frozen=True)
class PgConnection:
    host: str
    port: int
    user: str
    password: str
    db_name: str
    sslmode: str = "require"  # as production (platform/values/base.yaml); the throwaway cluster serves TLS only

    def env(self) -> dict[str, str]:
        """The variables the local dagster.yaml reads (config.PG_LOCATION): the only way credentials travel."""
        values = {"hostname": self.host, "port": str(self.port), "username": self.user, "password": self.password,
                  "db_name": self.db_name}  # fmt: skip
        return {variable: values[key] for key, variable in PG_LOCATION.items()}

    def connect(self, dbname: str | None = None):
        """A psycopg2 connection (psycopg2 comes with dagster-postgres in the platform's environment)."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.db_name,
            sslmode=self.sslmode,
            connect_timeout=5,
        )


def from_url(url: str) -> PgConnection:
    """postgresql://user:password@host:port/db[?sslmode=...] → PgConnection (for an existing server; our own
    connections to it use TLS unless the URL says another sslmode)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.username:
        raise ValueError(f"{PG_URL_ENV} must look like postgresql://user:password@host:5432/dagster, got {url!r}")
    return PgConnection(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        db_name=parts.path.lstrip("/") or DB_NAME,
        sslmode=parse_qs(parts.query).get("sslmode", ["require"])[-1],
    )


def bin_dir() -> Path:
    """Directory with initdb/postgres: $PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("PG_BIN"):
        chosen = Path(os.environ["PG_BIN"])
        missing = [name for name in ("initdb", "postgres") if not os.access(chosen / name, os.X_OK)]
        if missing:
            raise PostgresUnavailable(
                f"PG_BIN={chosen} has no {' or '.join(missing)}: point PG_BIN at PostgreSQL's server bin "
                f"directory (e.g. /usr/lib/postgresql/<version>/bin), unset it, or set {PG_URL_ENV} to use an "
                "existing server"
            )
        return chosen
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found and os.access(Path(found).parent / "postgres", os.X_OK):
        return Path(found).parent
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, postgres) found: install them (`apt-get install postgresql`), "
        f"set PG_BIN to their directory, or set {PG_URL_ENV} to use an existing server"
    )


def run_as() -> str | None:
    """The user the server must run as: SERVER_USER when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, but there is no `{SERVER_USER}` system user to run PostgreSQL as (it refuses "
            f"root): install the `postgresql` package (it creates the user) or `useradd --system {SERVER_USER}`, "
            f"run as a non-root user, or set {PG_URL_ENV} to use an existing server"
        ) from None
    return SERVER_USER


def _reachable_by(path: Path, entry: pwd.struct_passwd) -> bool:
    """Can this user enter `path` (search permission on it and every parent), judged from the mode bits?"""
    groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    for part in [path, *path.parents]:
        try:
            st = part.stat()
        except OSError:
            return False
        owner, group = st.st_uid == entry.pw_uid, st.st_gid in groups
        if not st.st_mode & (stat.S_IXUSR if owner else stat.S_IXGRP if group else stat.S_IXOTH):
            return False
    return True


def private_base(user: str) -> Path:
    """The directory to create the server user's private directory in: one it can reach."""
    entry = pwd.getpwnam(user)
    for base in PRIVATE_BASES:
        if Path(base).is_dir() and _reachable_by(Path(base), entry):
            return Path(base)
    raise PostgresUnavailable(
        f"none of {', '.join(PRIVATE_BASES)} can be entered by the `{user}` user, which must own the cluster's data: "
        "make /var/tmp usable by every user (chmod 1777 /var/tmp) or set TMPDIR to a directory it can reach"
    )


def preflight() -> str | None:
    """Check everything the throwaway cluster needs before anything starts; returns the user the server
    runs as (None: ourselves). Raises PostgresUnavailable with one line naming the cause and the fix."""
    bin_dir()
    if shutil.which("openssl") is None:
        raise PostgresUnavailable(
            "openssl not found (the throwaway cluster serves TLS with a self-signed certificate made by it): "
            f"install it (`apt-get install openssl`) or set {PG_URL_ENV} to use an existing server"
        )
    if (user := run_as()) is not None:
        private_base(user)
    return user


def data_dir_for(state_dir: Path, saved: dict) -> Path:
    """Where the cluster of this state dir lives: the recorded data directory when it still exists; else
    <state dir>/pgdata when not root (or an initialised one from before this layout); else a new
    directory private to the server's user (mode 0700, where that user can reach it)."""
    recorded = saved.get("data_dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    legacy = Path(state_dir) / "pgdata"
    user = run_as()
    if user is None or (legacy / "PG_VERSION").exists():
        return legacy
    private = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=private_base(user)))  # 0700, created by us
    _chown_to(private, user)
    return private / "pgdata"


def remove_data(state_dir: Path, saved: dict) -> None:
    """Delete the cluster's data (stack down --wipe): <state dir>/pgdata and, when the recorded data
    directory is in a private directory made for the server's user, that whole directory."""
    shutil.rmtree(Path(state_dir) / "pgdata", ignore_errors=True)
    recorded = saved.get("data_dir")
    if recorded and Path(recorded).parent.name.startswith(PRIVATE_PREFIX):
        shutil.rmtree(Path(recorded).parent, ignore_errors=True)


def _chown_to(path: Path, user: str | None) -> None:
    """Give a file or an empty directory we just made to the server's user (no-op when that is us)."""
    if user is not None:
        shutil.chown(path, user, pwd.getpwnam(user).pw_gid)


@dataclass
class Cluster:
    """A throwaway cluster living in `data_dir` (created on first use). Its parent directory is where the
    server's user works (the subprocesses' cwd: they must be able to enter it) and holds initdb's
    password file while initdb runs; the TLS key and certificate are in the data directory, under the names
    PostgreSQL looks for by default (server.key, server.crt)."""

    data_dir: Path
    port: int
    password: str

    @property
    def connection(self) -> PgConnection:
        return PgConnection(HOST, self.port, DB_USER, self.password, DB_NAME)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def workdir(self) -> Path:
        return self.data_dir.parent

    def init(self) -> None:
        """initdb with a superuser `dagster` (scram-sha-256 over TCP) if the data dir is still empty; a
        self-signed TLS certificate if there is none; TCP logins over TLS only (pg_hba.conf: `hostssl`, like a
        managed database that forces SSL)."""
        user = preflight()
        if not self.initialized:
            self._initdb(user)
        self._ensure_tls(user)
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        required = re.sub(r"^host(\s)", r"hostssl\1", text, flags=re.MULTILINE)
        if required != text:
            hba.write_text(required)  # rewriting keeps the file's owner and mode

    def _initdb(self, user: str | None) -> None:
        """initdb creates the data directory itself (mode 0700, owned by the user it runs as)."""
        pwfile = self.workdir / ".pgpass-init"
        write_private(pwfile, self.password + "\n")
        _chown_to(pwfile, user)
        try:
            self._run(user, [
                str(bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", DB_USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C", "--no-sync",
            ])  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _ensure_tls(self, user: str | None) -> None:
        """A self-signed certificate for 127.0.0.1, made by the server's user; the key mode 0600 (postgres
        refuses a key others can read)."""
        key, cert = self.data_dir / "server.key", self.data_dir / "server.crt"
        if not (key.exists() and cert.exists()):
            self._run(user, [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ])  # fmt: skip
            key.chmod(0o600)

    def _run(self, user: str | None, argv: list[str]) -> None:
        """A set-up step as the server's user, in a directory it can enter (initdb returns to its cwd)."""
        result = subprocess.run(
            argv, user=user, cwd=self.workdir, capture_output=True, text=True,
            preexec_fn=procs.child_setup(die_with_parent=True),
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def server_command(self) -> list[str]:
        """The postgres server in the foreground (the supervisor owns the process)."""
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": "",
            "max_connections": "200",
            "fsync": "off",  # a throwaway cluster: durability across power loss is not the point
            "logging_collector": "off",
            "ssl": "on",  # with the data directory's server.crt and server.key (PostgreSQL's defaults)
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        return [str(bin_dir() / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *options]


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
    with contextlib.closing(conn.connect("postgres")) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (conn.db_name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{conn.db_name}"')


def query(conn: PgConnection, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one read query against the instance database (used by tests and measurements)."""
    with contextlib.closing(conn.connect()) as db, db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()
