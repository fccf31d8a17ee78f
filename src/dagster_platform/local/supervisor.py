"""Start processes, wait until they are ready, show their log tail, stop them by PID.

Every component runs in its own session (process group), logs to <state_dir>/logs/<name>.log and is
recorded in <state_dir>/state.json with its PID and the kernel's start time of that PID, so `stop` never
signals a recycled PID that now belongs to someone else. Stopping signals the component's whole process
group (run workers and other children included): SIGTERM (or the component's own stop signal), then
SIGKILL after a grace period.

Components are meant to outlive `stack up` (it returns once they are ready), but not a `stack up` that never
finished: inside held_until_ready() a watchdog process stops every component started meanwhile if `stack
up` dies before the end of start-up, however it dies (SIGKILL included); SIGTERM and SIGHUP stop it like
Ctrl-C. Starting a process and recording it in state.json happen with the stop signals held back, so a
signal never lands between the two.
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

# The watchdog of a `stack up` in progress (held_until_ready); None otherwise.
_watchdog: procs.Watchdog | None = None


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


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start_ticks) of a PID, or None when there is no such process."""
    fields = procs.stat_fields(pid)
    return None if fields is None else (fields[procs.STATE], int(fields[procs.START_TICKS]))


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(component: Component) -> bool:
    stat = _proc_stat(component.pid)
    if stat is None or stat[1] != component.start_ticks:
        return False
    if stat[0] in ("Z", "X"):
        _reap(component.pid)  # our own child that already exited
        return False
    return True


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


def run_once(
    command: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None, timeout: float = 300
) -> float:
    """Run a one-shot step (e.g. `dagster instance migrate`) to completion, appending its output to `log`;
    returns seconds taken. Raises ComponentFailed with the log tail when it fails."""
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        result = subprocess.run(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            preexec_fn=procs.child_setup(die_with_parent=True),  # a one-shot step dies with its caller
        )
    if result.returncode != 0:
        step = " ".join(Path(command[0]).name if i == 0 else arg for i, arg in enumerate(command))
        raise ComponentFailed(f"`{step}` failed (exit {result.returncode}); last lines of {log}:\n{log_tail(log)}")
    return time.monotonic() - started


class Supervisor:
    """Owns the state file of one stack; safe to re-create from the file in another process."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.log_dir = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"
        self.components: dict[str, Component] = {}
        self.meta: dict = {}
        if self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            self.meta = data.get("meta", {})
            self.components = {c["name"]: Component(**c) for c in data.get("components", [])}

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "components": [asdict(c) for c in self.components.values()]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
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
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(command)}\n".encode())
            log.flush()
            with procs.signals_blocked():  # started ⇒ recorded, whatever signal arrives meanwhile
                proc = subprocess.Popen(
                    list(command),
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    user=user,
                    # No PR_SET_PDEATHSIG: components outlive `stack up` by design; the watchdog covers start-up.
                    preexec_fn=procs.child_setup(watchdog=_watchdog),
                )
                stat = _proc_stat(proc.pid)
                component = Component(
                    name=name,
                    pid=proc.pid,
                    start_ticks=stat[1] if stat else 0,
                    command=list(command),
                    log=str(log_path),
                    stop_signal=int(stop_signal),
                    info=info or {},
                )
                # The Popen object is dropped on purpose: the process outlives this one (stack up returns),
                # and is_alive() reaps it if it is our child.
                proc.returncode = 0  # silence "subprocess still running" ResourceWarning on garbage collection
                self.components[name] = component
                self.save()
        return component

    def wait_ready(self, name: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
        """Poll `check` until it is true; returns seconds waited. Raises ComponentFailed with the log tail
        when the process exits or the timeout passes."""
        component = self.components[name]
        started = time.monotonic()
        while True:
            if not is_alive(component):
                raise ComponentFailed(
                    f"{name} exited before it was ready; last lines of {component.log}:\n{log_tail(component.log)}"
                )
            try:
                if check():
                    return time.monotonic() - started
            except Exception:  # noqa: BLE001 - readiness probes fail in many ways while starting
                pass
            if time.monotonic() - started > timeout:
                raise ComponentFailed(
                    f"{name} not ready after {timeout:.0f}s; last lines of {component.log}:\n{log_tail(component.log)}"
                )
            time.sleep(interval)

    def alive(self, name: str) -> bool:
        component = self.components.get(name)
        return bool(component and is_alive(component))

    def stop(self, name: str, grace: float = 20.0, sig: int | None = None) -> bool:
        """Stop one component (its process group) by PID; returns whether it was running."""
        component = self.components.get(name)
        if component is None or not is_alive(component):
            return False
        self._signal(component, component.stop_signal if sig is None else sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not is_alive(component):
                break
            time.sleep(0.2)
        else:
            self._signal(component, signal.SIGKILL)
            while is_alive(component):
                time.sleep(0.1)
        self._kill_leftover_group(component)
        if _watchdog is not None:
            _watchdog.forget(component.pid)
        return True

    def kill(self, name: str, group: bool = True) -> None:
        """SIGKILL without grace (fault injection); group=False kills only the component's own PID and
        leaves its children (e.g. runs in flight) alone, like a crashed container."""
        component = self.components[name]
        if group:
            self._signal(component, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(component.pid, signal.SIGKILL)
        while is_alive(component):
            time.sleep(0.05)

    def _signal(self, component: Component, sig: int) -> None:
        # The component leads its own session, so its PID is its process-group ID.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.pid, sig)

    def _kill_leftover_group(self, component: Component) -> None:
        """Children that ignored the leader's shutdown (e.g. orphaned run workers) go too."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.pid, signal.SIGKILL)

    def stop_all(self, order: Sequence[str] | None = None) -> list[str]:
        names = list(order) if order else list(reversed(list(self.components)))
        names += [n for n in reversed(list(self.components)) if n not in names]
        stopped = [name for name in names if self.stop(name)]
        return stopped

    def pids(self) -> dict[str, int]:
        return {name: c.pid for name, c in self.components.items() if is_alive(c)}


@contextlib.contextmanager
def held_until_ready(label: str) -> Iterator[None]:
    """Around `stack up`: components started inside are stopped if this process ends before the block
    completes normally: SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C (so up() stops what it
    started), and a watchdog process stops the rest even when this one is SIGKILLed or its clean-up is cut
    short. When the block completes, the components are released: they keep running after we exit."""
    global _watchdog
    interrupted: list[int] = []

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        if not interrupted:  # only once: a second signal must not cut up()'s own clean-up short
            interrupted.append(signum)
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in procs.STOP_SIGNALS}
    watchdog = procs.Watchdog(label)
    _watchdog = watchdog
    try:
        yield
        watchdog.release()
    finally:
        _watchdog = None
        watchdog.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
