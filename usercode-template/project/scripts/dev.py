"""`make dev`: the Dagster UI with this code location on the platform's instance ($DAGSTER_HOME/dagster.yaml).

Standard library only, run with the repo's own .venv/bin/python; every Dagster process comes from .venv too.
Faster than `dg dev` because each process starts directly and in the order that uses the cores best:
  0. `dagster instance migrate`, once per Dagster version: three processes opening a fresh SQLite instance at
     once race on creating its schema;
  1. the code server (`dagster code-server start`: "Reload" in the UI picks up code changes) and the
     webserver, side by side, the webserver reading a workspace that points at the code server's port;
  2. the daemon (schedules, sensors, run queue) once the webserver answers, so its start-up does not compete
     with theirs.
Nothing outlives it: SIGINT/SIGTERM/SIGHUP only record a stop request (checked before each start and while
waiting), then every process group is stopped (SIGTERM, SIGKILL after 5 s). Each child gets
PR_SET_PDEATHSIG, so a SIGKILL of this runner kills them too, and a small watchdog process stops what they
spawned (their groups).
Logs: $DAGSTER_HOME/dev-logs/<process>.log ($DAGSTER_HOME/logs is Dagster's own and gets moved away).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# prctl(PR_SET_PDEATHSIG) is Linux only; looked up here, never between fork and exec.
PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
PR_SET_PDEATHSIG = 1

# The watchdog (`python -I -c`): reads "+pgid"/"-pgid" lines; at end of file (this runner exited or was
# killed, the kernel closes the pipe either way) it stops the groups still registered.
WATCHDOG = r"""
import os, signal, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups, data = set(), b""
while chunk := os.read(0, 4096):
    data += chunk
for line in data.split():
    (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
def signal_all(sig):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except ProcessLookupError:
            groups.discard(g)
for sig in (signal.SIGTERM, signal.SIGKILL):
    deadline = time.monotonic() + 5
    while groups and time.monotonic() < deadline:
        signal_all(sig)
        time.sleep(0.2)
        signal_all(0)
"""


def say(message: str, err: bool = False) -> None:
    print(f"dev: {message}", file=sys.stderr if err else sys.stdout, flush=True)


class Stop(Exception):  # noqa: N818 - a stop request, not an error
    pass


class Runner:
    def __init__(self, host: str, port: int):
        self.host, self.port, self.url = host, port, f"http://{host}:{port}"
        self.home = Path(os.environ.get("DAGSTER_HOME") or ROOT / ".dagster_home").resolve()
        self.logs = self.home / "dev-logs"
        self.signum: int | None = None
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.watchdog: subprocess.Popen | None = None
        for sig in STOP_SIGNALS:  # from here on a stop signal is a request, never an exception mid-step
            signal.signal(sig, self.request_stop)

    def request_stop(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signum = self.signum or signum

    def check(self) -> None:
        if self.signum is not None:
            raise Stop(signal.Signals(self.signum).name)

    def child_setup(self):
        """preexec_fn: default stop signals, die with this runner, register the new group with the watchdog"""
        parent, fd = os.getpid(), self.watchdog.stdin.fileno() if self.watchdog else None

        def setup() -> None:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            if PRCTL is not None:
                PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the runner died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)
            if fd is not None:
                os.write(fd, f"+{os.getpgid(0)}\n".encode())

        return setup

    def start(self, name: str, argv: list[str], own_group: bool = True) -> subprocess.Popen:
        self.check()  # nothing starts once a stop was requested
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:  # the child keeps its own copy
            # Own session: Ctrl-C reaches only this runner, which then stops every group (a group also
            # holds what the process spawned, e.g. the code server's gRPC subprocess and run workers).
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=own_group,
                env={**os.environ, "DAGSTER_HOME": str(self.home), "DAGSTER_ENV": "local"},
                preexec_fn=self.child_setup(),
            )  # fmt: skip
        if own_group:
            self.children.append((name, proc))
        return proc

    def wait_until(self, condition, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check()
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}); see {self.logs / name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def stop_all(self) -> None:
        """SIGTERM every group at once (a group is the process and what it spawned: the code server's gRPC
        subprocess, run workers), SIGKILL what is left after 5 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for _name, proc in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(proc.poll() is None or group_alive(proc.pid)
                                                      for _name, proc in self.children):  # fmt: skip
                time.sleep(0.05)
        if self.watchdog:  # all stopped here: the watchdog finds nothing left and exits
            with contextlib.suppress(OSError):
                self.watchdog.stdin.write("".join(f"-{proc.pid}\n" for _name, proc in self.children).encode())
            self.watchdog.stdin.close()
            self.watchdog.wait(30)

    def run(self) -> int:
        started = time.monotonic()
        if port_busy(self.host, self.port):
            hint = f"choose another: make dev PORT={self.port + 1}"
            say(f"port {self.port} is already in use on {self.host}; {hint}", err=True)
            return 1
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        location = project["project"]["name"]
        module = project["tool"]["dg"]["project"]["root_module"] + ".definitions"
        try:
            self.migrate()
            self.watchdog = subprocess.Popen(
                [sys.executable, "-I", "-c", WATCHDOG, f"dev-watchdog:{ROOT}"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, bufsize=0,
                start_new_session=True,  # Ctrl-C and hang-up do not reach it
            )  # fmt: skip
            code_port = free_port()
            workspace = self.home / "workspace.yaml"
            workspace.write_text(
                f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {code_port}\n"
                f"      location_name: {location}\n"
            )
            code_server = ["code-server", "start", "-h", "127.0.0.1", "-p", str(code_port), "-m", module]
            self.start("code-server", [str(BIN / "dagster"), *code_server, "--location-name", location])
            say(f"code server starting ({module})")
            webserver = ["-h", self.host, "-p", str(self.port), "-w", str(workspace)]
            self.start("webserver", [str(BIN / "dagster-webserver"), *webserver])
            self.wait_until(lambda: http_ok(f"{self.url}/server_info"), "the webserver")
            say(f"webserver up ({time.monotonic() - started:.1f}s)")
            self.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
            say("daemon starting (schedules, sensors, run queue)")
            self.wait_until(lambda: location_state(self.url, location) != "LOADING", f"location {location}")
            state = location_state(self.url, location)
            say(f"location {location} {state} ({time.monotonic() - started:.1f}s)")
            say(f"Dagster UI on {self.url} — Ctrl-C stops everything; logs in {self.logs}")
            while True:  # serve until a stop request or a process ends
                self.wait_until(lambda: False, "a stop request", timeout=float("inf"))
        except Stop as stop:
            say(f"{stop} received, stopping")
            return 0
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            say(f"FAILED: {exc}; logs in {self.logs}", err=True)
            return 1
        finally:
            self.stop_all()

    def migrate(self) -> None:
        stamp = self.home / f".schema-dagster-{version('dagster')}"
        if stamp.exists():
            return
        say(f"creating/migrating the instance schema in {self.home}")
        # Same process group as this runner: a Ctrl-C in the terminal stops it too.
        code = self.start("migrate", [str(BIN / "dagster"), "instance", "migrate"], own_group=False).wait()
        self.check()
        if code != 0:
            raise RuntimeError(f"`dagster instance migrate` failed (exit {code})")
        stamp.touch()


def port_busy(host: str, port: int) -> bool:
    """The webserver could not bind host:port (bound the way it binds: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


LOCATION_QUERY = """query($n: String!) { workspaceLocationEntryOrError(name: $n) { __typename
  ... on WorkspaceLocationEntry { loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } }"""


def location_state(url: str, location: str) -> str:
    """LOADED, LOADING, or ERROR: <message> (a code error: fix it and press Reload in the UI)."""
    body = json.dumps({"query": LOCATION_QUERY, "variables": {"n": location}}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            entry = json.loads(response.read())["data"]["workspaceLocationEntryOrError"]
    except (OSError, ValueError, KeyError, TypeError):
        return "LOADING"
    if not entry or entry["__typename"] != "WorkspaceLocationEntry" or entry["loadStatus"] != "LOADED":
        return "LOADING"
    loaded = entry["locationOrLoadError"] or {}
    if loaded.get("__typename") == "PythonError":
        if "DagsterUserCodeUnreachableError" in loaded["message"]:  # the code server is still starting
            return "LOADING"
        return f"ERROR: {loaded['message'].strip().splitlines()[-1]} (fix it, then Reload in the UI)"
    return "LOADED" if loaded else "LOADING"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    return Runner(args.host, args.port).run()


if __name__ == "__main__":
    sys.exit(main())
