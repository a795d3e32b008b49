"""Batched persistence of terminal output to `session_output`.

Reads land in memory per session; a single writer task saves every session's pending
bytes at most `interval_s` after they arrive, or as soon as one session has `flush_bytes`
waiting, in one statement (rows of at most `chunk_bytes`, keyed by byte offset) that also
NOTIFYs `session_output` so live readers wake. Each session keeps at most
`retention_bytes` of output in the table: older rows are deleted as new ones land, and
readers see where the kept output starts (`truncated_before`); the trims of a batch go in
its statement (one round trip, however many sessions cross their retention step at once).

Sessions someone watches go ahead of the rest. The API NOTIFYs `session_viewers` with a
session's id while a viewer (the attach WebSocket, an SSE stream) follows it, again every few
seconds; for `watched_s` after each such word the session is in the live lane: its bytes are
saved at once, in small statements that hold only watched sessions' bytes, instead of waiting
for (and in) the batch that holds everyone's; and only its own cap pauses its reading, not the
fleet's total. Live saves go out on up to `live_connections` connections of their own, the next
before the previous one's answer is heard (a busy event loop hears it late); their rows may
commit out of order for a moment, which readers already wait out (they stop at a gap). The
fleet's batch and a live save never hold the same session's bytes at once.

Memory is bounded by back-pressure: a session is `congested` when it has more than
`session_cap` unsaved bytes, or all sessions together more than `total_cap`; the
SessionManager then stops reading that terminal until `wait_drained` returns. When Postgres
is away, bytes are kept and retried, and reading stays paused meanwhile.

Each writer keeps its pooled connection (a live one from its first save on). They run with
`synchronous_commit = off`: a Postgres crash can lose the last few hundred milliseconds of
terminal output, never the consistency of the table, and no writer waits for a WAL flush per
save.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from db import notify, output as output_rows
from semo import hops

log = logging.getLogger(__name__)


class _Session:
    """A session's unsaved output: contiguous segments `[start, bytes]`, oldest first."""

    __slots__ = ("segments", "pending", "end", "saved_end", "trimmed_to", "forgotten",
                 "saving", "in_bulk", "watched_until")

    def __init__(self, end: int = 0) -> None:
        self.segments: list[list] = []
        self.pending = 0
        self.end = end  # end offset of everything appended
        self.saved_end = end  # end offset of what is stored
        self.trimmed_to = 0
        self.forgotten = False
        self.saving: list[int] = []  # saves under way with some of its bytes: where they start
        self.in_bulk = False  # one of them is the fleet's batch
        self.watched_until = 0.0  # monotonic: in the live lane until then


class _Lane:
    """One writer: its task, its wake-up, its connection (taken from the pool and kept), and a
    lock so that one save at a time runs on that connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.due = asyncio.Event()
        self.lock = asyncio.Lock()
        self.conn: AsyncConnection | None = None


class PgOutputStore:
    def __init__(self, pool: AsyncConnectionPool, *, interval_s: float = 0.01,
                 flush_bytes: int = 64 * 1024, retention_bytes: int = 16 * 1024 * 1024,
                 chunk_bytes: int = 64 * 1024, session_cap: int = 1024 * 1024,
                 total_cap: int = 32 * 1024 * 1024, watched_s: float = 15.0,
                 live_connections: int = 3) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.flush_bytes = flush_bytes
        self.retention_bytes = retention_bytes
        self.chunk_bytes = chunk_bytes
        self.session_cap = session_cap
        self.total_cap = total_cap
        self.watched_s = watched_s
        #: the most unsaved bytes held at once (all sessions), for tests and benchmarks
        self.peak_pending = 0
        self._sessions: dict[str, _Session] = {}
        self._total = 0
        self._bulk = _Lane("output-store")  # everyone's bytes, in batches
        # watched sessions' bytes, at once: a save goes out while the one before it waits
        # for its answer (which a busy loop hears late), each on a connection of its own
        self._lives = [_Lane(f"output-store-live-{i}") for i in range(live_connections)]
        self._live_due = asyncio.Event()
        self._live_tasks: list[asyncio.Task] = []
        self._due = self._bulk.due  # the bulk writer should write now
        self._timer: asyncio.TimerHandle | None = None  # makes it due, interval_s after a byte
        self._saved = asyncio.Event()  # set (and replaced) after every write that ends
        self._task: asyncio.Task | None = None
        self._listener: asyncio.Task | None = None

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
        if s.watched_until and self._watched(s):
            self._live_due.set()
        elif s.pending >= self.flush_bytes:
            self._due.set()
        elif self._timer is None and not self._due.is_set():
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._due.set)

    def pending(self, session_id: str) -> int:
        s = self._sessions.get(session_id)
        return s.pending if s else 0

    def pending_total(self) -> int:
        return self._total

    def congested(self, session_id: str) -> bool:
        """A watched session is paused by its own cap only: the fleet's backlog is not its."""
        s = self._sessions.get(session_id)
        if s is None:
            return self._total > self.total_cap
        return s.pending > self.session_cap or \
            (self._total > self.total_cap and not self._watched(s))

    async def wait_drained(self, session_id: str) -> None:
        """Return once the session is well below its cap and (unless watched) the total below
        three quarters."""
        while True:
            s = self._sessions.get(session_id)
            if (s.pending if s else 0) <= self.session_cap // 2 and (
                    self._total <= self.total_cap * 3 // 4 or (s and self._watched(s))):
                return
            saved = self._saved
            self._due.set()
            self._live_due.set()
            if self._task is None:  # no writer running: write ourselves
                await self.flush()
                continue
            await saved.wait()

    def watch(self, session_id: str) -> None:
        """Someone watches the session: its output goes in the live lane for `watched_s`."""
        s = self._sessions.get(session_id)
        if s is None:  # a session of another worker, or not started yet: the first byte
            return     # after a new word from the viewer puts it in the lane
        s.watched_until = time.monotonic() + self.watched_s
        if s.pending:
            self._live_due.set()

    def watched(self, session_id: str) -> bool:
        """Whether the session is in the live lane (someone watches it)."""
        s = self._sessions.get(session_id)
        return s is not None and bool(s.watched_until) and self._watched(s)

    def _watched(self, s: _Session) -> bool:
        return s.watched_until > time.monotonic()

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
        if s.pending or s.saving:  # bytes pending or being written
            s.forgotten = True
        else:
            del self._sessions[session_id]

    async def flush(self, session_id: str | None = None) -> None:
        """Write what is pending now (for one session, or all): once it returns, every byte
        appended before the call is saved."""
        while True:
            s = self._sessions.get(session_id) if session_id is not None else None
            if self._writing(session_id):
                await self._saved.wait()  # the save holding some of them ends first (in order)
                continue
            lane = self._lives[0] if s is not None and self._watched(s) else self._bulk
            async with lane.lock:
                if self._writing(session_id):
                    continue  # another save took them while we waited for this one
                batch = self._take(session_id, None, lane)
                if batch:
                    await self._write(lane, batch)
                return

    def _writing(self, session_id: str | None) -> bool:
        """Some of the session's bytes (any session's, for None) are in a save under way."""
        if session_id is None:
            return any(s.saving for s in self._sessions.values())
        s = self._sessions.get(session_id)
        return s is not None and bool(s.saving)

    # --- the writer ----------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=self._bulk.name)
        self._live_tasks = [loop.create_task(self._run_live(lane), name=lane.name)
                            for lane in self._lives]
        self._listener = loop.create_task(self._listen(), name="output-store-viewers")

    async def close(self) -> None:
        for task in (self._task, self._listener, *self._live_tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._listener = None
        self._live_tasks = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            async with self._bulk.lock:
                batch = self._take(None, None, self._bulk)
                if batch:
                    await self._write(self._bulk, batch)
        finally:
            for lane in (self._bulk, *self._lives):
                await self._release(lane)

    async def _run(self) -> None:
        """The fleet's batches: every unwatched session's pending bytes, one save at a time."""
        lane = self._bulk
        while True:
            await lane.due.wait()
            lane.due.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                async with lane.lock:
                    batch = self._take(None, False, lane)
                    if batch:
                        await self._write(lane, batch)
            except Exception:  # Postgres away: keep the bytes, try again
                log.exception("output flush failed; retrying")
                await asyncio.sleep(1.0)
                lane.due.set()

    async def _run_live(self, lane: _Lane) -> None:
        """Watched sessions' bytes, saved as soon as they arrive. Each live connection has a
        task of its own waiting for them: while one waits for its save's answer, the next
        bytes go out on another, in the step that hears of them."""
        while True:
            await self._live_due.wait()
            self._live_due.clear()
            try:
                async with lane.lock:
                    batch = self._take(None, True, lane)
                    if batch:
                        await self._write(lane, batch)
            except Exception:  # Postgres away: the bytes are back in place, tried again
                log.exception("output flush failed; retrying")
                await asyncio.sleep(1.0)
                self._live_due.set()

    async def _listen(self) -> None:
        """Hear which sessions are watched (`session_viewers`), reconnecting when cut off."""
        conninfo = self.pool.conninfo
        if not isinstance(conninfo, str):  # a pool that computes it: no live lane
            return
        while True:
            try:
                async with await notify.connect(conninfo) as conn:
                    await notify.listen(conn, notify.SESSION_VIEWERS)
                    async for note in conn.notifies():
                        self.watch(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("listening for viewers failed (%s); reconnecting", err)
                await asyncio.sleep(1.0)

    def _take(self, only: str | None, live: bool | None,
              lane: _Lane) -> list[tuple[str, int, bytes]]:
        """Take pending bytes for one save on `lane`: of `only`, or of every session watched
        (`live`) or not (None: both). A session whose earlier bytes are being saved is left
        for later, except by a live save when those are in live saves too: its rows may then
        commit out of order for a moment (a reader stops at the gap until the earlier ones
        land; a trim never cuts above an earlier save still under way: see `_trims`)."""
        if only is not None:
            s = self._sessions.get(only)
            items = [(only, s)] if s is not None and s.pending and not s.saving else []
        elif live:
            items = [(sid, s) for sid, s in self._sessions.items()
                     if s.pending and not s.in_bulk and self._watched(s)]
        else:
            items = [(sid, s) for sid, s in self._sessions.items() if s.pending and
                     not s.saving and (live is None or not self._watched(s))]
        batch: list[tuple[str, int, bytes]] = []
        step = self.chunk_bytes
        for sid, s in items:
            for start, data in s.segments:
                view = memoryview(data)
                for i in range(0, len(data), step):
                    batch.append((sid, start + i, bytes(view[i:i + step])))
                view.release()
            self._total -= s.pending
            s.saving.append(s.segments[0][0])
            s.segments, s.pending = [], 0
            s.in_bulk = lane is self._bulk
            if hops.on(sid):
                hops.mark("batched", sid, s.end)
        return batch

    async def _write(self, lane: _Lane, batch: list[tuple[str, int, bytes]]) -> None:
        ends: dict[str, int] = {}
        starts: dict[str, int] = {}
        for sid, start, data in batch:
            ends[sid] = max(ends.get(sid, 0), start + len(data))
            starts.setdefault(sid, start)  # a session's chunks are in order
        trims = self._trims(ends, starts)
        try:
            conn = await self._connection(lane)
            await output_rows.save(conn, batch, ends, trims)
        except BaseException:
            self._restore(batch)
            self._done(starts)
            await self._release(lane)  # a broken connection goes back (the pool replaces it)
            raise
        for sid, end in ends.items():
            if hops.on(sid):
                hops.mark("committed", sid, end)
            s = self._sessions.get(sid)
            if s is not None:
                s.saved_end = max(s.saved_end, end)
                if sid in trims:
                    s.trimmed_to = max(s.trimmed_to, trims[sid])
        self._done(starts)

    def _done(self, starts: dict[str, int]) -> None:
        """A save ended (or failed): its sessions may be taken again; the other lane may
        now take what it had to leave. `starts`: where the save's bytes of each began."""
        again = False
        for sid, start in starts.items():
            s = self._sessions.get(sid)
            if s is None:
                continue
            s.saving.remove(start)
            if not s.saving:
                s.in_bulk = False
            if s.forgotten and not s.pending and not s.saving:
                del self._sessions[sid]
            elif s.pending:
                again = True
        if again:
            self._due.set()
            self._live_due.set()
        self._saved.set()
        self._saved = asyncio.Event()

    async def _connection(self, lane: _Lane):
        if lane.conn is None:
            conn = await self.pool.getconn()
            try:
                await output_rows.prepare_writer(conn)
            except BaseException:
                await self.pool.putconn(conn)
                raise
            lane.conn = conn
        return lane.conn

    async def _release(self, lane: _Lane) -> None:
        conn, lane.conn = lane.conn, None
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

    def _trims(self, ends: dict[str, int], starts: dict[str, int]) -> dict[str, int]:
        """Retention: per session, the cutoff below which rows go (keeping the last
        `retention_bytes`, deleting in steps of an eighth), for those due a trim. Never above
        where another save under way begins: an earlier one's rows, landing after this one,
        would otherwise lie below the cutoff, apart from the rest (a watched session's saves
        overlap all the time, so waiting for one alone could mean never trimming it)."""
        trims = {}
        for sid, end in ends.items():
            s = self._sessions.get(sid)
            if s is None:
                continue
            others = list(s.saving)
            others.remove(starts[sid])
            cutoff = min([end - self.retention_bytes, *others])
            if cutoff > s.trimmed_to + self.retention_bytes // 8:
                trims[sid] = cutoff
        return trims

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
