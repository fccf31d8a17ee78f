"""`dagster-platform stack up|down|status`: the production-like local stack.

Order matters: Postgres → `dagster instance migrate` (creates the schema once, so the daemon and the
webserver never race to create it) → one gRPC code server per location (each from its own .venv) →
daemon → webserver. Each step prints when it is ready; a step that fails prints its log tail and
everything already started is stopped again.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dagster_platform import net, procs
from dagster_platform.graphql import Client
from dagster_platform.helm.values import ENVIRONMENTS
from dagster_platform.local import config, locations, objectstore, postgres
from dagster_platform.local.supervisor import ComponentFailed, Supervisor, held_until_ready, run_once
from dagster_platform.paths import ROOT

DEFAULT_STATE_DIR = ROOT / ".stack"
DEFAULT_PORT = 3000
HOST = "127.0.0.1"
PLATFORM_BIN = Path(sys.executable).parent  # the platform's .venv: webserver, daemon, migrate
STOP_ORDER_PREFIX = ("webserver", "daemon")  # then code servers, Postgres last

# Variables from the caller's shell that would make a child use the wrong environment or instance.
# AWS_*: a developer's own cloud credentials must never reach a local process (the object store's
# throwaway ones are set instead).
SCRUBBED = (
    "VIRTUAL_ENV",
    "UV_PROJECT_ENVIRONMENT",
    "PYTHONPATH",
    "PYTHONHOME",
    "DAGSTER_HOME",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@dataclass
class Stack:
    state_dir: Path
    url: str
    pg: postgres.PgConnection
    store: objectstore.ObjectStore
    env_name: str = config.DEFAULT_ENV
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
        return self.state_dir / "home"


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def base_env(dagster_home: Path, pg: postgres.PgConnection, store: objectstore.ObjectStore) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(pg.env())
    env.update(store.env())
    env["DAGSTER_HOME"] = str(dagster_home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _code_server_command(location_dir: Path, loc: locations.Location, port: int) -> list[str]:
    """The location image's own CMD (`dagster api grpc -m <module>`), bound to loopback."""
    command = [
        str(location_dir / ".venv" / "bin" / "dagster"),
        "api",
        "grpc",
        "-h",
        HOST,
        "-p",
        str(port),
        *(["-f", loc.python_file] if loc.python_file else ["-m", loc.module]),
        "--location-name",
        loc.name,
        # Several Python environments on one machine: run workers must use this server's interpreter.
        "--use-python-environment-entry-point",
    ]
    return command


def own_tmp(env: dict[str, str], home: Path, name: str) -> dict[str, str]:
    """The webserver's own temp dir, as each pod has its own disk: step logs staged by a run worker (in the
    system temp dir) are not on the webserver's disk, so the UI can only show them from the object store, as
    on the cluster. Only the webserver gets one: code servers and run workers keep the short system temp dir,
    where the forkserver executor's Unix socket path must stay under 108 bytes."""
    tmp = home / "tmp" / name
    tmp.mkdir(parents=True, exist_ok=True)
    return {**env, "TMPDIR": str(tmp)}


def location_env(env: dict[str, str], loc: locations.Location, location_dir: Path, home: Path) -> dict[str, str]:
    env = dict(env)
    env["PATH"] = f"{location_dir / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The example location's local mode: its warehouse is a SQLite file (DAGSTER_ENV=local).
    env.setdefault("DAGSTER_ENV", "local")
    env["WAREHOUSE_SQLITE_PATH"] = str(home / "warehouses" / f"{loc.name}.sqlite")
    env.update(loc.env)
    return env


def start_postgres(sup: Supervisor, pg_url: str | None) -> tuple[postgres.PgConnection, float]:
    started = time.monotonic()
    if pg_url:
        conn = postgres.from_url(pg_url)
        postgres.wait_accepting(conn, timeout=30)
        sup.meta["postgres"] = {"external": True}
        sup.save()
        _say(f"postgres: using existing server {conn.host}:{conn.port}/{conn.db_name}")
        return conn, time.monotonic() - started
    saved = sup.meta.get("postgres") or {}
    port = saved.get("port")
    if not port or net.port_open(HOST, port):
        port = net.free_port()
    cluster = postgres.Cluster(
        data_dir=postgres.data_dir_for(sup.state_dir, saved),
        port=port,
        password=saved.get("password") or postgres.new_password(),
    )
    fresh = not cluster.initialized
    # Recorded before initdb: a restart finds the data dir, `down --wipe` removes it even after a failed init.
    sup.meta["postgres"] = {
        "external": False,
        "port": port,
        "password": cluster.password,
        "data_dir": str(cluster.data_dir),
    }
    sup.save()
    os.chmod(sup.state_file, 0o600)  # it holds the throwaway cluster's password
    cluster.init()
    start_postgres_server(sup, cluster)
    postgres.ensure_database(cluster.connection)
    _say(
        f"postgres: ready on {HOST}:{port} ({'new cluster' if fresh else 'existing data'} in {cluster.data_dir}, "
        f"{time.monotonic() - started:.1f}s)"
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
    sup.wait_ready("postgres", lambda: net.port_open(HOST, cluster.port), timeout=timeout, interval=0.2)
    postgres.wait_accepting(cluster.connection, timeout=timeout, alive=lambda: sup.alive("postgres"))


def start_object_store(sup: Supervisor, instance_path: Path) -> tuple[objectstore.ObjectStore, float]:
    """moto's S3 server on loopback, with the bucket the derived instance names."""
    import yaml

    started = time.monotonic()
    saved = sup.meta.get("object_store") or {}
    port = saved.get("port")
    if not port or net.port_open(HOST, port):
        port = net.free_port()
    access, secret = saved.get("access_key"), saved.get("secret_key")
    if not access:
        access, secret = objectstore.new_credentials()
    store = objectstore.ObjectStore(port, access, secret)
    sup.meta["object_store"] = {"port": port, "access_key": access, "secret_key": secret}
    sup.save()
    os.chmod(sup.state_file, 0o600)
    start_object_store_server(sup, store)
    bucket = (yaml.safe_load(instance_path.read_text()).get("compute_logs") or {}).get("config", {}).get("bucket")
    if bucket:
        store.ensure_bucket(bucket)
    _say(f"object store: S3 on {store.endpoint_url}, bucket {bucket} ({time.monotonic() - started:.1f}s)")
    return store, time.monotonic() - started


def start_object_store_server(sup: Supervisor, store: objectstore.ObjectStore, timeout: float = 60) -> None:
    sup.start("object-store", objectstore.server_command(store.port), env=dict(os.environ), info={"port": store.port})
    sup.wait_ready("object-store", lambda: net.http_ok(f"{store.endpoint_url}/moto-api/"), timeout=timeout)


def object_store_from_state(state_dir: Path) -> objectstore.ObjectStore:
    saved = Supervisor(state_dir).meta["object_store"]
    return objectstore.ObjectStore(saved["port"], saved["access_key"], saved["secret_key"])


def cluster_from_state(state_dir: Path) -> postgres.Cluster:
    saved = Supervisor(state_dir).meta["postgres"]
    if saved.get("external"):
        raise RuntimeError("this stack uses an external PostgreSQL server; it does not manage it")
    return postgres.Cluster(
        data_dir=postgres.data_dir_for(state_dir, saved), port=saved["port"], password=saved["password"]
    )


def migrate(env: dict[str, str], home: Path, sup: Supervisor) -> float:
    took = run_once([str(PLATFORM_BIN / "dagster"), "instance", "migrate"], env, sup.log_dir / "migrate.log", cwd=home)
    _say(f"instance: schema migrated in Postgres ({took:.1f}s)")
    return took


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    port: int = DEFAULT_PORT,
    stack_locations: list[locations.Location] | None = None,
    pg_url: str | None = None,
    timeout: float = 300,
    env_name: str = config.DEFAULT_ENV,
) -> Stack:
    """Start everything and wait until all required locations are LOADED; returns the running stack.
    On failure everything started here is stopped again and ComponentFailed/RuntimeError is raised."""
    t0 = time.monotonic()
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(state_dir)
    running = sup.pids()
    if running:
        raise RuntimeError(f"a stack is already running from {state_dir}: {running}; run `stack down` first")
    if net.port_open(HOST, port):
        raise RuntimeError(f"port {port} on {HOST} is already in use; pass another --port")
    stack_locations = stack_locations if stack_locations is not None else locations.default_locations()
    pg_url = pg_url or os.environ.get(postgres.PG_URL_ENV)
    if not pg_url:
        postgres.preflight()  # one line naming the cause and the fix, before anything starts
    home = state_dir / "home"
    timings: dict[str, float] = {}
    try:
        # 1. Sources and virtualenvs (not part of "stack up → LOADED": that is a build step, cached).
        loc_dirs: dict[str, Path] = {}
        for loc in stack_locations:
            began = time.monotonic()
            loc_dirs[loc.name] = locations.prepare(loc, state_dir / "locations")
            if not loc.venv_from:
                _say(f"location {loc.name}: sources and .venv ready ({time.monotonic() - began:.1f}s)")
        t_processes = time.monotonic()
        timings["prepare"] = t_processes - t0
        # 2. Postgres, 3. config, 4. schema.
        # The cluster's dagster.yaml of env_name, with the stack's substitutions only (refuses drift).
        instance_path = config.write_instance(home, env=env_name, mode="stack")
        pg, timings["postgres"] = start_postgres(sup, pg_url)
        store, timings["object_store"] = start_object_store(sup, instance_path)
        sup.meta["env_name"] = env_name
        sup.save()
        loc_ports = {loc.name: net.free_port() for loc in stack_locations}
        config.write_workspace(home, [{"name": n, "host": HOST, "port": p} for n, p in loc_ports.items()])
        env = base_env(home, pg, store)
        timings["migrate"] = migrate(env, home, sup)
        # 5. Code servers, all started at once, then waited for.
        for loc in stack_locations:
            loc_env = location_env(env, loc, loc_dirs[loc.name], home)
            sup.start(
                f"code-server-{loc.name}",
                _code_server_command(loc_dirs[loc.name], loc, loc_ports[loc.name]),
                env=loc_env,
                cwd=loc_dirs[loc.name],
                info={"location": loc.name, "port": loc_ports[loc.name], "required": loc.required, "env": loc.env},
            )
        for loc in stack_locations:
            if not loc.required:
                continue
            took = sup.wait_ready(
                f"code-server-{loc.name}", lambda p=loc_ports[loc.name]: net.port_open(HOST, p), timeout
            )
            _say(f"code server {loc.name}: serving gRPC on {HOST}:{loc_ports[loc.name]} ({took:.1f}s)")
        # 6. Daemon, then 7. webserver (the schema exists already: no creation race).
        workspace = str(home / "workspace.yaml")
        sup.start(
            "daemon",
            [str(PLATFORM_BIN / "dagster-daemon"), "run", "-w", workspace],
            env=env,
            cwd=home,
        )
        sup.start(
            "webserver",
            [str(PLATFORM_BIN / "dagster-webserver"), "-h", HOST, "-p", str(port), "-w", workspace],
            env=own_tmp(env, home, "webserver"),
            cwd=home,
            info={"port": port},
        )
        url = f"http://{HOST}:{port}"
        client = Client(url, timeout=10)
        took = sup.wait_ready("webserver", lambda: client.server_info() == 200, timeout)
        _say(f"webserver: {url} answering ({took:.1f}s)")
        required = [loc.name for loc in stack_locations if loc.required]
        sup.wait_ready("webserver", lambda: client.all_loaded(required), timeout)
        timings["all_loaded"] = time.monotonic() - t_processes
        _say(f"locations LOADED: {', '.join(required)} ({timings['all_loaded']:.1f}s after starting processes)")
        sup.wait_ready("daemon", lambda: all(client.daemon_health().values()), timeout)
        _say(f"daemon: all required daemons healthy ({sorted(client.daemon_health())})")
        timings["ready"] = time.monotonic() - t_processes
        timings["total"] = time.monotonic() - t0
        sup.meta["url"] = url
        sup.meta["locations"] = {n: {"port": p, "dir": str(loc_dirs[n])} for n, p in loc_ports.items()}
        sup.save()
        return Stack(
            state_dir=state_dir,
            url=url,
            pg=pg,
            store=store,
            env_name=env_name,
            locations={n: {"port": p, "dir": loc_dirs[n]} for n, p in loc_ports.items()},
            timings=timings,
        )
    except BaseException as exc:
        _say(f"FAILED: {exc}")
        stopped = down(state_dir, quiet=True)
        _say(f"stopped again: {', '.join(stopped) or 'nothing'}")
        raise


def stop_order(sup: Supervisor) -> list[str]:
    names = list(sup.components)
    code_servers = [n for n in names if n.startswith("code-server-")]
    rest = [n for n in names if n not in (*STOP_ORDER_PREFIX, *code_servers, "postgres")]
    return [n for n in STOP_ORDER_PREFIX if n in names] + code_servers + rest + ["postgres"]


def down(state_dir: Path = DEFAULT_STATE_DIR, wipe: bool = False, quiet: bool = False) -> list[str]:
    """Stop every component recorded in the state file, by PID; with wipe, delete the data too."""
    state_dir = Path(state_dir).resolve()
    sup = Supervisor(state_dir)
    stopped = []
    saved_pg = sup.meta.get("postgres") or {}
    for name in stop_order(sup):
        if sup.stop(name):
            stopped.append(name)
            if not quiet:
                _say(f"stopped {name} (pid {sup.components[name].pid})")
    if wipe:
        # Data: the throwaway cluster, the instance directory, logs, state. Location sources/venvs stay
        # (a cache rebuilt from the locks).
        postgres.remove_data(state_dir, saved_pg)  # <state dir>/pgdata, or the server user's own directory
        for path in ("home", "logs", "state.json"):
            target = state_dir / path
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        if not quiet:
            _say(f"wiped data in {state_dir} (kept locations/)")
    return stopped


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, dict]:
    sup = Supervisor(Path(state_dir).resolve())
    return {
        name: {"pid": c.pid, "alive": sup.alive(name), "rss_mib": round(procs.rss_mib(c.pid), 1), "log": c.log}
        for name, c in sup.components.items()
    }


def restart_component(stack: Stack, name: str, ready: Callable[[], bool], timeout: float = 120) -> None:
    """Start a stopped component again with its recorded command (fault-recovery tests, operators)."""
    sup = stack.supervisor
    component = sup.components[name]
    if name == "postgres":
        start_postgres_server(sup, cluster_from_state(stack.state_dir), timeout)
        return
    if name == "object-store":
        start_object_store_server(sup, stack.store, timeout)
        return
    env = base_env(stack.dagster_home, stack.pg, stack.store)
    if name == "webserver":
        env = own_tmp(env, stack.dagster_home, name)
    loc_name = component.info.get("location")
    cwd = stack.dagster_home
    if loc_name:
        loc = locations.Location(name=loc_name, module="", source="", env=component.info.get("env", {}))
        cwd = Path(stack.locations[loc_name]["dir"])
        env = location_env(env, loc, cwd, stack.dagster_home)
    sup.start(name, component.command, env=env, cwd=cwd, info=component.info)
    sup.wait_ready(name, ready, timeout)


# --- CLI -----------------------------------------------------------------------------------------------
def _up_command(args) -> int:
    try:
        # Until ready, what up() starts dies with it (signals, SIGKILL); afterwards it keeps running.
        with held_until_ready(str(Path(args.state_dir).resolve())):
            stack = up(Path(args.state_dir), port=args.port, pg_url=args.pg_url, env_name=args.env)
    except KeyboardInterrupt as exc:
        print(f"stack up interrupted ({exc or 'SIGINT'}); stopped what it had started", file=sys.stderr)
        return 130
    except (ComponentFailed, RuntimeError, TimeoutError, FileNotFoundError, ValueError) as exc:
        # up() has already printed the error with the component's log tail and stopped what it started.
        print(f"stack up failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    _say(f"up in {stack.timings['total']:.1f}s: {stack.url} (stop with `make stack-down`)")
    for name, info in status(stack.state_dir).items():
        _say(f"  {name:<32} pid {info['pid']:<8} {info['rss_mib']:>7.1f} MiB  log {info['log']}")
    return 0


def _down_command(args) -> int:
    stopped = down(Path(args.state_dir), wipe=args.wipe)
    if not stopped:
        _say("nothing was running")
    return 0


def _status_command(args) -> int:
    state = status(Path(args.state_dir))
    if not state:
        _say("no stack state (never started, or wiped)")
        return 1
    for name, info in state.items():
        mark = "running" if info["alive"] else "stopped"
        _say(f"{name:<32} {mark:<8} pid {info['pid']:<8} {info['rss_mib']:>7.1f} MiB")
    url = Supervisor(Path(args.state_dir).resolve()).meta.get("url")
    if url and any(i["alive"] for n, i in state.items() if n == "webserver"):
        for name, loc in Client(url, timeout=10).locations().items():
            _say(f"location {name}: {loc['status']}{' ERROR: ' + loc['error'][:200] if loc['error'] else ''}")
    return 0 if all(i["alive"] for i in state.values()) else 1


def register(subparsers) -> None:
    stack = subparsers.add_parser("stack", help="production-like local stack (Postgres, daemon, code servers)")
    stack.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="runtime state (default .stack/)")
    actions = stack.add_subparsers(dest="action", required=True)
    up_parser = actions.add_parser("up", help="start Postgres, daemon, webserver and one code server per location")
    up_parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="webserver port (default 3000)")
    up_parser.add_argument(
        "--pg-url", default=None, help=f"use an existing PostgreSQL server (or set {postgres.PG_URL_ENV})"
    )
    up_parser.add_argument(
        "--env",
        default=config.DEFAULT_ENV,
        choices=ENVIRONMENTS,
        help=f"whose derived dagster.yaml to run (default {config.DEFAULT_ENV})",
    )
    up_parser.set_defaults(func=_up_command)
    down_parser = actions.add_parser("down", help="stop everything the stack started, by PID")
    down_parser.add_argument("--wipe", action="store_true", help="also delete the database and instance data")
    down_parser.set_defaults(func=_down_command)
    status_parser = actions.add_parser("status", help="what runs, its PID and memory, location load state")
    status_parser.set_defaults(func=_status_command)
