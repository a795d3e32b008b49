"""Processes on this machine, as a test looks for them."""

from __future__ import annotations

from semo import procfs


def live_pids_with_env(key: str, value: str) -> list[int]:
    """Processes on this machine whose environment has key=value (agents carry SEMO_SESSION_ID)."""
    needle = f"{key}={value}".encode()
    return [pid for pid, f in procfs.processes()
            if f[procfs.STATE] != b"Z" and needle in procfs.environ(pid)]


