"""Processes as Linux's /proc shows them: one parser of `/proc/<pid>/stat` for the session
manager, the tests and the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Iterator

#: indexes into `stat(pid)` (proc(5) numbering minus 3: the pid and the command are cut off)
STATE, PPID, PGRP, SESSION, UTIME, STIME, STARTTIME = 0, 1, 2, 3, 11, 12, 19


def stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (the state first), or None
    when the process is gone. The name may hold spaces and parentheses: it is cut at the
    last ")"."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def environ(pid: int) -> list[bytes]:
    """A process's environment as `KEY=value` items (empty when gone, or for a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def processes() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, stat fields) of every process still there when it is read."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat(int(entry))) is not None:
            yield int(entry), fields
