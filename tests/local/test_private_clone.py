"""The throwaway Postgres works from a checkout in any directory its user can use (issue 15): a fresh clone
inside a private (0700) `mktemp -d` directory, as the user the tests run as (root here and in CI, where the
server runs as `postgres`). It serves TLS only, our own connections use it, a restart finds the data, and
`down --wipe` removes what was made for the server's user. Where it cannot work, `stack up` says why in one
line before anything starts."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from dagster_platform import net, procs
from dagster_platform.local import lifecycle, postgres
from dagster_platform.paths import ROOT
from tests.local.helpers import PLATFORM_CLI

# Run by the current venv's Python with PYTHONPATH=<clone>/src and cwd=<clone>: the clone's own code brings
# the stack's Postgres up (the same start_postgres as `stack up`), twice, then wipes it.
CLONE_SCRIPT = r"""
import json, os, sys
from pathlib import Path
import dagster_platform
from dagster_platform.local import lifecycle, postgres, services
from dagster_platform.local.supervisor import Supervisor

state_dir = Path(sys.argv[1])
report = {"package": dagster_platform.__file__}
sup = Supervisor(state_dir)
conn, _ = services.start_postgres(sup, None)
data_dir = Path(sup.meta["postgres"]["data_dir"])
cluster = services.cluster_from_state(state_dir)
report["first"] = {
    "data_dir": str(data_dir),
    "ssl": postgres.query(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0][0],
    "server_uid": int(Path(f"/proc/{sup.components['postgres'].pid}/status").read_text().split("Uid:")[1].split()[0]),
    "paths": {
        str(p): [os.stat(p).st_uid, oct(os.stat(p).st_mode & 0o777)]
        for p in (data_dir.parent, data_dir, data_dir / "server.key", data_dir / "server.crt")
    },
    "pid": sup.components["postgres"].pid,
}
db = conn.connect()
with db, db.cursor() as cur:
    cur.execute("CREATE TABLE kept (v text)")
    cur.execute("INSERT INTO kept VALUES ('survives a restart')")
db.close()
report["stopped"] = lifecycle.down(state_dir, quiet=True)

sup = Supervisor(state_dir)
conn, _ = services.start_postgres(sup, None)
report["second"] = {
    "data_dir": sup.meta["postgres"]["data_dir"],
    "kept": postgres.query(conn, "SELECT v FROM kept"),
    "pid": sup.components["postgres"].pid,
}
report["wiped"] = lifecycle.down(state_dir, wipe=True, quiet=True)
report["data_parent_exists"] = data_dir.parent.exists()
report["data_dir_exists"] = data_dir.exists()
print("REPORT " + json.dumps(report), flush=True)
"""


@pytest.mark.slow
def test_stack_postgres_from_a_clone_in_a_private_temp_dir():
    parent = Path(tempfile.mkdtemp(prefix="dagster-platform-clone-"))  # 0700, like `mktemp -d`
    assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    clone = parent / "p"
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
        state_dir = clone / ".stack" / "private-clone-test"
        state_dir.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k not in lifecycle.SCRUBBED}
        env["PYTHONPATH"] = str(clone / "src")
        result = subprocess.run(
            [sys.executable, "-c", CLONE_SCRIPT, str(state_dir)],
            cwd=clone,  # initdb/postgres would inherit this cwd: only root may enter it
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        line = next(x for x in result.stdout.splitlines() if x.startswith("REPORT "))
        report = json.loads(line.removeprefix("REPORT "))
        # Nothing loosened the permissions of the user's own directories.
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700
        assert (clone.stat().st_uid, state_dir.stat().st_uid) == (os.geteuid(), os.geteuid())
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    assert report["package"].startswith(str(clone / "src")), "the clone's own code must run"
    first, second = report["first"], report["second"]
    data_dir = Path(first["data_dir"])
    assert first["ssl"] is True, "our own connection must use TLS"
    if os.geteuid() == 0:
        # The server runs as `postgres`, and all it reads is in a directory of its own, outside the clone.
        postgres_uid = pwd.getpwnam(postgres.SERVER_USER).pw_uid
        assert first["server_uid"] == postgres_uid
        assert not data_dir.is_relative_to(parent)
        assert data_dir.parent.name.startswith(postgres.PRIVATE_PREFIX)
        modes = first["paths"]
        assert modes[str(data_dir.parent)] == [postgres_uid, "0o700"]
        assert modes[str(data_dir)] == [postgres_uid, "0o700"]
        assert modes[str(data_dir / "server.key")] == [postgres_uid, "0o600"]
        assert modes[str(data_dir / "server.crt")][0] == postgres_uid
        assert not report["data_parent_exists"], "down --wipe must remove the server user's directory"
    else:
        assert first["server_uid"] == os.geteuid()
        assert data_dir == state_dir / "pgdata", "not root: the data stays under the state dir"
    assert report["stopped"] == ["postgres"]
    assert second["data_dir"] == first["data_dir"], "a restart must find the recorded data dir"
    assert second["kept"] == [["survives a restart"]]
    assert report["wiped"] == ["postgres"]
    assert not report["data_dir_exists"], "down --wipe must remove the cluster's data"
    for pid in (first["pid"], second["pid"]):
        fields = procs.stat_fields(pid)
        assert fields is None or fields[procs.STATE] in ("Z", "X"), f"postgres (pid {pid}) outlived down"


def _stack_up(state_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PLATFORM_CLI), "stack", "--state-dir", str(state_dir), "up", "--port", str(net.free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_empty_pg_bin_is_refused_in_one_line_before_anything_starts(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != postgres.PG_URL_ENV}
    env["PG_BIN"] = str(empty)
    result = _stack_up(state_dir, env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"PG_BIN={empty} has no initdb or postgres" in lines[0]
    assert "unset it" in lines[0]
    assert result.stdout == "", "nothing may start (no location, no Postgres) before the refusal"
    assert not (state_dir / "locations").exists() and not (state_dir / "logs").exists()


def test_root_without_a_postgres_user_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "SERVER_USER", "no-such-user-dagster-platform")
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.delenv(postgres.PG_URL_ENV, raising=False)
    with pytest.raises(postgres.PostgresUnavailable) as refused:
        lifecycle.up(tmp_path / "state", port=net.free_port(), stack_locations=[])
    message = str(refused.value)
    assert "\n" not in message
    assert "no `no-such-user-dagster-platform` system user" in message and "useradd --system" in message
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == []


def test_missing_openssl_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BIN", str(postgres.bin_dir()))
    monkeypatch.setenv("PATH", str(tmp_path))  # no openssl
    with pytest.raises(postgres.PostgresUnavailable, match=r"^openssl not found .*apt-get install openssl"):
        postgres.preflight()


def test_no_directory_the_server_user_can_enter_is_refused_in_one_line(tmp_path, monkeypatch):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)  # ours only: `nobody` cannot enter it
    monkeypatch.setattr(postgres, "PRIVATE_BASES", (str(closed),))
    with pytest.raises(postgres.PostgresUnavailable) as refused:
        postgres.private_base("nobody")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"none of {closed} can be entered by the `nobody` user") and "chmod 1777" in message


def test_pg_url_sslmode_defaults_to_require():
    assert postgres.from_url("postgresql://u:p@db.example:5432/d").sslmode == "require"
    assert postgres.from_url("postgresql://u:p@localhost/d?sslmode=disable").sslmode == "disable"


@pytest.mark.slow
def test_session_stack_serves_tls_only_and_every_connection_uses_it(stack):
    """Our own connections and Dagster's (daemon, webserver, code servers) all use TLS; a plain one is refused."""
    assert postgres.query(stack.pg, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [(True,)]
    rows = postgres.query(
        stack.pg,
        "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        "WHERE a.datname = %s AND a.pid <> pg_backend_pid()",
        (stack.pg.db_name,),
    )
    assert rows, "Dagster's processes hold connections to the instance database"
    assert all(ssl for _, ssl in rows), rows
    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        replace(stack.pg, sslmode="disable").connect().close()
