"""A sink that records what a terminal sends to its session."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from activities.client import ClientActivities
from activities.terminal import SessionManager
from semo.settings import Settings


class RecordingSink:
    """OutputSink test double: keeps every append in memory. With `cap`, a session with
    more than `cap` unsaved bytes is congested until the test calls `release()`."""

    def __init__(self, cap: int | None = None) -> None:
        self.chunks: dict[str, list[tuple[int, bytes]]] = {}
        self.unsaved: dict[str, int] = {}
        self.cap = cap
        self.peak_unsaved = 0
        self._released = asyncio.Event()
        if cap is None:
            self._released.set()

    def append(self, session_id: str, start_offset: int, data: bytes) -> None:
        self.chunks.setdefault(session_id, []).append((start_offset, bytes(data)))
        self.unsaved[session_id] = self.unsaved.get(session_id, 0) + len(data)
        self.peak_unsaved = max(self.peak_unsaved, self.unsaved[session_id])

    def pending(self, session_id: str) -> int:
        return self.unsaved.get(session_id, 0)

    def congested(self, session_id: str) -> bool:
        return self.cap is not None and self.pending(session_id) > self.cap

    def watched(self, session_id: str) -> bool:
        return False

    async def wait_drained(self, session_id: str) -> None:
        await self._released.wait()
        self.unsaved[session_id] = 0

    async def flush(self, session_id: str | None = None) -> None:
        if self._released.is_set():
            for sid in [session_id] if session_id else list(self.unsaved):
                self.unsaved[sid] = 0

    async def end_offset(self, session_id: str) -> int:
        parts = self.chunks.get(session_id)
        return parts[-1][0] + len(parts[-1][1]) if parts else 0

    def forget(self, session_id: str) -> None:
        pass

    def release(self) -> None:
        self._released.set()

    def data(self, session_id: str) -> bytes:
        """Everything appended for the session, checking that the offsets are contiguous."""
        out = bytearray()
        for start, data in self.chunks.get(session_id, []):
            assert start == len(out), f"gap or overlap at {start} (have {len(out)})"
            out += data
        return bytes(out)




@contextlib.asynccontextmanager
async def client_activities(tmp_path: Path):
    """A client worker's activities with no Temporal behind them, on a workspace root in
    `tmp_path`, removing worktrees (unless they hold work) and reaping orphans at once."""
    root = (tmp_path / "ws").resolve()
    root.mkdir()
    settings = Settings(home=tmp_path / "home", machine_id="m", workspace_roots=[root],
                        remove_worktrees=True, orphan_grace_s=0)
    manager = SessionManager(settings.profiles, RecordingSink())
    acts = ClientActivities(settings, manager, client=None)  # type: ignore[arg-type]
    try:
        yield acts
    finally:
        await manager.close_all()
        await acts.aclose()
