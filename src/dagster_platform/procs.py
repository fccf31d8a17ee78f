"""Processes: reading /proc (one parser for /proc/<pid>/stat and resident memory, shared by the local stack's
supervisor, its measurements and the bench), and keeping children from outliving their owner (child_setup:
signals, PR_SET_PDEATHSIG; Watchdog: process groups stopped when the owner dies, SIGKILL included)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (state, ppid, pgrp, ... ; index = field number - 3), or None when
    there is no such process. The command name (field 2) may hold spaces and parentheses: split after its last ')'."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile, or not ours to read
        return None
    return raw[raw.rindex(")") + 2 :].split()


# Indexes into stat_fields(): state (field 3), process group (5), start time in clock ticks (22).
STATE, PGRP, START_TICKS = 0, 2, 19


def all_stat_fields() -> dict[int, list[str]]:
    """stat_fields() of every process, by PID."""
    table = {int(entry): stat_fields(int(entry)) for entry in os.listdir("/proc") if entry.isdigit()}
    return {pid: fields for pid, fields in table.items() if fields is not None}


def live_cmdlines() -> dict[int, str]:
    """PID → command line of every live process but this one: no zombies, no kernel threads (no cmdline)."""
    found = {}
    for pid, fields in all_stat_fields().items():
        if pid == os.getpid() or fields[STATE] in ("Z", "X"):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        if cmdline:
            found[pid] = cmdline
    return found


def processes_of(directory: Path, dagster_home: Path) -> dict[int, str]:
    """PID → command line of every live process that belongs to `directory`: its command line or working
    directory is in it, or its environment has DAGSTER_HOME=`dagster_home` (so a code server's gRPC
    subprocess and run workers count). For proving that nothing was left behind."""
    marker, home = str(directory), f"DAGSTER_HOME={dagster_home}".encode()
    found = {}
    for pid, cmdline in live_cmdlines().items():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in cmdline or cwd == marker or cwd.startswith(marker + "/") or home in environ:
            found[pid] = cmdline[:200]
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (VmRSS); 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- Child processes that must not outlive their owner ----------------------------------------------------
# Signals that stop `make dev` / `stack up` (Ctrl-C, kill, a closed terminal).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Loaded once here: the preexec function runs between fork and exec, where loading a library is not safe.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold the stop signals back (they stay pending and are delivered on exit): wrap "start a process and
    record it" so a signal never lands between the two. Children started meanwhile get them unblocked again
    by child_setup(); everything here starts processes from the main thread."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def child_setup(die_with_parent: bool = False, watchdog: Watchdog | None = None) -> Callable[[], None]:
    """A preexec_fn for subprocess.Popen (runs in the child after setsid/setuid, before exec):
    - stop signals unblocked and back to their default action (the parent may hold them blocked or ignored);
    - die_with_parent: SIGKILL when the thread that started it dies, however it dies (PR_SET_PDEATHSIG);
      for processes whose owner is meant to live exactly as long as them (make dev's, one-shot steps);
    - watchdog: the child announces its process group to the watchdog itself, before exec, so even a
      SIGKILL of the owner right after fork cannot leave an unrecorded group behind."""
    parent = os.getpid()
    announce_fd = watchdog.fd if watchdog is not None else None

    def setup() -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if die_with_parent and _LIBC is not None:
            if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
            if os.getppid() != parent:  # the owner died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)
        if announce_fd is not None:
            os.write(announce_fd, f"+{os.getpgid(0)}\n".encode())

    return setup


# The watchdog's own program: stdlib only, run with `python -I -c`. It reads "+<pgid>", "-<pgid>" and
# "release" lines from the owner's pipe. At end of file (the owner exited or was killed: the kernel closes
# the pipe either way) it stops every process group still registered, unless released: SIGTERM, then
# SIGKILL 5 s later. A group is skipped when its ID now belongs to another process (recycled).
_WATCHDOG_PROGRAM = r"""
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
def ticks(pid):
    try:
        raw = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()[19]
def alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
groups, released, buf = {}, False, b""
while True:
    chunk = os.read(0, 4096)
    if not chunk:
        break
    *lines, buf = (buf + chunk).split(b"\n")
    for line in lines:
        if line == b"release":
            released = True
        elif line[:1] == b"+":
            groups[int(line[1:])] = ticks(int(line[1:]))
        elif line[:1] == b"-":
            groups.pop(int(line[1:]), None)
if released:
    sys.exit(0)
targets = [g for g, t in groups.items() if ticks(g) in (None, t)]
for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
    targets = [g for g in targets if alive(g)]
    for g in targets:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(alive(g) for g in targets):
        time.sleep(0.1)
"""


class Watchdog:
    """A small process that outlives its owner on purpose: when the owner ends without release() (a signal,
    an exception, SIGKILL, the OOM killer), it stops every process group registered with it. Children
    register themselves through child_setup(watchdog=...). `label` shows up in its command line (ps)."""

    def __init__(self, label: str):
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG_PROGRAM, f"dagster-platform-watchdog:{label}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            start_new_session=True,  # a terminal's Ctrl-C or hang-up for the owner's group does not reach it
            preexec_fn=child_setup(),
        )
        self.fd = self.process.stdin.fileno()

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the watchdog is gone: nothing left to tell
            os.write(self.fd, f"{line}\n".encode())

    def forget(self, pgid: int) -> None:
        """The owner stopped this group itself."""
        self._send(f"-{pgid}")

    def release(self) -> None:
        """Everything registered may keep running after the owner exits (stack up succeeded)."""
        self._send("release")

    def close(self) -> None:
        """End of the owner's watch: the watchdog acts (or, released, just exits) and is reaped here when it
        is quick; otherwise it finishes on its own."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
