"""`make dev`: the Dagster UI on loopback with the template's example location, on a local SQLite instance.

Three processes, started in the order that is both fast and safe:
  1. the code server (`dagster code-server start`) in the example's own virtualenv, so the location runs
     with its own locked dependencies exactly as in its image; it supports "Reload" from the UI;
  2. the webserver (platform venv), started at the same time, with a workspace pointing at that server;
  3. the daemon (schedules, sensors, run queue), once the webserver answers, so its start-up does not
     compete for the two cores with the webserver's and the code server's.
Whatever stops it — Ctrl-C, SIGTERM, a closed terminal (SIGHUP), at any moment of start-up or later — stops
all three, and nothing is started once a stop signal has arrived; if it is SIGKILLed, its children die with
it (PR_SET_PDEATHSIG) and a watchdog process stops what they spawned (their process groups).
The instance lives in .dev/dagster_home and persists across restarts. Its schema is created (and, after a
Dagster upgrade, migrated) by `dagster instance migrate` before any of them starts: three processes opening
a fresh SQLite instance at once race on creating it ("more than one head present").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dagster_platform import procs
from dagster_platform.graphql import Client
from dagster_platform.helm.instance import InstanceTranslationError
from dagster_platform.helm.values import ENVIRONMENTS
from dagster_platform.local.config import DEFAULT_ENV, write_instance
from dagster_platform.local.supervisor import ComponentFailed, run_once
from dagster_platform.net import free_port, http_ok, port_open
from dagster_platform.paths import DEV_DIR, dagster_version
from dagster_platform.template import generate as template

EXAMPLE_LOCATION = "example-pipelines"
EXAMPLE_MODULE = "example_pipelines.definitions"


def ensure_example(dev_dir: Path = DEV_DIR) -> Path:
    """Render the example location from the template once, and install its locked environment."""
    repo = dev_dir / EXAMPLE_LOCATION
    if not (repo / "pyproject.toml").exists():
        print(f"dev: rendering the example code location into {repo}", flush=True)
        template.render(dev_dir)
    subprocess.run(["make", "--no-print-directory", "install"], cwd=repo, check=True)
    return repo


def migrate_instance(home: Path, log: Path) -> None:
    """`dagster instance migrate` once per Dagster version of the platform (a stamp file in the instance)."""
    stamp = home / f".schema-dagster-{dagster_version()}"
    if stamp.exists():
        return
    print(f"dev: creating/migrating the instance schema in {home}", flush=True)
    migrate = [str(Path(sys.executable).parent / "dagster"), "instance", "migrate"]
    run_once(migrate, {**os.environ, "DAGSTER_HOME": str(home)}, log)
    stamp.touch()


def write_workspace(path: Path, code_port: int) -> None:
    workspace = {
        "load_from": [{"grpc_server": {"host": "127.0.0.1", "port": code_port, "location_name": EXAMPLE_LOCATION}}]
    }
    path.write_text(yaml.safe_dump(workspace, sort_keys=False))


@dataclass
class Process:
    name: str
    argv: list[str]
    cwd: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None

    def start(self, watchdog: procs.Watchdog | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:  # the child keeps its own copy
            # Own process group: Ctrl-C reaches only the supervisor, which stops components in order, and
            # stopping a component also reaches what it spawned (the code server's gRPC subprocess).
            # It dies with this process however that ends (SIGKILL included), and registers its group with
            # the watchdog before it runs anything, so its own children are stopped too.
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=procs.child_setup(die_with_parent=True, watchdog=watchdog),
            )

    def exited(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        if not self.popen:
            return
        # The group may outlive its leader (a code server's subprocess), so signal the group regardless.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM and not group_alive(self.popen.pid):
                return


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Stopping(Exception):  # noqa: N818 - not an error: a stop was requested
    """A stop signal arrived; raised at serve()'s own checkpoints, never from inside the signal handler."""


class StopRequest:
    """SIGINT, SIGTERM and SIGHUP only record that a stop was requested. The handler never raises, so no
    signal can land between starting a process and recording it, or cut the shutdown short; serve()
    checks the request before each start and while it waits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous = {sig: signal.signal(sig, self._record) for sig in procs.STOP_SIGNALS}

    def _record(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Stopping(signal.Signals(self.signum).name)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def wait_until(condition, processes: list[Process], timeout: float, what: str, stop: StopRequest | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if stop is not None:
            stop.check()
        if condition():
            return
        for process in processes:
            if process.exited() is not None:
                raise ComponentFailed(f"{process.name} exited ({process.exited()}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise ComponentFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def serve(host: str, port: int, dev_dir: Path = DEV_DIR, until_ready: bool = False, env_name: str = DEFAULT_ENV) -> int:
    started = time.monotonic()
    dev_dir = Path(dev_dir).resolve()  # children run in other directories: a relative --dev-dir must not move
    # From here on a stop signal is a request, honoured before anything more starts (see StopRequest).
    stop = StopRequest()
    if port_open(host, port):
        print(
            f"dev: FAILED: {host}:{port} is already in use (another `make dev` or `make stack`?); "
            f"stop it, or pick another port: make dev PORT={port + 1}",
            file=sys.stderr,
        )
        return 1
    repo = ensure_example(dev_dir)
    home = (dev_dir / "dagster_home").resolve()
    logs = dev_dir / "logs"
    try:
        # The cluster's dagster.yaml with make dev's substitutions only (SQLite, local step logs, processes).
        write_instance(home, env=env_name, mode="dev")
    except (ValueError, InstanceTranslationError) as exc:
        print(f"dev: FAILED: {exc}", file=sys.stderr)
        return 1
    try:
        migrate_instance(home, logs / "migrate.log")
    except ComponentFailed as exc:
        print(f"dev: FAILED: {exc}", file=sys.stderr)
        return 1
    code_port = free_port()
    workspace = dev_dir / "workspace.yaml"
    write_workspace(workspace, code_port)

    env = {"DAGSTER_HOME": str(home)}
    bin_dir = Path(sys.executable).parent
    code_server = Process(
        "code server",
        [str(repo / ".venv/bin/dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port),
         "-m", EXAMPLE_MODULE, "--location-name", EXAMPLE_LOCATION],
        cwd=repo, log=logs / "code-server.log", env={**env, "DAGSTER_ENV": "local"},
    )  # fmt: skip
    webserver = Process(
        "webserver",
        [str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port), "-w", str(workspace)],
        cwd=dev_dir, log=logs / "webserver.log", env=env,
    )  # fmt: skip
    daemon = Process(
        "daemon",
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
        cwd=dev_dir, log=logs / "daemon.log", env=env,
    )  # fmt: skip
    processes = [code_server, webserver, daemon]
    url = f"http://{host}:{port}"

    watchdog: procs.Watchdog | None = None

    def start(process: Process) -> None:
        stop.check()  # nothing starts once a stop was requested
        process.start(watchdog)

    try:
        stop.check()
        # Stops the groups still registered when this process ends, however it ends (SIGKILL included).
        watchdog = procs.Watchdog(str(dev_dir.resolve()))
        start(code_server)
        start(webserver)
        wait_until(lambda: http_ok(f"{url}/server_info"), [code_server, webserver], 120, "the webserver", stop)
        start(daemon)
        print(f"dev: webserver up at {url} ({time.monotonic() - started:.1f}s)", flush=True)
        wait_until(
            lambda: Client(url).location_state(EXAMPLE_LOCATION)[0] == "LOADED",
            [code_server, webserver, daemon], 120, f"location {EXAMPLE_LOCATION} to load", stop,
        )  # fmt: skip
        print(f"dev: location {EXAMPLE_LOCATION} LOADED ({time.monotonic() - started:.1f}s)", flush=True)
        print(f"dev: Dagster UI on {url} — Ctrl-C stops everything; logs in {logs}", flush=True)
        if until_ready:
            return 0
        while True:
            stop.check()
            for process in processes:
                if process.exited() is not None:
                    raise ComponentFailed(f"{process.name} exited ({process.exited()})")
            time.sleep(0.2)
    except Stopping as exc:
        print(f"dev: {exc} received, stopping", flush=True)
        return 0
    except ComponentFailed as exc:
        print(f"dev: FAILED: {exc}", file=sys.stderr)
        for process in processes:
            if process.popen is not None:
                print(f"--- {process.name} log tail ({process.log}) ---\n{process.tail()}", file=sys.stderr)
        return 1
    finally:
        # Stop signals only set the request, so nothing cuts this short; in reverse order of start.
        for process in reversed(processes):
            process.stop()
        if watchdog is not None:
            watchdog.close()  # not released: it stops any group member that is somehow still there
        stop.restore()


def _dev_command(args) -> int:
    return serve(args.host, args.port, Path(args.dev_dir), until_ready=args.until_ready, env_name=args.env)


def register(subparsers) -> None:
    parser = subparsers.add_parser("dev", help="serve the Dagster UI locally with the example code location")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--dev-dir", default=str(DEV_DIR), help="where the example and the instance live")
    parser.add_argument(
        "--env", default=DEFAULT_ENV, choices=ENVIRONMENTS, help="whose derived dagster.yaml to run (SQLite swap)"
    )
    parser.add_argument("--until-ready", action="store_true", help="exit once everything is LOADED (for tests)")
    parser.set_defaults(func=_dev_command)
