"""One LISTEN connection per API process that wakes live readers (SSE streams, waits).

The client worker NOTIFYs `session_output` with `{session_id}:{end_offset}` when it saves
output; the session workflow's record activity NOTIFYs `job_events` when a job ends; a
command's result is NOTIFYed on `command_results` with its id (the key woken).

A reader that watches many keys at once (an office's event stream) takes a `Tap`: every
notification, in order, with a flag for when some may have been missed.

A reader that follows a session's output live (the attach WebSocket, the SSE stream) says so
with `viewing(session_id)`: the sessions viewed are NOTIFYed on `session_viewers` at once and
every VIEWERS_EVERY_S while they are, and the client worker saves their output ahead of the
rest of the fleet's (activities/output_store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import psycopg

from db.notify import announce_viewers, listen
from semo import hops

log = logging.getLogger(__name__)

#: how often the sessions viewed are said again (the client worker forgets a session's
#: viewers after its output store's `watched_s`, 15 s)
VIEWERS_EVERY_S = 5.0


class Tap:
    """Every notification (channel, payload) since the last `take`, up to `limit`; past it,
    or across a lost LISTEN connection, `lost` says the reader must read everything again."""

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self._notes: deque[tuple[str, str]] = deque()
        self._lost = False
        self._ready = asyncio.Event()

    def put(self, channel: str, payload: str) -> None:
        if len(self._notes) >= self.limit:
            self._lost = True
        else:
            self._notes.append((channel, payload))
        self._ready.set()

    def lose(self) -> None:
        self._lost = True
        self._ready.set()

    async def take(self, timeout: float) -> tuple[list[tuple[str, str]], bool]:
        """What arrived (waiting up to `timeout` for something), and whether some was lost."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        self._ready.clear()
        notes, lost = list(self._notes), self._lost
        self._notes.clear()
        self._lost = False
        return notes, lost


class LiveNotifier:
    def __init__(self, database_url: str, pool=None) -> None:
        self.database_url = database_url
        self.pool = pool  # where `session_viewers` is NOTIFYed (None: it is not)
        self._conds: dict[str, asyncio.Event] = {}
        self._taps: set[Tap] = set()
        self._task: asyncio.Task | None = None
        self._viewed: dict[str, int] = {}  # session id -> viewers here
        self._new_viewer = asyncio.Event()
        self._announcer: asyncio.Task | None = None

    @contextlib.contextmanager
    def viewing(self, session_id: str):
        """While the block runs, a viewer follows the session's output live."""
        self._viewed[session_id] = self._viewed.get(session_id, 0) + 1
        self._new_viewer.set()
        try:
            yield
        finally:
            left = self._viewed[session_id] - 1
            if left:
                self._viewed[session_id] = left
            else:
                del self._viewed[session_id]

    async def _announce(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_viewer.wait(), VIEWERS_EVERY_S)
            self._new_viewer.clear()
            if self._viewed and self.pool is not None:
                try:
                    await announce_viewers(self.pool, list(self._viewed))
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # the output still comes, in the fleet's batches
                    log.warning("could not announce viewers (%s)", err)

    @contextlib.contextmanager
    def tap(self):
        """A `Tap` of every notification while the block runs."""
        tap = Tap()
        self._taps.add(tap)
        try:
            yield tap
        finally:
            self._taps.discard(tap)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._listen(), name="api-listen")
        self._announcer = loop.create_task(self._announce(), name="api-viewers")

    async def close(self) -> None:
        for task in (self._task, self._announcer):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def listen(self, key: str) -> asyncio.Event:
        """The event the next notification of `key` sets. Take it before reading, then wait
        on it, so that a notification landing in between is not missed."""
        return self._conds.setdefault(key, asyncio.Event())

    async def wait(self, key: str, timeout: float) -> None:
        """Wait until `key` (a session id) is notified, or `timeout` passes."""
        ev = self._conds.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass

    def _wake(self, key: str) -> None:
        ev = self._conds.pop(key, None)
        if ev is not None:
            ev.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True, connect_timeout=10) as conn:
                    await listen(conn, "session_output", "job_events", "session_status",
                                 "command_results")
                    for key in list(self._conds):  # we may have missed some while away
                        self._wake(key)
                    for tap in self._taps:
                        tap.lose()
                    async for note in conn.notifies():
                        for tap in self._taps:
                            tap.put(note.channel, note.payload)
                        if note.channel in ("session_output", "session_status"):
                            sid, _, end = note.payload.partition(":")
                            if hops.on(sid) and note.channel == "session_output":
                                hops.mark("notified", sid, int(end))
                            self._wake(sid)
                        elif note.channel == "command_results":
                            self._wake(note.payload)
                        else:
                            self._wake("jobs")
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("LISTEN connection lost (%s); reconnecting", err)
                await asyncio.sleep(1.0)
