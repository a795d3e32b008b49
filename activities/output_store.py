"""Batched persistence of terminal output to `session_output`.

Reads land in memory per session; a single writer task saves every session's pending
bytes at most `interval_s` after they arrive, or as soon as one session has `flush_bytes`
waiting, in one statement (rows of at most `chunk_bytes`, keyed by byte offset) that also
NOTIFYs `session_output` so live readers wake. Each session keeps at most
`retention_bytes` of output in the table: older rows are deleted as new ones land, and
readers see where the kept output starts (`truncated_before`).

Memory is bounded by back-pressure: a session is `congested` when it has more than
`session_cap` unsaved bytes, or all sessions together more than `total_cap`; the
SessionManager then stops reading that terminal until `wait_drained` returns. When Postgres
is away, bytes are kept and retried, and reading stays paused meanwhile.

The writer keeps one pooled connection for itself. It runs with
`synchronous_commit = off`: a Postgres crash can lose the last few hundred milliseconds of
terminal output, never the consistency of the table, and the writer does not wait for a WAL
flush per batch.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

from db import output as output_rows
from semo import hops

log = logging.getLogger(__name__)


class _Session:
    """A session's unsaved output: contiguous segments `[start, bytes]`, oldest first."""

    __slots__ = ("segments", "pending", "end", "saved_end", "trimmed_to", "forgotten")

    def __init__(self, end: int = 0) -> None:
        self.segments: list[list] = []
        self.pending = 0
        self.end = end  # end offset of everything appended
        self.saved_end = end  # end offset of what is stored
        self.trimmed_to = 0
        self.forgotten = False


class PgOutputStore:
    def __init__(self, pool: AsyncConnectionPool, *, interval_s: float = 0.01,
                 flush_bytes: int = 64 * 1024, retention_bytes: int = 16 * 1024 * 1024,
                 chunk_bytes: int = 64 * 1024, session_cap: int = 1024 * 1024,
                 total_cap: int = 32 * 1024 * 1024) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.flush_bytes = flush_bytes
        self.retention_bytes = retention_bytes
        self.chunk_bytes = chunk_bytes
        self.session_cap = session_cap
        self.total_cap = total_cap
        #: the most unsaved bytes held at once (all sessions), for tests and benchmarks
        self.peak_pending = 0
        self._sessions: dict[str, _Session] = {}
        self._total = 0
        self._due = asyncio.Event()  # the writer should write now
        self._timer: asyncio.TimerHandle | None = None  # makes it due, interval_s after a byte
        self._saved = asyncio.Event()  # set (and replaced) after every successful write
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._conn = None  # the writer's own connection, taken from the pool and kept

    # --- OutputSink ------------------------------------------------------------------------

    def append(self, session_id: str, start_offset: int, data: bytes) -> None:
        if not data:
            return
        s = self._sessions.get(session_id)
        if s is None:
            s = self._sessions[session_id] = _Session(start_offset)
        last = s.segments[-1] if s.segments else None
        if last is not None and last[0] + len(last[1]) == start_offset:
            last[1] += data
        else:
            s.segments.append([start_offset, bytearray(data)])
        n = len(data)
        s.pending += n
        s.end = max(s.end, start_offset + n)
        if hops.on(session_id):
            hops.mark("stored", session_id, s.end)
        self._total += n
        if self._total > self.peak_pending:
            self.peak_pending = self._total
        if s.pending >= self.flush_bytes:
            self._due.set()
        elif self._timer is None and not self._due.is_set():
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._due.set)

    def pending(self, session_id: str) -> int:
        s = self._sessions.get(session_id)
        return s.pending if s else 0

    def pending_total(self) -> int:
        return self._total

    def congested(self, session_id: str) -> bool:
        return self.pending(session_id) > self.session_cap or self._total > self.total_cap

    async def wait_drained(self, session_id: str) -> None:
        """Return once the session is well below its cap and the total below three quarters."""
        while self.pending(session_id) > self.session_cap // 2 or \
                self._total > self.total_cap * 3 // 4:
            saved = self._saved
            self._due.set()
            if self._task is None:  # no writer running: write ourselves
                await self.flush()
                continue
            await saved.wait()

    async def end_offset(self, session_id: str) -> int:
        """Where the session's next output goes: after everything appended or stored."""
        s = self._sessions.get(session_id)
        if s is not None:
            s.forgotten = False
            return s.end
        _, end = await output_rows.bounds(self.pool, session_id)
        s = self._sessions.get(session_id)  # appended meanwhile? (not by a new terminal)
        if s is None:
            s = self._sessions[session_id] = _Session(end)
        return s.end

    def forget(self, session_id: str) -> None:
        """The session's terminal is gone: drop its bookkeeping once its bytes are saved."""
        s = self._sessions.get(session_id)
        if s is None:
            return
        if s.pending or self._lock.locked():  # bytes pending or being written
            s.forgotten = True
        else:
            del self._sessions[session_id]

    async def flush(self, session_id: str | None = None) -> None:
        """Write what is pending now (for one session, or all)."""
        async with self._lock:
            batch = self._take(session_id)
            if batch:
                await self._write(batch)

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
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            await self.flush()
        finally:
            await self._release()

    async def _run(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                await self.flush()
            except Exception:  # Postgres away: keep the bytes, try again
                log.exception("output flush failed; retrying")
                await asyncio.sleep(1.0)
                self._due.set()

    def _take(self, only: str | None) -> list[tuple[str, int, bytes]]:
        if only is not None:
            s = self._sessions.get(only)
            items = [(only, s)] if s is not None and s.pending else []
        else:
            items = [(sid, s) for sid, s in self._sessions.items() if s.pending]
        batch: list[tuple[str, int, bytes]] = []
        step = self.chunk_bytes
        for sid, s in items:
            for start, data in s.segments:
                view = memoryview(data)
                for i in range(0, len(data), step):
                    batch.append((sid, start + i, bytes(view[i:i + step])))
                view.release()
            self._total -= s.pending
            s.segments, s.pending = [], 0
            if hops.on(sid):
                hops.mark("batched", sid, s.end)
        return batch

    async def _write(self, batch: list[tuple[str, int, bytes]]) -> None:
        ends: dict[str, int] = {}
        for sid, start, data in batch:
            ends[sid] = max(ends.get(sid, 0), start + len(data))
        try:
            conn = await self._connection()
            await output_rows.save(conn, batch, ends)
            for sid, end in ends.items():
                if hops.on(sid):
                    hops.mark("committed", sid, end)
            for sid, end in ends.items():
                await self._trim(conn, sid, end)
        except BaseException:
            self._restore(batch)
            await self._release()  # a broken connection goes back (the pool replaces it)
            raise
        for sid, end in ends.items():
            s = self._sessions.get(sid)
            if s is not None:
                s.saved_end = max(s.saved_end, end)
                if s.forgotten and not s.pending:
                    del self._sessions[sid]
        self._saved.set()
        self._saved = asyncio.Event()

    async def _connection(self):
        if self._conn is None:
            conn = await self.pool.getconn()
            try:
                await output_rows.prepare_writer(conn)
            except BaseException:
                await self.pool.putconn(conn)
                raise
            self._conn = conn
        return self._conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if not conn.closed and not conn.broken:
                    await output_rows.release_writer(conn)
            except Exception:
                pass  # the pool checks it and replaces it
            try:
                await self.pool.putconn(conn)
            except Exception:
                log.exception("returning the output writer's connection")

    async def _trim(self, conn, session_id: str, end: int) -> None:
        """Retention: keep the last `retention_bytes` (deleting in steps of an eighth)."""
        s = self._sessions.get(session_id)
        cutoff = end - self.retention_bytes
        if s is None or cutoff <= s.trimmed_to + self.retention_bytes // 8:
            return
        await output_rows.trim(conn, session_id, cutoff)
        s.trimmed_to = cutoff

    def _restore(self, batch: list[tuple[str, int, bytes]]) -> None:
        """Put an unwritten batch back in front of what arrived since."""
        by_session: dict[str, list[list]] = {}
        for sid, start, data in batch:
            segs = by_session.setdefault(sid, [])
            if segs and segs[-1][0] + len(segs[-1][1]) == start:
                segs[-1][1] += data
            else:
                segs.append([start, bytearray(data)])
        for sid, segs in by_session.items():
            s = self._sessions.get(sid)
            if s is None:
                s = self._sessions[sid] = _Session(segs[0][0])
            n = sum(len(d) for _, d in segs)
            if segs and s.segments and segs[-1][0] + len(segs[-1][1]) == s.segments[0][0]:
                segs[-1][1] += s.segments.pop(0)[1]
            s.segments = segs + s.segments
            s.pending += n
            self._total += n
