"""The terminal screen as a person would see it, rendered with pyte on demand.

Nobody pays for it unless they ask: the API replays the tail of the raw output kept in
Postgres through a pyte screen of the session's size, starting at the last full-screen
clear in that tail when there is one (earlier bytes cannot change what is shown after it).
"""

from __future__ import annotations

import pyte

CLEARS = (b"\x1b[2J", b"\x1b[3J", b"\x1bc", b"\x1b[?1049h", b"\x1b[?1049l")


def replay_start(data: bytes) -> int:
    """Where replay can start: the last full clear of the screen (or the beginning)."""
    return max((data.rfind(c) for c in CLEARS), default=-1) if data else 0


def render(data: bytes, rows: int, cols: int) -> dict:
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    start = replay_start(data)
    stream.feed(data[max(start, 0):])
    return {"lines": [line.rstrip() for line in screen.display],
            "cursor": {"row": screen.cursor.y, "col": screen.cursor.x},
            "rows": rows, "cols": cols}
