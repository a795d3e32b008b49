"""Where a session's live output spends its time: a mark at each hop, for benchmarks.

Off unless `SEMO_HOP_TRACE` names a directory (bench/bench_fleet.py sets it for the stack it
starts). Then the sessions listed in `<dir>/sessions` (one id a line, re-read when it changes)
are traced: each process appends `hop session_id end_offset unix_time` lines to
`<dir>/<pid>.hops` when a byte range of theirs passes a hop:

    read       the client worker read it from the PTY
    stored     handed to the output store
    batched    taken into the store's next save
    committed  that save returned (rows committed, NOTIFY sent)
    notified   the API's LISTEN connection heard of it
    ws_read / sse_read   read back from Postgres by an attach WebSocket / an SSE stream
    ws_sent / sse_sent   handed to the viewer's connection

A benchmark maps each frame to its byte offset and takes, per hop, the first mark whose end
reaches past it. Untraced, a hop costs one attribute check.
"""

from __future__ import annotations

import atexit
import os
import time

_CHECK_S = 1.0
_FLUSH_S = 0.5


class _Trace:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.sessions: frozenset[str] = frozenset()
        self._mtime = 0.0
        self._checked = 0.0
        self._lines: list[str] = []
        self._flushed = time.monotonic()

    def on(self, sid: str) -> bool:
        now = time.monotonic()
        if now - self._checked > _CHECK_S:
            self._checked = now
            try:
                st = os.stat(os.path.join(self.dir, "sessions"))
                if st.st_mtime != self._mtime:
                    self._mtime = st.st_mtime
                    with open(os.path.join(self.dir, "sessions")) as f:
                        self.sessions = frozenset(f.read().split())
            except OSError:
                self.sessions = frozenset()
        return sid in self.sessions

    def mark(self, hop: str, sid: str, end: int, at: float | None = None) -> None:
        self._lines.append(f"{hop} {sid} {end} {time.time() if at is None else at:.6f}\n")
        if time.monotonic() - self._flushed > _FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if self._lines:
            lines, self._lines = self._lines, []
            with open(os.path.join(self.dir, f"{os.getpid()}.hops"), "a") as f:
                f.writelines(lines)


_trace = _Trace(os.environ["SEMO_HOP_TRACE"]) if os.environ.get("SEMO_HOP_TRACE") else None
if _trace is not None:
    atexit.register(_trace.flush)


def on(sid: str) -> bool:
    """Whether `sid`'s hops are traced (False, at once, when tracing is off)."""
    return _trace is not None and _trace.on(sid)


def mark(hop: str, sid: str, end: int, at: float | None = None) -> None:
    """`sid`'s output up to `end` passed `hop` (now, or at `at`); call only when `on(sid)`."""
    if _trace is not None:
        _trace.mark(hop, sid, end, at)
