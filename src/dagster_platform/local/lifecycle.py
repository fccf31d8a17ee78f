"""`make stack`: the cluster's topology on loopback (state in .stack/): Postgres (TLS only), the S3-compatible
object store, one gRPC code server per location, the daemon and the webserver; they keep running after
`stack up` returns, until `stack down`. (`make dev` is the example location's own `dg dev`: cli.py.)

Start order: locations (locations.prepare) → dagster.yaml (the cluster's derived instance with the stack's
named substitutions, config.write_instance) → Postgres, object store, the alert receiver (a loopback chat
webhook writing <state dir>/alerts.jsonl, whose URL the platform-ops location gets) → workspace.yaml →
`dagster instance migrate`, before any process opens the instance (processes opening a fresh instance at once
race on creating its schema) → code servers, each from its location's .venv → webserver → daemon, once the
webserver answers (its start-up would compete with the webserver's for the cores) → Alertmanager, Prometheus
and the metrics exporter (metrics/local.py) → ready when every required location is LOADED and every daemon
healthy.
Every process goes through the one supervisor (supervisor.py). A step that fails prints its log tail, and
everything already started is stopped again.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster_platform import net, procs
from dagster_platform.graphql import Client
from dagster_platform.local import alert_receiver, config, locations, objectstore, postgres, services
from dagster_platform.local.services import say, start_object_store, start_postgres
from dagster_platform.local.supervisor import Supervisor, run_once
from dagster_platform.metrics import local as monitoring
from dagster_platform.paths import ROOT

DEFAULT_STATE_DIR = ROOT / ".stack"
DEFAULT_PORT = 3000
HOST = net.HOST
PLATFORM_BIN = Path(sys.executable).parent  # the platform's .venv: webserver, daemon, migrate

# Variables from the caller's shell that would make a child use the wrong environment or instance.
# AWS_*: a developer's own cloud credentials must never reach a local process (the object store's
# throwaway ones are set instead).
SCRUBBED = (
    "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTHONHOME", "DAGSTER_HOME",
    "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
)  # fmt: skip


def home_of(state_dir: Path) -> Path:
    """DAGSTER_HOME of a state dir."""
    return Path(state_dir) / "home"


@dataclass
class Stack:
    state_dir: Path
    url: str
    pg: postgres.PgConnection | None  # None: the stack's processes were not started by up() (attach)
    store: objectstore.ObjectStore | None
    locations: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.state_dir)

    @property
    def client(self) -> Client:
        return Client(self.url)

    @property
    def dagster_home(self) -> Path:
        return home_of(self.state_dir)

    @property
    def alerts_file(self) -> Path:
        return alerts_file(self.state_dir)


def alerts_file(state_dir: Path) -> Path:
    """Where the stack's alert receiver appends each alert (one JSON object per line)."""
    return Path(state_dir) / "alerts.jsonl"


def base_env(dagster_home: Path, pg: postgres.PgConnection | None = None, store=None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update({**(pg.env() if pg else {}), **(store.env() if store else {})})
    env.update(DAGSTER_HOME=str(dagster_home), PYTHONUNBUFFERED="1")
    return env


def own_tmp(env: dict[str, str], home: Path, name: str) -> dict[str, str]:
    """The webserver's own temp dir, as each pod has its own disk: step logs staged by a run worker (in the
    system temp dir) are not on the webserver's disk, so the UI can only show them from the object store, as
    on the cluster. Only the webserver gets one: code servers and run workers keep the short system temp dir,
    where the forkserver executor's Unix socket path must stay under 108 bytes."""
    tmp = home / "tmp" / name
    tmp.mkdir(parents=True, exist_ok=True)
    return {**env, "TMPDIR": str(tmp)}


def location_env(env: dict[str, str], loc: locations.Location, location_dir: Path, home: Path) -> dict[str, str]:
    env = {**env, "PATH": f"{location_dir / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    # The example location's local mode: its warehouse is a SQLite file (DAGSTER_ENV=local).
    env.setdefault("DAGSTER_ENV", "local")
    env["WAREHOUSE_SQLITE_PATH"] = str(home / "warehouses" / f"{loc.name}.sqlite")
    return {**env, **loc.env}


def code_server_command(location_dir: Path, loc: locations.Location, port: int) -> list[str]:
    """The location image's own CMD (`dagster api grpc`)."""
    return [
        str(location_dir / ".venv" / "bin" / "dagster"), "api", "grpc",
        "-h", HOST, "-p", str(port),
        *(["-f", loc.python_file] if loc.python_file else ["-m", loc.module]),
        "--location-name", loc.name,
        # Several Python environments on one machine: run workers must use this server's interpreter.
        "--use-python-environment-entry-point",
    ]  # fmt: skip


def start_alert_receiver(sup: Supervisor, env: dict[str, str], timeout: float) -> str:
    """The loopback chat webhook (alert_receiver.py) on a free port; returns its URL."""
    port, out = net.free_port(), alerts_file(sup.state_dir)
    command = [sys.executable, "-m", alert_receiver.__name__, "--port", str(port), "--out", str(out)]
    sup.start("alert-receiver", command, env=env, cwd=sup.state_dir, info={"port": port})
    sup.wait_ready("alert-receiver", lambda: net.port_open(HOST, port), timeout)
    url = f"http://{HOST}:{port}/"
    say(f"alerts: platform-ops posts to {url}; they land in {out}")
    return url


def start_code_server(
    sup: Supervisor, loc: locations.Location, location_dir: Path, port: int, env: dict[str, str], home: Path
) -> None:
    """One location's gRPC code server (component code-server-<name>) from its own .venv, on `port`; the one
    way `up` and `add_location` start one (`restart_component` starts it again from what this records)."""
    sup.start(
        f"code-server-{loc.name}",
        code_server_command(location_dir, loc, port),
        env=location_env(env, loc, location_dir, home),
        cwd=location_dir,
        info={"location": loc.name, "port": port, "required": loc.required, "env": loc.env, "dir": str(location_dir)},
    )


def wait_code_server(sup: Supervisor, name: str, port: int, timeout: float) -> float:
    """Until the location's code server listens (`dagster api grpc` does once its code is loaded)."""
    took = sup.wait_ready(f"code-server-{name}", lambda: net.port_open(HOST, port), timeout)
    say(f"code server {name}: serving gRPC on {HOST}:{port} ({took:.1f}s)")
    return took


def migrate(env: dict[str, str], home: Path, sup: Supervisor) -> float:
    """`dagster instance migrate`."""
    say(f"instance: creating/migrating the instance schema in {home}")
    took = run_once([str(PLATFORM_BIN / "dagster"), "instance", "migrate"], env, sup.log_dir / "migrate.log", cwd=home)
    say(f"instance: schema ready ({took:.1f}s)")
    return took


def up(
    state_dir: Path | None = None,
    port: int = DEFAULT_PORT,
    stack_locations: list[locations.Location] | None = None,
    pg_url: str | None = None,
    timeout: float = 300,
    env_name: str | None = None,
    host: str = HOST,
) -> Stack:
    """Start everything and wait until all required locations are LOADED and the daemons healthy; returns
    the running stack. Refuses (RuntimeError, PostgresUnavailable: one line) before anything starts when it
    cannot work; on a later failure or interrupt everything started here is stopped again and it re-raises."""
    t0 = time.monotonic()
    state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
    sup = Supervisor(state_dir)
    if running := {name: c.pid for name, c in sup.components.items() if sup.alive(name)}:
        raise RuntimeError(f"already running from {state_dir}: {running}; stop it first (Ctrl-C / `stack down`)")
    if net.port_open(host, port):
        busy = f"{host}:{port} is already in use (another `make dev` or `make stack`?)"
        raise RuntimeError(f"{busy}: stop it, or make stack PORT={port + 1}")
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_locations = locations.default_locations() if stack_locations is None else stack_locations
    # A location added to the last stack (`stack add-location`) lasts until `stack down`: forget its record, or
    # `stack status` would report its code server dead forever.
    names = {f"code-server-{loc.name}" for loc in stack_locations}
    for stale in [n for n in sup.components if n.startswith("code-server-") and n not in names]:
        del sup.components[stale]
    pg_url = pg_url or os.environ.get(postgres.PG_URL_ENV)
    if not pg_url:
        postgres.preflight()  # one line naming the cause and the fix, before anything starts
    monitoring.preflight()
    home = home_of(state_dir)
    timings: dict[str, float] = {}
    pg = store = None
    try:
        dirs: dict[str, Path] = {}
        loc_dir = state_dir / "locations"
        for loc in stack_locations:  # a build step (cached), not part of "processes started → ready"
            began = time.monotonic()
            dirs[loc.name] = locations.prepare(loc, loc_dir)
            if not loc.venv_from:
                say(f"location {loc.name}: sources and .venv ready ({time.monotonic() - began:.1f}s)")
        t_processes = time.monotonic()
        timings["prepare"] = t_processes - t0
        env_name = env_name or config.default_env()
        instance_path = config.write_instance(home, env=env_name, mode="stack")  # refuses drift
        pg, timings["postgres"] = start_postgres(sup, pg_url)
        store, timings["object_store"] = start_object_store(sup, instance_path)
        sup.meta.update(env_name=env_name, previews={})  # previews end with their stack
        sup.save()
        ports = {loc.name: net.free_port() for loc in stack_locations}
        workspace = config.write_workspace(home, ports, keep_previews=False)  # no preview's code server runs yet
        env = base_env(home, pg, store)
        url = f"http://{host}:{port}"
        # The platform-ops location's alerting variables, as the cluster's Secret and values set them.
        webhook = start_alert_receiver(sup, base_env(home), timeout)
        ops_env = {"PLATFORM_ALERT_WEBHOOK_URL": webhook, "PLATFORM_ENV": "local", "PLATFORM_UI_URL": url}
        timings["migrate"] = migrate(env, home, sup)
        for loc in stack_locations:  # all at once, then waited for
            if loc.name == locations.OPS_LOCATION:
                loc = dataclasses.replace(loc, env={**ops_env, **loc.env})
            start_code_server(sup, loc, dirs[loc.name], ports[loc.name], env, home)
        required = [loc.name for loc in stack_locations if loc.required]
        for name in required:  # `dagster api grpc` listens once its code is loaded
            wait_code_server(sup, name, ports[name], timeout)
        sup.start(
            "webserver",
            [str(PLATFORM_BIN / "dagster-webserver"), "-h", host, "-p", str(port), "-w", str(workspace)],
            env=own_tmp(env, home, "webserver"), cwd=home, info={"port": port},
        )  # fmt: skip
        client = Client(url, timeout=10)
        sup.wait_ready("webserver", lambda: client.server_info() == 200, timeout)
        say(f"webserver: {url} answering ({time.monotonic() - t_processes:.1f}s)")
        sup.start("daemon", [str(PLATFORM_BIN / "dagster-daemon"), "run", "-w", str(workspace)], env=env, cwd=home)
        if locations.OPS_LOCATION in dirs:  # the exporter runs from the ops location's .venv
            began = time.monotonic()
            urls = monitoring.start(sup, env, dirs[locations.OPS_LOCATION], url, webhook, timeout)
            timings["monitoring"] = time.monotonic() - began
            say(f"monitoring: Prometheus {urls['prometheus']}, Alertmanager {urls['alertmanager']}, "
                          f"exporter {urls['metrics-exporter']}/metrics ({timings['monitoring']:.1f}s)")  # fmt: skip
        also = [f"code-server-{name}" for name in required]  # a required code server that exits fails it at once
        sup.wait_ready("webserver", lambda: client.all_loaded(required), timeout, also=also)
        timings["all_loaded"] = time.monotonic() - t_processes
        say(f"location{'s' * (len(required) > 1)} {', '.join(required)} LOADED ({timings['all_loaded']:.1f}s)")
        sup.wait_ready("daemon", lambda: all(client.daemon_health().values()), timeout)
        timings["ready"] = time.monotonic() - t_processes
        timings["total"] = time.monotonic() - t0
        say(f"daemon: healthy ({', '.join(sorted(client.daemon_health()))}; {timings['ready']:.1f}s)")
        sup.meta.update(url=url, locations={n: {"port": p, "dir": str(dirs[n])} for n, p in ports.items()})
        sup.save()
        return Stack(state_dir, url, pg, store, sup.meta["locations"], timings)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        say(f"{exc or 'SIGINT'} received, stopping" if interrupted else f"FAILED: {exc}")
        stopped = down(state_dir, quiet=True)
        say(f"stopped again: {', '.join(stopped) or 'nothing'}")
        raise


def stop_order(names: list[str]) -> list[str]:
    """Prometheus and Alertmanager (no alert about the stack going down), webserver, daemon, code servers, anything
    else (the object store, the exporter), Postgres last."""
    ranks = {"prometheus": -2, "alertmanager": -1, "webserver": 0, "daemon": 1, "postgres": 4}
    return sorted(names, key=lambda n: ranks.get(n, 2 if n.startswith("code-server-") else 3))


def down(state_dir: Path = DEFAULT_STATE_DIR, wipe: bool = False, quiet: bool = False, grace: float = 20) -> list[str]:
    """Stop every component recorded in the state file, by PID; with wipe, delete the data too."""
    state_dir = Path(state_dir).resolve()
    sup = Supervisor(state_dir)
    stopped = []
    for name in stop_order(list(sup.components)):
        if sup.stop(name, grace=grace):
            stopped.append(name)
            if not quiet:
                say(f"stopped {name} (pid {sup.components[name].pid})")
    if wipe:
        # Data: the throwaway cluster, the instance directory, logs, state. Location sources/venvs stay
        # (a cache rebuilt from the locks).
        postgres.remove_data(state_dir, sup.meta.get("postgres") or {})  # pgdata, or the server user's dir
        shutil.rmtree(home_of(state_dir), ignore_errors=True)
        shutil.rmtree(state_dir / "logs", ignore_errors=True)
        shutil.rmtree(monitoring.config_dir(state_dir), ignore_errors=True)  # Prometheus' and Alertmanager's data
        (state_dir / "state.json").unlink(missing_ok=True)
        alerts_file(state_dir).unlink(missing_ok=True)
        if not quiet:
            say(f"wiped data in {state_dir} (kept locations/)")
    return stopped


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, dict]:
    sup = Supervisor(Path(state_dir).resolve())
    return {
        name: {"pid": c.pid, "alive": sup.alive(name), "rss_mib": round(procs.rss_mib(c.pid), 1), "log": c.log}
        for name, c in sup.components.items()
    }


def attach(state_dir: Path = DEFAULT_STATE_DIR) -> Stack:
    """The stack recorded in a state dir, as up() returned it (`stack restart`)."""
    state_dir = Path(state_dir).resolve()
    meta = Supervisor(state_dir).meta
    if "url" not in meta:
        raise RuntimeError(f"no stack was started from {state_dir} (or it was wiped): run `make stack`")
    saved_pg, saved_store = meta.get("postgres") or {}, meta.get("object_store")
    pg = store = None
    if saved_pg.get("external"):
        pg = postgres.from_url(saved_pg.get("url") or os.environ.get(postgres.PG_URL_ENV, ""))
    elif saved_pg:
        pg = services.cluster_from_state(state_dir).connection
    if saved_store:
        store = objectstore.ObjectStore(saved_store["port"], saved_store["access_key"], saved_store["secret_key"])
    return Stack(state_dir, meta["url"], pg, store, meta.get("locations", {}))


def restart_component(stack: Stack, name: str, ready: Callable[[], bool] | None = None, timeout: float = 120) -> None:
    """Start one component again with its recorded command, alone, after stopping what is left of its process
    group (a hung daemon; a dead code server's run workers, which nothing would track afterwards). Ready:
    the daemon's fresh heartbeats, the webserver's /server_info, a code server's port (or `ready`)."""
    sup = stack.supervisor
    if name not in sup.components:
        raise RuntimeError(f"no component {name!r} in {stack.state_dir}; one of: {', '.join(sup.components)}")
    sup.stop(name)
    if name == "postgres":
        return services.start_postgres_server(sup, services.cluster_from_state(stack.state_dir), timeout)
    if name == "object-store":
        return services.start_object_store_server(sup, stack.store, timeout)
    component, since = sup.components[name], time.time()
    port = component.info.get("port")
    ready = ready or {
        "daemon": lambda: stack.client.daemons_healthy(since),
        "webserver": lambda: stack.client.server_info() == 200,
    }.get(name, lambda: net.port_open(HOST, port))
    env, cwd = base_env(stack.dagster_home, stack.pg, stack.store), stack.dagster_home
    if name == "webserver":
        env = own_tmp(env, stack.dagster_home, name)
    if loc_name := component.info.get("location"):
        loc = locations.Location(name=loc_name, module="", source="", env=component.info.get("env", {}))
        cwd = Path(component.info.get("dir") or stack.locations[loc_name]["dir"])  # a preview records its dir
        env = location_env(env, loc, cwd, stack.dagster_home)
    sup.start(name, component.command, env=env, cwd=cwd, info=component.info)
    sup.wait_ready(name, ready, timeout)
