"""Live registration on a running local stack (docs/operations.md, docs/stack.md): add and remove a code
location, previews of merge requests, the registry part regenerated as the platform upgrade does, and the
Postgres password rotated. Every workspace change goes through ci/previews.py (config.write_workspace for the
registry part, previews.add_preview/remove_preview for the previews), the one registration code the cluster's
preview jobs and upgrade use; lifecycle.py keeps starting, stopping and attaching to a stack.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from dagster_platform import net
from dagster_platform.ci import previews
from dagster_platform.graphql import Client
from dagster_platform.helm import registry
from dagster_platform.local import config, locations, postgres
from dagster_platform.local.lifecycle import (
    HOST,
    Stack,
    attach,
    base_env,
    restart_component,
    say,
    start_code_server,
    wait_code_server,
)
from dagster_platform.local.supervisor import ComponentFailed, Supervisor
from dagster_platform.paths import grpc_port


class NotRegistered(RuntimeError):
    """A refusal before anything changed (exit 2): an unknown location, a name already taken, a bad source."""


def _daemon_refresh_seconds() -> int:
    """At most this long after the workspace file changes, the daemon has started reading it again: its
    controller re-reads the file every RELOAD_WORKSPACE_INTERVAL (60 s), checked every THREAD_CHECK_INTERVAL
    (5 s) (dagster._daemon.controller.check_workspace_freshness → WorkspaceProcessContext.refresh_workspace,
    which creates the origins from the file anew)."""
    from dagster._daemon import controller

    return controller.RELOAD_WORKSPACE_INTERVAL + controller.THREAD_CHECK_INTERVAL


def dials(pid: int, port: int) -> bool:
    """Does process `pid` hold a TCP connection to 127.0.0.1:`port` right now? (The daemon's watch thread asks
    each code server of its workspace for its server id every second, on a new connection each time: a
    connection to a location's port exists only once the daemon's workspace holds that location.)"""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    if not inodes:
        return False
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def wait_daemon_sees(stack: Stack, name: str, port: int, timeout: float) -> float:
    """Until the daemon dials the new location's code server (its workspace holds it); returns seconds waited."""
    sup, began = stack.supervisor, time.monotonic()
    pid = sup.components["daemon"].pid
    while not dials(pid, port):
        if not sup.alive("daemon"):
            raise ComponentFailed(f"the daemon is not running; {sup.tail('daemon')}")
        if time.monotonic() - began > timeout:
            raise ComponentFailed(
                f"the daemon has not loaded {name} after {timeout:.0f}s (it re-reads the workspace every "
                f"{_daemon_refresh_seconds()}s); `stack restart daemon` makes it read the workspace now"
            )
        time.sleep(0.01)  # each of its connections lives for milliseconds, once a second
    return time.monotonic() - began


def _write_workspace(stack: Stack, entries: dict[str, dict]) -> Path:
    return config.write_workspace(stack.dagster_home, {n: info["port"] for n, info in entries.items()})


def _check_source_and_stack(source: Path, stack: Stack) -> None:
    """Before anything starts: `source` is a location (its own lock) and the stack's webserver and daemon run."""
    if not ((source / "pyproject.toml").is_file() and (source / "uv.lock").is_file()):
        raise NotRegistered(f"{source} holds no location: it needs a pyproject.toml and a uv.lock")
    if not stack.supervisor.alive("webserver") or not stack.supervisor.alive("daemon"):
        raise NotRegistered(f"the stack in {stack.state_dir} is not running (webserver and daemon): `make stack`")


def add_location(stack: Stack, loc: locations.Location, timeout: float = 300) -> Stack:
    """Register one more location on a running stack, as the cluster's registry entry + platform upgrade +
    the location's release do: its sources and .venv (locations.prepare), its code server (the one start of
    `up`), the workspace file with it, the webserver's workspace reloaded until it is LOADED, and the
    daemon's own periodic re-read of the workspace file awaited. Recorded in state.json like the others, so
    `stack status`, `stack restart` and `stack down` treat it as theirs. Raises NotRegistered before anything
    changes when the name is taken or the source is no location; on a later failure what it did is undone."""
    sup = stack.supervisor
    if loc.name in stack.locations or f"code-server-{loc.name}" in sup.components:
        raise NotRegistered(f"location {loc.name!r} is already registered in {stack.state_dir}; remove it first")
    # The registry's own rules for a name (the cluster's Service and release name), checked on a local entry.
    entry = {"name": loc.name, "team": "local", "port": grpc_port(), "module": loc.module}
    if problems := registry.check_code_location_registry([entry]):
        raise NotRegistered(f"location name refused: {problems[0].message}")
    _check_source_and_stack(Path(loc.source), stack)
    client, name = stack.client, f"code-server-{loc.name}"
    began = time.monotonic()
    location_dir = locations.prepare(loc, stack.state_dir / "locations")
    say(f"location {loc.name}: sources and .venv ready in {location_dir} ({time.monotonic() - began:.1f}s)")
    port = net.free_port()
    entries = {**stack.locations, loc.name: {"port": port, "dir": str(location_dir)}}
    try:
        start_code_server(sup, loc, location_dir, port, base_env(stack.dagster_home, stack.pg, stack.store),
                          stack.dagster_home)  # fmt: skip
        wait_code_server(sup, loc.name, port, timeout)
        written = time.monotonic()
        workspace = _write_workspace(stack, entries)
        sup.meta["locations"] = entries
        sup.save()
        say(f"workspace: {workspace} lists {loc.name} (127.0.0.1:{port})")
        client.reload_workspace()
        sup.wait_ready("webserver", lambda: client.all_loaded([loc.name]), timeout, also=[name])
        say(f"webserver: workspace reloaded, {loc.name} LOADED ({time.monotonic() - written:.1f}s)")
        took = wait_daemon_sees(stack, loc.name, port, _daemon_refresh_seconds() + 120)
        say(
            f"daemon: re-read the workspace, {loc.name} is in it ({time.monotonic() - written:.1f}s after the "
            f"write; it re-reads every {_daemon_refresh_seconds()}s; waited {took:.1f}s)",
        )
    except BaseException:
        sup.stop(name)
        sup.components.pop(name, None)
        sup.meta["locations"] = stack.locations
        sup.save()
        _write_workspace(stack, stack.locations)
        with contextlib.suppress(Exception):
            client.reload_workspace()
        say(f"undone: {loc.name} stopped and removed from the workspace again")
        raise
    return attach(stack.state_dir)


AUTOMATION_SETTLE = 10.0  # seconds a stopped schedule/sensor must stay STOPPED before its location goes


def stop_automation(client: Client, name: str, timeout: float = 120) -> list[str]:
    """Stop every RUNNING schedule and sensor of a location and make sure they stay stopped: a sensor daemon
    iteration that read the state just before the stop writes it back RUNNING when it marks its tick
    (dagster._daemon.sensor.mark_sensor_state_for_tick), so whatever shows RUNNING again is stopped again,
    until none has for AUTOMATION_SETTLE seconds. Returns '<kind> <name>' of each one stopped."""
    stopped: list[str] = []
    began = time.monotonic()
    quiet_since = None
    while True:
        running = [item for item in client.automation(name) if item["status"] == "RUNNING"]
        for item in running:
            client.stop(item["kind"], item["id"])
            label = f"{item['kind']} {item['name']}"
            if label not in stopped:
                stopped.append(label)
                say(f"stopped {label} of {name}")
        if not stopped:
            say(f"no running schedule or sensor in {name}")
            return stopped
        if running or quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= AUTOMATION_SETTLE:
            return stopped
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"the schedules and sensors of {name} keep running after {timeout:.0f}s of stops")
        time.sleep(1)


def remove_location(stack: Stack, name: str, timeout: float = 300) -> Stack:
    """Take one location off a running stack, as the cluster's removal does: first stop every RUNNING
    schedule and sensor of it (GraphQL; an instigator left RUNNING for a location that is gone makes the
    daemon log an error on every tick), then the workspace file without it, the webserver's workspace
    reloaded until it is gone, and its code server stopped by process group (run workers included). Its
    sources and .venv stay in locations/ (a cache). Raises NotRegistered, changing nothing, for a name the
    stack does not run."""
    sup = stack.supervisor
    if name not in stack.locations:
        known = ", ".join(stack.locations) or "none"
        raise NotRegistered(f"no location {name!r} in {stack.state_dir} (registered: {known}); nothing changed")
    client = stack.client
    _stop_automation_of(client, name)
    entries = {n: info for n, info in stack.locations.items() if n != name}
    workspace = _write_workspace(stack, entries)
    sup.meta["locations"] = entries
    sup.save()
    say(f"workspace: {workspace} no longer lists {name}")
    client.reload_workspace()
    sup.wait_ready("webserver", lambda: name not in client.locations(), timeout)
    say(f"webserver: workspace reloaded, {name} gone; the daemon drops it within {_daemon_refresh_seconds()}s")
    _stop_code_server(stack, name)
    return attach(stack.state_dir)


def rotate_pg_password(
    stack: Stack, on_altered: Callable[[postgres.PgConnection, postgres.PgConnection], None] | None = None
) -> Stack:
    """A new password for the stack's database role, as on the cluster (new Secret value, ALTER ROLE, restart
    what read the old one at start): ALTER ROLE through the superuser connection, the new password stored in
    state.json (0600), then every component holding it restarted alone: the code servers first (run workers
    inherit their environment), then the daemon, then the webserver, then the metrics exporter. `on_altered(old,
    new)` runs between the ALTER ROLE and the restarts (tests). Raises RotationFailed naming the step and the way
    back."""
    saved = dict(stack.supervisor.meta.get("postgres") or {})
    if not saved or saved.get("external"):
        raise NotRegistered(
            "this stack uses an existing PostgreSQL server (--pg-url): rotate its password there"
            if saved else f"no stack was started from {stack.state_dir}: run `make stack`"
        )  # fmt: skip
    old = stack.pg
    new = dataclasses.replace(old, password=secrets.token_urlsafe(18))
    try:
        with contextlib.closing(old.connect("postgres")) as admin:
            admin.autocommit = True
            with admin.cursor() as cur:
                from psycopg2 import sql

                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(old.user)), (new.password,))
    except Exception as exc:
        raise RotationFailed(f"ALTER ROLE {old.user} failed ({one_line(exc)}); nothing changed") from exc
    say(f"postgres: ALTER ROLE {old.user} PASSWORD (new random password); the old one is refused from now on")
    try:
        sup = stack.supervisor
        sup.meta["postgres"] = {**saved, "password": new.password}
        sup.save()
    except Exception as exc:
        raise RotationFailed(
            f"storing the new password in {stack.state_dir / 'state.json'} failed ({one_line(exc)}); the role has "
            "the new one: run `stack rotate-pg-password` again once the state dir is writable"
        ) from exc
    say(f"state: new password stored in {sup.state_file} (mode 0600)")
    if on_altered:
        on_altered(old, new)
    rotated = attach(stack.state_dir)
    order = [n for n in sup.components if n.startswith("code-server-")] + ["daemon", "webserver"]
    order += [n for n in ("metrics-exporter",) if n in sup.components]  # it reads the instance too
    for name in order:
        if not sup.alive(name):
            say(f"skipped {name}: not running (it reads the new password when it starts)")
            continue
        began = time.monotonic()
        try:
            restart_component(rotated, name)
        except Exception as exc:
            raise RotationFailed(
                f"restarting {name} failed ({one_line(exc)}); the new password is in place: restart it alone "
                f"with `stack restart {name}` (log {sup.components[name].log})"
            ) from exc
        pid = Supervisor(stack.state_dir).components[name].pid
        say(f"restarted {name} with the new password (pid {pid}, {time.monotonic() - began:.1f}s)")
    return rotated


class RotationFailed(RuntimeError):
    """One line: the step that failed and the way back."""


def one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- previews of merge requests (ci/previews.py; docs/stack.md "Previews of merge requests") -----------------
PREVIEW_ENV = "local"  # the environment previews.py guards: the laptop is one that may hold previews


def workspace_store(stack: Stack) -> previews.FileStore:
    """The stack's workspace.yaml and its state, as previews.py reads and writes them (under its file lock)."""
    return previews.FileStore(stack.dagster_home / "workspace.yaml")


def _refusal(exc: previews.PreviewError) -> NotRegistered:
    return NotRegistered(str(exc))


def add_preview(
    stack: Stack, location: str, mr: int | str, source: Path, module: str | None = None,
    max_per_location: int | None = None, timeout: float = 300,
) -> tuple[Stack, list[str]]:  # fmt: skip
    """What the CI job deploy-preview does, on the laptop: the checkout `source` (another branch of `location`'s
    repo) as preview `<location>-mr-<mr>` — its sources and .venv, its code server with DAGSTER_PREVIEW=mr-<mr>
    (and so its run workers), registered with previews.add_preview (the base location registered, no name
    collision, env local; at most `max_per_location` previews of the location, the oldest evicted), every evicted
    preview stopped (its automation, then its code server: what the job's `helm uninstall` of an evicted release
    means), the webserver reloaded until the preview is LOADED, and the daemon's re-read of the workspace awaited.
    Returns the stack and the evicted names. Raises NotRegistered before anything changes when a guard refuses."""
    sup, store = stack.supervisor, workspace_store(stack)
    try:
        previews.check_environment(PREVIEW_ENV)
        name = previews.preview_name(location, mr)
        previews.add_preview(store.read()[0], location, mr, 0, host=HOST, max_per_location=max_per_location)
    except previews.PreviewError as exc:
        raise _refusal(exc) from exc
    component = f"code-server-{name}"
    if component in sup.components:
        raise NotRegistered(f"preview {name} is already running; remove-preview it first to load another checkout")
    source = Path(source)
    _check_source_and_stack(source, stack)
    loc = locations.Location(name, module or locations.default_module(source), str(source),
                             env={"DAGSTER_PREVIEW": f"mr-{mr}"}, required=False)  # fmt: skip
    began = time.monotonic()
    location_dir = locations.prepare(loc, stack.state_dir / "previews")
    say(f"preview {name}: sources and .venv ready in {location_dir} ({time.monotonic() - began:.1f}s)")
    client, port, evicted = stack.client, net.free_port(), []

    def register(ws: previews.Workspace) -> previews.Workspace:
        new, evicted[:] = previews.add_preview(ws, location, mr, port, host=HOST, max_per_location=max_per_location)
        return new

    try:
        start_code_server(sup, loc, location_dir, port, base_env(stack.dagster_home, stack.pg, stack.store),
                          stack.dagster_home)  # fmt: skip
        wait_code_server(sup, name, port, timeout)
        written = time.monotonic()
        previews.update(store, register)
        sup.meta.setdefault("previews", {})[name] = {"location": location, "mr": int(mr), "port": port,
                                                     "dir": str(location_dir)}  # fmt: skip
        sup.save()
        say(f"workspace: {store.path} lists preview {name} (127.0.0.1:{port}, DAGSTER_PREVIEW=mr-{mr})")
        limit = max_per_location or store.read()[0].limit or previews.DEFAULT_MAX_PER_LOCATION
        for old in evicted:  # still served by the webserver until the reload: its automation can be stopped
            say(f"evicted {old}: the oldest preview of {location} (at most {limit} per location)")
            _stop_automation_of(client, old)
        client.reload_workspace()
        sup.wait_ready("webserver", lambda: client.all_loaded([name]) and not set(evicted) & set(client.locations()),
                       timeout, also=[component])  # fmt: skip
        say(f"webserver: workspace reloaded, {name} LOADED ({time.monotonic() - written:.1f}s)")
        for old in evicted:
            _stop_code_server(stack, old)
        took = wait_daemon_sees(stack, name, port, _daemon_refresh_seconds() + 120)
        say(f"daemon: re-read the workspace, {name} is in it (waited {took:.1f}s)")
    except BaseException as exc:
        sup.stop(component)
        sup.components.pop(component, None)
        sup.meta.get("previews", {}).pop(name, None)
        sup.save()
        with contextlib.suppress(Exception):
            previews.update(store, lambda ws: previews.remove_preview(ws, name)[0])
            client.reload_workspace()
        for old in evicted:  # out of the workspace already: their servers go too
            _stop_code_server(stack, old)
        say(f"undone: {name} stopped and removed from the workspace again")
        if isinstance(exc, previews.PreviewError):  # the workspace changed under us (e.g. the location went)
            raise _refusal(exc) from exc
        raise
    return attach(stack.state_dir), list(evicted)


def remove_preview(stack: Stack, location: str, mr: int | str, timeout: float = 300) -> tuple[Stack, bool]:
    """What the CI job stop-preview does, on the laptop: the preview's schedules and sensors stopped (none should
    run), previews.remove_preview, the webserver reloaded until it is gone, its code server stopped by process
    group (run workers included). A preview that is not there: nothing to do (a stop job may run twice)."""
    sup, store, client = stack.supervisor, workspace_store(stack), stack.client
    try:
        name = previews.preview_name(location, mr)
        previews.remove_preview(store.read()[0], name)  # refuses a registered location's name
    except previews.PreviewError as exc:
        raise _refusal(exc) from exc
    if name not in store.read()[0].previews and f"code-server-{name}" not in sup.components:
        say(f"preview {name} was not registered; nothing to do")
        return attach(stack.state_dir), False
    _stop_automation_of(client, name)
    previews.update(store, lambda ws: previews.remove_preview(ws, name)[0])
    say(f"workspace: {store.path} no longer lists preview {name}")
    client.reload_workspace()
    sup.wait_ready("webserver", lambda: name not in client.locations(), timeout)
    say(f"webserver: workspace reloaded, {name} gone; the daemon drops it within {_daemon_refresh_seconds()}s")
    _stop_code_server(stack, name)
    return attach(stack.state_dir), True


def sync_registry(stack: Stack, timeout: float = 300) -> Stack:
    """What the platform upgrade does to the cluster's workspace (`previews sync` before helm upgrade): the
    registry part regenerated from the stack's registered locations (config.write_workspace →
    previews.with_registry), the previews kept; the webserver reloaded until every registered location that
    runs and every preview is LOADED again."""
    store, client, sup = workspace_store(stack), stack.client, stack.supervisor
    before = store.read()[0]
    try:
        _write_workspace(stack, stack.locations)
    except previews.PreviewError as exc:
        raise _refusal(exc) from exc
    ws = store.read()[0]
    change = "unchanged" if ws == before else "rewritten"
    say(f"workspace: {store.path} {change}: {len(ws.registry)} registered location(s), "
        f"{len(ws.previews)} preview(s) kept ({', '.join(sorted(ws.previews)) or 'none'})")  # fmt: skip
    client.reload_workspace()
    serving = [n for n in ws.registry if sup.alive(f"code-server-{n}")] + sorted(ws.previews)
    began = time.monotonic()
    sup.wait_ready("webserver", lambda: client.all_loaded(serving), timeout)
    say(f"webserver: workspace reloaded, {', '.join(serving)} LOADED ({time.monotonic() - began:.1f}s)")
    return attach(stack.state_dir)


def _stop_automation_of(client: Client, name: str) -> None:
    """stop_automation, when the location is loaded; otherwise say why its schedules and sensors cannot be listed
    (its code cannot be asked; the daemon cannot tick what it cannot load either)."""
    state = client.locations().get(name)
    if state and state["repositories"]:
        stop_automation(client, name)
    else:
        why = (state["error"] or state["status"]).splitlines()[0] if state else "not in the webserver's workspace"
        say(f"could not list the schedules and sensors of {name}: it is not loaded ({why})")


def _stop_code_server(stack: Stack, name: str) -> None:
    """Stop a location's or preview's code server by process group (its run workers included) and forget it."""
    sup, component = stack.supervisor, f"code-server-{name}"
    pids = [c.pid for c in [sup.components.get(component)] if c]
    stopped = sup.stop(component) if component in sup.components else False
    sup.components.pop(component, None)
    sup.meta.get("previews", {}).pop(name, None)
    sup.save()
    say(f"stopped {component} (pid {pids[0]}, its run workers included)" if stopped and pids else
        f"{component} was not running")  # fmt: skip
