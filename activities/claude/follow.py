"""The screen of one Claude Code terminal, followed at a cost bounded per session.

Parsing a terminal stream in Python (pyte) costs ~2 ms per KB. What the screen is read for
(the input box, a dialog asking something) is drawn by a TUI that is waiting, and a waiting
TUI draws little: Claude Code 2.1.330 writes ~6 KB over a whole turn, spinner included. So:

- while the output comes slower than FOLLOW_BPS, the screen follows every byte (exact);
- an agent drawing faster than that is not asking anything; its screen is left behind (no
  parsing at all) until the output slows down again, then caught up: exactly from what it
  missed when that is at most CATCH_UP_BYTES, else redrawn from the last REPLAY_BYTES
  (a full-screen TUI repaints within them; one that draws by differences is approximate
  until its next repaint, which is what `/screen` in the API shows as well);
- start-up is always followed exactly (`exact=True`): that is when dialogs come;
- a decision taken from the screen (typing a prompt, answering a dialog) brings it up to
  date first, whatever the rate (`rested=True`, ClaudeDriver._refresh).

Catching up feeds CHUNK_BYTES at a time and yields between chunks, so other sessions' reads
never wait behind one screen. Rows are rendered to text once each time they change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import pyte
from wcwidth import wcwidth

log = logging.getLogger(__name__)

#: output faster than this (bytes a second, over the last RATE_WINDOW_S) is not followed
FOLLOW_BPS = 8 * 1024
RATE_WINDOW_S = 1.0
#: what a screen that fell behind catches up on exactly; more is redrawn from the last
#: REPLAY_BYTES instead
CATCH_UP_BYTES = 64 * 1024
REPLAY_BYTES = 32 * 1024
#: bytes fed between two yields to the event loop (~15 ms of pyte)
CHUNK_BYTES = 8 * 1024

#: read(since) -> (start offset, bytes from there to the end of what is kept)
ReadFn = Callable[[int], tuple[int, bytes]]


class FollowedScreen:
    """A pyte screen of one terminal's output, and its rows as text."""

    def __init__(self, cols: int, rows: int) -> None:
        self.screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        #: stream offset just after the last byte fed
        self.fed = 0
        #: left behind a fast-drawing agent (nothing fed since)
        self.behind = False
        #: times the screen was redrawn from a suffix of its output (it had fallen far behind)
        self.redraws = 0
        self._rows: list[str] = [""] * rows
        #: (time, stream end) as seen by follow(), over the last RATE_WINDOW_S
        self._seen: deque[tuple[float, int]] = deque()
        #: one feeder at a time (the watcher, and a decision that wants the screen now)
        self._feeding = asyncio.Lock()

    def resize(self, rows: int, cols: int) -> None:
        if (self.screen.lines, self.screen.columns) != (rows, cols):
            self.screen.resize(rows, cols)
            self._rows = [""] * rows
            self.screen.dirty.update(range(rows))

    def lines(self) -> list[str]:
        """The screen as text rows (trailing blanks stripped); changed rows are rendered anew."""
        dirty = self.screen.dirty
        if dirty:
            buffer, columns = self.screen.buffer, self.screen.columns
            for y in dirty:
                if y < len(self._rows):
                    self._rows[y] = _render(buffer[y], columns)
            dirty.clear()
        return self._rows

    def _sample_rate(self, end: int, now: float) -> float:
        """Record (now, end); the bytes a second that came over the last RATE_WINDOW_S."""
        seen = self._seen
        seen.append((now, end))
        while len(seen) > 1 and seen[1][0] <= now - RATE_WINDOW_S:
            seen.popleft()
        return (end - seen[0][1]) / RATE_WINDOW_S

    async def follow(self, read: ReadFn, end: int, now: float, *, exact: bool = False,
                     rested: bool = False) -> bool:
        """Bring the screen up to stream offset `end` when it is worth it now (see the module
        docstring); `exact`: whatever the rate, every byte; `rested`: whatever the rate (the
        output has ended), as it would catch up. True when it changed."""
        if self._sample_rate(end, now) > FOLLOW_BPS and not (exact or rested):
            self.behind = self.behind or end > self.fed
            return False
        if end <= self.fed:
            return False
        async with self._feeding:
            return await self._catch_up(read, end, exact)

    async def _catch_up(self, read: ReadFn, end: int, exact: bool) -> bool:
        if end <= self.fed:  # another feeder got there first
            return False
        since = self.fed
        if self.behind and not exact and end - self.fed > CATCH_UP_BYTES:
            since = end - REPLAY_BYTES
        start, data = read(since)
        if start > self.fed:  # bytes it never saw: what it shows now starts from a suffix
            self._restart()
            if since == self.fed:  # gone before it read them (the tail keeps only so much)
                start, data = read(max(start, end - REPLAY_BYTES))
            log.debug("screen redrawn from offset %d (%d bytes not parsed)", start,
                      start - self.fed)
        self.behind = False
        for i in range(0, len(data), CHUNK_BYTES):
            if i:
                await asyncio.sleep(0)
            self._stream.feed(data[i:i + CHUNK_BYTES])
        self.fed = start + len(data)
        return bool(data)

    def _restart(self) -> None:
        self.redraws += 1
        self.screen.reset()
        self._stream = pyte.ByteStream(self.screen)  # a parser state of its own, not mid-sequence
        self.screen.dirty.update(range(self.screen.lines))


def _render(line: pyte.screens.StaticDefaultDict, columns: int) -> str:
    """One row as text, as pyte's `Screen.display` renders it (a wide character's stub
    cell skipped), trailing blanks stripped."""
    out = []
    wide = False
    for x in range(columns):
        if wide:
            wide = False
            continue
        char = line[x].data
        wide = bool(char) and wcwidth(char[0]) == 2
        out.append(char)
    return "".join(out).rstrip()
