"""Processes as Linux's /proc shows them: every read of /proc for the session manager
(activities/terminal/), the tests and the benchmarks goes through here."""

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


def pids() -> Iterator[int]:
    """The pids in /proc now (each may be gone by the time it is read)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def own_children() -> set[int]:
    return children(os.getpid())


def children(pid: int) -> set[int]:
    """Child pids of `pid` (each of its threads has its own list)."""
    out: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        data = read(f"/proc/{pid}/task/{tid}/children")
        if data:
            out.update(map(int, data.split()))
    return out


def brief(pid: int) -> tuple[bytes, int, int, int] | None:
    """(state, ppid, process group, session) of a process, or None when it is gone."""
    f = stat(pid)
    if f is None:
        return None
    return f[STATE], int(f[PPID]), int(f[PGRP]), int(f[SESSION])


def start_time(pid: int) -> int | None:
    f = stat(pid)
    return None if f is None else int(f[STARTTIME])


def marked(session_id: str, token: str) -> list[int]:
    """Live processes carrying this session's marker and worker token (a /proc scan)."""
    want = {b"SEMO_SESSION_ID": session_id.encode(), b"SEMO_WORKER": token.encode()}
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            env = semo_environ(int(entry))
            if env and all(env.get(k) == v for k, v in want.items()):
                out.append(int(entry))
    return out


def semo_environ(pid: int) -> dict[bytes, bytes]:
    """The SEMO_ variables of a process's environment (empty for a zombie)."""
    data = read(f"/proc/{pid}/environ")
    if b"SEMO_" not in data:
        return {}
    out = {}
    for item in data.split(b"\0"):
        if item.startswith(b"SEMO_"):
            k, _, v = item.partition(b"=")
            out[k] = v
    return out
