"""Reading /proc: one parser for /proc/<pid>/stat and resident memory, shared by the local stack's
supervisor, its measurements and the bench."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (state, ppid, pgrp, ... ; index = field number - 3), or None when
    there is no such process. The command name (field 2) may hold spaces and parentheses: split after its last ')'."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile, or not ours to read
        return None
    return raw[raw.rindex(")") + 2 :].split()


# Indexes into stat_fields(): state (field 3), ppid (4), process group (5), start time in clock ticks (22).
STATE, PPID, PGRP, START_TICKS = 0, 1, 2, 19


def all_stat_fields() -> dict[int, list[str]]:
    """stat_fields() of every process, by PID."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None:
            table[int(entry)] = fields
    return table


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (VmRSS); 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
