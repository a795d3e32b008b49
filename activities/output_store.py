"""Batched persistence of terminal output to `session_output`.

Reads land in memory per session; a single writer task flushes every session's pending
bytes at most every `interval_s`, or as soon as one session has `flush_bytes` waiting, in
one transaction, and NOTIFYs `session_output` so live readers wake. Each session keeps at
most `retention_bytes` of output in the table: older chunks are deleted as new ones land.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

MAX_CHUNK = 256 * 1024


@dataclass
class _Pending:
    start: int = -1
    data: bytearray = field(default_factory=bytearray)
    saved_end: int = 0
    trimmed_to: int = 0


class PgOutputStore:
    def __init__(self, pool: AsyncConnectionPool, *, interval_s: float = 0.1,
                 flush_bytes: int = 64 * 1024, retention_bytes: int = 16 * 1024 * 1024) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.flush_bytes = flush_bytes
        self.retention_bytes = retention_bytes
        self._sessions: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    # --- OutputSink ------------------------------------------------------------------------

    def append(self, session_id: str, start_offset: int, data: bytes) -> None:
        p = self._sessions.get(session_id)
        if p is None:
            p = self._sessions[session_id] = _Pending()
        if not p.data:
            p.start = start_offset
        p.data += data
        self._wake.set()
        if len(p.data) >= self.flush_bytes:
            self._urgent.set()

    def pending(self, session_id: str) -> int:
        p = self._sessions.get(session_id)
        return len(p.data) if p else 0

    async def flush(self, session_id: str | None = None) -> None:
        """Write what is pending now (for one session, or all)."""
        async with self._lock:
            batch = self._take(session_id)
            if batch:
                await self._write(batch)

    def forget(self, session_id: str) -> None:
        p = self._sessions.get(session_id)
        if p is not None and not p.data:
            del self._sessions[session_id]

    # --- the writer ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="output-store")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            try:
                await asyncio.wait_for(self._urgent.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            self._urgent.clear()
            try:
                await self.flush()
            except Exception:  # Postgres away: keep the bytes, try again next round
                log.exception("output flush failed; retrying")
                self._wake.set()
                await asyncio.sleep(1.0)

    def _take(self, only: str | None) -> list[tuple[str, int, bytes]]:
        batch: list[tuple[str, int, bytes]] = []
        items = [(only, self._sessions.get(only))] if only else list(self._sessions.items())
        for sid, p in items:
            if p is None or not p.data:
                continue
            data, start = bytes(p.data), p.start
            p.data = bytearray()
            for i in range(0, len(data), MAX_CHUNK):
                batch.append((sid, start + i, data[i : i + MAX_CHUNK]))
        return batch

    async def _write(self, batch: list[tuple[str, int, bytes]]) -> None:
        rows = [(sid, start, start + len(data), data) for sid, start, data in batch]
        try:
            async with self.pool.connection() as conn, conn.transaction():
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "insert into session_output (session_id, start_offset, end_offset, data)"
                        " values (%s, %s, %s, %s) on conflict do nothing", rows)
                    for sid in {r[0] for r in rows}:
                        p = self._sessions[sid]
                        p.saved_end = max(p.saved_end, max(r[2] for r in rows if r[0] == sid))
                        cutoff = p.saved_end - self.retention_bytes
                        if cutoff > p.trimmed_to + self.retention_bytes // 8:
                            await cur.execute(
                                "delete from session_output where session_id = %s"
                                " and end_offset <= %s", (sid, cutoff))
                            p.trimmed_to = cutoff
                        await cur.execute("select pg_notify('session_output', %s)",
                                          (f"{sid}:{p.saved_end}",))
        except BaseException:
            self._restore(batch)
            raise

    def _restore(self, batch: list[tuple[str, int, bytes]]) -> None:
        """Put an unwritten batch back in front of what arrived since."""
        by_session: dict[str, list[tuple[int, bytes]]] = {}
        for sid, start, data in batch:
            by_session.setdefault(sid, []).append((start, data))
        for sid, parts in by_session.items():
            p = self._sessions[sid]
            head = b"".join(d for _, d in parts)
            p.data = bytearray(head) + p.data
            p.start = parts[0][0]
