"""Two procedures of docs/operations.md on the running session stack, through the same commands an operator runs:
add and remove a code location (`stack add-location`, `stack remove-location`) and rotate the Postgres
password (`stack rotate-pg-password`). Each test leaves the session stack as it found it (the password is new:
the session's `stack.pg` is updated), so the test files after this one keep a working stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest

from dagster_platform import procs
from dagster_platform.local import postgres, registration, supervisor
from dagster_platform.metrics import local as monitoring
from dagster_platform.paths import ROOT
from tests.local.helpers import BROKEN, CANARY, PLATFORM_CLI, sample, scrape, wait_until

ADDED = "canary-two"  # a second copy of the platform canary under another location name
CANARY_DIR = ROOT / "platform" / "local" / CANARY


def _cli(stack, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    argv = [str(PLATFORM_CLI), "stack", "--state-dir", str(stack.state_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _instigators(stack, location: str) -> dict[str, str]:
    """name → status of every stored schedule/sensor state of `location`, straight from Postgres."""
    found = {}
    for status, body in postgres.query(stack.pg, "SELECT status, instigator_body FROM instigators"):
        state = json.loads(body)
        origin = state["origin"]["external_repository_origin"]["repository_location_origin"]
        if origin["location_name"] == location:
            found[state["origin"]["job_name"]] = status
    return found


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if (f := procs.stat_fields(pid)) and f[procs.STATE] not in "ZX"]


@pytest.mark.slow
def test_added_location_loads_runs_and_ticks_then_removal_stops_its_automation_and_server(stack, client):
    before = {name: s["status"] for name, s in client.locations().items()}
    workspace = stack.dagster_home / "workspace.yaml"
    began = time.monotonic()
    added = _cli(stack, "add-location", "--name", ADDED, "--source", str(CANARY_DIR))
    took_add = time.monotonic() - began
    assert added.returncode == 0, added.stdout + added.stderr
    lines = added.stdout.splitlines()
    assert any(line.startswith(f"[stack] webserver: workspace reloaded, {ADDED} LOADED") for line in lines), lines
    assert any(line.startswith(f"[stack] daemon: re-read the workspace, {ADDED} is in it") for line in lines), lines
    assert lines[-1] == f"[stack] added location {ADDED}", lines
    print(f"add-location took {took_add:.1f}s:\n{added.stdout}")

    # Registered like the others: its own .venv, in state.json, the workspace file, the webserver, `stack status`.
    sup = stack.supervisor
    assert ADDED in sup.meta["locations"] and f"code-server-{ADDED}" in sup.components
    location_dir = Path(sup.meta["locations"][ADDED]["dir"])
    assert location_dir == stack.state_dir / "locations" / ADDED
    assert (location_dir / ".venv" / "bin" / "dagster").exists(), "its own .venv from its own lock"
    assert f'"location_name": "{ADDED}"' in workspace.read_text()  # JSON (valid YAML), by ci/previews.py
    assert client.location_state(ADDED)[0] == "LOADED"
    status = _cli(stack, "status", timeout=60)
    assert f"[stack] location {ADDED}: LOADED" in status.stdout, status.stdout
    assert any(line.startswith(f"[stack] code-server-{ADDED} ") and " running " in line
               for line in status.stdout.splitlines()), status.stdout  # fmt: skip

    # The daemon sees it: a GraphQL run is dequeued and launched by the daemon, and its sensor ticks.
    run = client.wait_run(client.launch_run(ADDED, "canary_job", tags={"test": "added-location"}), timeout=240)
    assert run["status"] == "SUCCESS", f"the added location's run ended {run['status']}; see {stack.state_dir}/logs"
    trigger = f"{ADDED}-{time.time_ns()}.trigger"
    trigger_dir = stack.dagster_home / "canary-triggers"  # the canary's default: $DAGSTER_HOME/canary-triggers
    trigger_dir.mkdir(exist_ok=True)
    (trigger_dir / trigger).write_text("go\n")
    client.start("sensor", ADDED, "canary_trigger_files")  # not its every-minute schedule: a run of it could be
    # in flight when the location goes, and a killed run would hold a queue slot for the tests after this one
    by_sensor = wait_until(lambda: client.runs(tags={"canary/file": trigger}), 180, "a run of the added sensor")
    assert client.wait_run(by_sensor[0]["runId"], timeout=240)["status"] == "SUCCESS"
    assert _instigators(stack, ADDED) == {"canary_trigger_files": "RUNNING"}
    group = supervisor.group_of(sup.components[f"code-server-{ADDED}"])
    assert group, "the added code server must be running"

    # Unknown name: one line, exit 2, nothing changed.
    state_before, workspace_before = (stack.state_dir / "state.json").read_bytes(), workspace.read_bytes()
    unknown = _cli(stack, "remove-location", "no-such-location", timeout=60)
    assert unknown.returncode == 2 and unknown.stdout == "", unknown
    assert unknown.stderr.startswith("stack remove-location refused: no location 'no-such-location' in ")
    assert unknown.stderr.count("\n") == 1 and "nothing changed" in unknown.stderr, unknown.stderr
    assert (stack.state_dir / "state.json").read_bytes() == state_before and workspace.read_bytes() == workspace_before
    taken = _cli(stack, "add-location", "--name", ADDED, "--source", str(CANARY_DIR), timeout=60)
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1 and "already registered" in taken.stderr, taken
    assert (stack.state_dir / "state.json").read_bytes() == state_before and workspace.read_bytes() == workspace_before

    removed = _cli(stack, "remove-location", ADDED)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    print(f"remove-location:\n{removed.stdout}")
    lines = removed.stdout.splitlines()
    assert lines[0] == f"[stack] stopped sensor canary_trigger_files of {ADDED}", lines  # before anything else
    # Its sensor was stopped first: no instigator stays RUNNING for a location that is gone.
    assert _instigators(stack, ADDED) == {"canary_trigger_files": "STOPPED"}
    assert f'"location_name": "{ADDED}"' not in workspace.read_text()
    assert ADDED not in client.locations()
    assert not _alive(group), f"processes of the removed code server left: {_alive(group)}"
    sup = stack.supervisor
    assert ADDED not in sup.meta["locations"] and f"code-server-{ADDED}" not in sup.components
    # Every other location as before, and the daemon healthy.
    wait_until(lambda: {n: s["status"] for n, s in client.locations().items()} == before, 60, "the other locations")
    assert client.all_loaded([name for name in before if name != BROKEN])
    wait_until(lambda: all(client.daemon_health().values()), 120, "every required daemon healthy")
    status = _cli(stack, "status", timeout=60)
    assert ADDED not in status.stdout, status.stdout


def test_rotate_pg_password_refuses_an_existing_server_in_one_line(tmp_path):
    """`stack rotate-pg-password` only rotates the stack's own throwaway cluster (fast: no stack)."""
    state = {"meta": {"url": "http://127.0.0.1:9", "postgres": {"external": True, "url": "postgresql://u:p@db:5432/d"}}}
    supervisor.write_private(tmp_path / "state.json", json.dumps(state))
    before = (tmp_path / "state.json").read_bytes()
    argv = [str(PLATFORM_CLI), "stack", "--state-dir", str(tmp_path), "rotate-pg-password"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr == (
        "stack rotate-pg-password failed: this stack uses an existing PostgreSQL server (--pg-url): "
        "rotate its password there\n"
    )
    assert (tmp_path / "state.json").read_bytes() == before


@pytest.mark.slow
def test_rotated_pg_password_refuses_the_old_one_and_every_component_runs_with_the_new(stack, client):
    """Last in this file: the session stack keeps running with the new password (`stack.pg` follows)."""
    assert client.wait_run(client.launch_run(CANARY, "canary_job"), timeout=240)["status"] == "SUCCESS"
    sup = stack.supervisor
    readers = [n for n in sup.components if n.startswith("code-server-") or n in ("daemon", "webserver")]
    readers += [n for n in ("metrics-exporter",) if n in sup.components]
    pids = {name: sup.components[name].pid for name in readers if sup.alive(name)}
    seen: dict[str, object] = {}

    def altered(old: postgres.PgConnection, new: postgres.PgConnection) -> None:
        """Between ALTER ROLE and the first restart: a new connection with the old password is refused."""
        seen["restarted_yet"] = {n: p for n, p in pids.items() if stack.supervisor.components[n].pid != p}
        try:
            old.connect().close()
            seen["old"] = "accepted"
        except psycopg2.OperationalError as exc:
            seen["old"] = str(exc)
        with contextlib.closing(new.connect()) as db, db.cursor() as cur:
            cur.execute("SELECT current_user")
            seen["new"] = cur.fetchone()[0]

    old_password = stack.pg.password
    began = time.monotonic()
    rotated = registration.rotate_pg_password(stack, on_altered=altered)
    print(f"rotate-pg-password took {time.monotonic() - began:.1f}s")
    stack.pg = rotated.pg  # the session's own connections (later tests) use the new password
    assert seen["restarted_yet"] == {}, seen
    assert f'password authentication failed for user "{stack.pg.user}"' in seen["old"], seen
    assert seen["new"] == stack.pg.user
    assert rotated.pg.password != old_password

    state_file = stack.state_dir / "state.json"
    assert json.loads(state_file.read_text())["meta"]["postgres"]["password"] == rotated.pg.password
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"
    sup = stack.supervisor
    assert all(sup.components[name].pid != pid for name, pid in pids.items()), "every reader restarted"
    status = _cli(stack, "status", timeout=60)
    stopped = [line for line in status.stdout.splitlines() if " stopped " in line]
    assert [line.split()[1] for line in stopped] == [f"code-server-{BROKEN}"], status.stdout  # stopped by design
    run = client.wait_run(client.launch_run(CANARY, "canary_job", tags={"test": "after-rotation"}), timeout=240)
    assert run["status"] == "SUCCESS", "a run after the rotation must be dequeued, launched and stored"
    wait_until(lambda: all(client.daemon_health().values()), 120, "every required daemon healthy")
    exporter = monitoring.urls(stack.state_dir)["metrics-exporter"]
    assert sample(scrape(exporter), "dagster_exporter_source_up", source="instance") == 1.0, "the exporter reads it"
    with pytest.raises(psycopg2.OperationalError):
        dataclasses.replace(stack.pg, password=old_password).connect().close()
