"""The one process supervisor of the local runtime (`make dev` and `make stack`): start a component, wait
until it is ready, show its log tail, stop it by PID.

Every component runs in its own session (process group), logs to <state_dir>/logs/<name>.log and is
recorded in <state_dir>/state.json with its PID and the kernel's start time of that PID, so `stop` never
signals a recycled PID that now belongs to someone else. Stopping signals the component's whole process
group (run workers and other children included, also after the component itself died): SIGTERM (or its
own stop signal), then SIGKILL after a grace period.

Components started inside owned() belong to the process that starts them: a stop signal (SIGINT, SIGTERM,
SIGHUP) raises KeyboardInterrupt there once (the caller stops what it started; a second signal cannot cut
that short), and a watchdog process stops every registered process group if the owner dies in any other
way, SIGKILL included. Starting a process and recording it happen with the stop signals held back, so no
signal lands between the two. `keep=True` (`stack up`): on success the components are released and outlive
their owner. `keep=False` (`make dev`): they live exactly as long as it does (PR_SET_PDEATHSIG as well).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dagster_platform import procs

# The owner of the components being started (owned()): its watchdog and whether they die with it.
_owner: tuple[procs.Watchdog, bool] | None = None


class ComponentFailed(RuntimeError):
    """A component exited or never became ready; the message carries its log tail."""


@dataclass
class Component:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: identifies this process, not just its PID
    command: list[str]
    log: str
    stop_signal: int = signal.SIGTERM
    info: dict = field(default_factory=dict)


def is_alive(component: Component) -> bool:
    fields = procs.stat_fields(component.pid)
    if fields is None or int(fields[procs.START_TICKS]) != component.start_ticks:
        return False
    if fields[procs.STATE] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(component.pid, os.WNOHANG)  # our own child that already exited: reap it
        return False
    return True


def group_of(component: Component) -> list[int]:
    """Live PIDs of the component's process group, the component's own included while it lives. A PID is
    not reused while a process group of that ID has members, so once the component is gone its group's
    survivors are exactly its own (orphaned run workers); a leader with another start time is a recycled
    PID: nothing of ours."""
    leader_alive = is_alive(component)  # reaps it when it is our exited child
    table = procs.all_stat_fields()
    if component.pid in table and not leader_alive and table[component.pid][procs.STATE] not in ("Z", "X"):
        return []
    return [pid for pid, f in table.items() if int(f[procs.PGRP]) == component.pid and f[procs.STATE] not in ("Z", "X")]


def write_private(path: Path, text: str) -> None:
    """Write a file holding a password or key: mode 0600 from its first byte (a stale file is replaced)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log file)"


def run_once(command: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> float:
    """Run a one-shot step (e.g. `dagster instance migrate`) to completion, appending its output to `log`;
    returns seconds taken. Raises ComponentFailed with the log tail when it fails."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        result = subprocess.run(
            list(command), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=300,
            preexec_fn=procs.child_setup(die_with_parent=True),  # a one-shot step dies with its caller
        )  # fmt: skip
    if result.returncode != 0:
        step = " ".join([Path(command[0]).name, *command[1:]])
        raise ComponentFailed(f"`{step}` failed (exit {result.returncode}); last lines of {log}:\n{log_tail(log)}")
    return time.monotonic() - started


class Supervisor:
    """Owns the state file of one state dir; safe to re-create from the file in another process."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.log_dir = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"
        data = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.meta: dict = data.get("meta", {})
        self.components = {c["name"]: Component(**c) for c in data.get("components", [])}

    def save(self) -> None:
        """state.json holds throwaway passwords and keys: written 0600 from its first byte."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "components": [asdict(c) for c in self.components.values()]}
        tmp = self.state_file.with_suffix(".tmp")
        write_private(tmp, json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        info: dict | None = None,
    ) -> Component:
        existing = self.components.get(name)
        if existing and is_alive(existing):
            raise RuntimeError(f"{name} is already running (pid {existing.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        watchdog, keep = _owner or (None, True)
        with open(log_path, "ab") as log, procs.signals_blocked():  # started ⇒ recorded, whatever arrives
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, user=user,
                preexec_fn=procs.child_setup(die_with_parent=not keep, watchdog=watchdog),
            )  # fmt: skip
            fields = procs.stat_fields(proc.pid)
            self.components[name] = component = Component(
                name, proc.pid, int(fields[procs.START_TICKS]) if fields else 0, list(command), str(log_path),
                int(stop_signal), info or {},
            )  # fmt: skip
            # The Popen object is dropped on purpose: the process may outlive this one, and is_alive() reaps
            # it if it is our child. returncode=0 silences "still running" ResourceWarnings.
            proc.returncode = 0
            self.save()
        return component

    def wait_ready(self, name: str, check: Callable[[], bool], timeout: float, also: Sequence[str] = ()) -> float:
        """Poll `check` until it is true; returns seconds waited. Raises ComponentFailed with the log tail
        when the process (or one of `also`) exits or the timeout passes."""
        started = time.monotonic()
        while True:
            for watched in (name, *also):
                if not self.alive(watched):
                    whom = "it" if watched == name else name
                    raise ComponentFailed(f"{watched} exited before {whom} was ready; {self.tail(watched)}")
            with contextlib.suppress(Exception):  # readiness probes fail in many ways while starting
                if check():
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise ComponentFailed(f"{name} not ready after {timeout:.0f}s; {self.tail(name)}")
            time.sleep(0.2)

    def tail(self, name: str) -> str:
        log = self.components[name].log
        return f"last lines of {log}:\n{log_tail(log)}"

    def alive(self, name: str) -> bool:
        component = self.components.get(name)
        return bool(component and is_alive(component))

    def stop(self, name: str, grace: float = 20.0) -> bool:
        """Stop one component's process group by PID: the component and what it started (run workers, a code
        server's gRPC subprocess), also when the component itself died earlier; returns whether any ran."""
        component = self.components.get(name)
        if component is None or not group_of(component):
            return False
        _killpg(component.pid, component.stop_signal)
        deadline = time.monotonic() + grace
        while group_of(component) and time.monotonic() < deadline:
            time.sleep(0.1)
        _killpg(component.pid, signal.SIGKILL)  # whatever ignored the grace period
        while group_of(component):
            time.sleep(0.05)
        if _owner is not None:
            _owner[0].forget(component.pid)
        return True


def _killpg(pgid: int, sig: int) -> None:
    # A component leads its own session, so its PID is its process-group ID.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def owned(label: str, keep: bool) -> Iterator[None]:
    """Components started inside belong to this process until the block ends (see the module docstring).
    A stop signal raises KeyboardInterrupt("SIGTERM" ...) once; later ones are ignored until the block
    ends, so the caller's own clean-up runs to the end."""
    global _owner
    interrupted: list[int] = []

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        if not interrupted:
            interrupted.append(signum)
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in procs.STOP_SIGNALS}
    watchdog = procs.Watchdog(label)
    _owner = (watchdog, keep)
    try:
        yield
        if keep:
            watchdog.release()
    finally:
        _owner = None
        watchdog.close()  # not released: it stops any group that is somehow still registered
        for sig, handler in previous.items():
            signal.signal(sig, handler)
