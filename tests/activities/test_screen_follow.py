"""The Claude screen follower (activities/claude/follow.py): exact while output is slow,
no parsing while an agent draws fast, and caught up once it slows down. Its clock is an
argument, so these tests step time instead of waiting."""

from __future__ import annotations

import pyte
import pytest

from activities.claude import follow
from activities.claude.follow import CATCH_UP_BYTES, FOLLOW_BPS, FollowedScreen

ROWS, COLS = 10, 40


class Stream:
    """A terminal's output as the manager keeps it: everything, or only its last `keep` bytes."""

    def __init__(self, keep: int | None = None) -> None:
        self.data = bytearray()
        self.keep = keep

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    @property
    def end(self) -> int:
        return len(self.data)

    def read(self, since: int) -> tuple[int, bytes]:
        first = 0 if self.keep is None else max(0, self.end - self.keep)
        start = max(since, first)
        return start, bytes(self.data[start:])


def frame(n: int) -> bytes:
    """A full repaint (cursor home, every row, cleared to its end), ~1 KB."""
    rows = [f"\x1b[{r + 1};1H\x1b[38;5;{(n + r) % 200 + 16}mrow {r} of frame {n:06d}\x1b[0m\x1b[K"
            for r in range(ROWS - 1)]
    return ("\x1b[H" + "".join(rows) + f"\x1b[{ROWS};1H> box {n}\x1b[K").encode()


def exact(data: bytes) -> list[str]:
    screen = pyte.Screen(COLS, ROWS)
    pyte.Stream(screen).feed(data.decode())  # not ByteStream: `feeds` counts the follower's
    return [line.rstrip() for line in screen.display]


@pytest.fixture
def feeds(monkeypatch) -> list[int]:
    """Bytes handed to pyte, call by call."""
    fed: list[int] = []
    feed = pyte.ByteStream.feed
    monkeypatch.setattr(pyte.ByteStream, "feed", lambda self, data: fed.append(len(data))
                        or feed(self, data))
    return fed


async def test_slow_output_is_followed_byte_for_byte(feeds) -> None:
    stream, view = Stream(), FollowedScreen(COLS, ROWS)
    now = 0.0
    for n in range(30):  # ~1 KB every half second: 2 KB/s
        stream.write(frame(n)[: 500] if n % 3 == 0 else frame(n))
        now += 0.5
        assert await view.follow(stream.read, stream.end, now)
        assert view.lines() == exact(bytes(stream.data))
    assert sum(feeds) == stream.end and not view.behind and view.redraws == 0


async def test_fast_output_is_not_parsed_until_it_slows_down(feeds) -> None:
    stream, view = Stream(), FollowedScreen(COLS, ROWS)
    stream.write(frame(0))
    assert await view.follow(stream.read, stream.end, 0.0)
    now, n = 0.0, 0
    fed_in_first_window = None
    while now < 3.0:  # 40 frames a second: ~40 KB/s, over FOLLOW_BPS
        n += 1
        stream.write(frame(n))
        now += 0.025
        changed = await view.follow(stream.read, stream.end, now)
        if now >= follow.RATE_WINDOW_S:
            assert not changed
            fed_in_first_window = fed_in_first_window or sum(feeds)
    assert n * len(frame(n)) > 2 * FOLLOW_BPS
    # until the window has seen the rate, it follows (at most FOLLOW_BPS' worth); then nothing
    assert fed_in_first_window <= FOLLOW_BPS + len(frame(0))
    assert sum(feeds) == fed_in_first_window, "nothing parsed while it draws fast"
    assert view.behind and "frame 000000" not in view.lines()[0]
    assert view.lines() != exact(bytes(stream.data))

    # it rests: the next look after the rate window catches up, exactly (what it missed
    # is under CATCH_UP_BYTES)
    assert stream.end - view.fed <= CATCH_UP_BYTES
    now += follow.RATE_WINDOW_S + 0.01
    assert await view.follow(stream.read, stream.end, now)
    assert view.lines() == exact(bytes(stream.data)) and not view.behind
    assert view.redraws == 0


async def test_far_behind_it_redraws_from_the_last_bytes(feeds) -> None:
    stream, view = Stream(keep=256 * 1024), FollowedScreen(COLS, ROWS)
    stream.write(frame(0))
    await view.follow(stream.read, stream.end, 0.0)
    now, n = 0.0, 0
    while stream.end - view.fed <= 4 * CATCH_UP_BYTES:
        n += 1
        stream.write(frame(n))
        now += 0.01
        await view.follow(stream.read, stream.end, now)
    fed_before = sum(feeds)
    now += follow.RATE_WINDOW_S + 0.01
    assert await view.follow(stream.read, stream.end, now)
    assert view.lines() == exact(frame(n)), "the last full repaint is what it shows"
    assert view.redraws == 1
    assert sum(feeds) - fed_before <= follow.REPLAY_BYTES
    assert max(feeds) <= follow.CHUNK_BYTES, "fed in chunks, the loop yielded between them"


async def test_start_up_is_followed_exactly_at_any_rate(feeds) -> None:
    stream, view = Stream(), FollowedScreen(COLS, ROWS)
    now = 0.0
    for n in range(100):
        stream.write(frame(n))
        now += 0.01
        assert await view.follow(stream.read, stream.end, now, exact=True)
    assert view.lines() == exact(bytes(stream.data)) and sum(feeds) == stream.end


async def test_bytes_gone_from_the_tail_are_said_and_not_guessed(feeds) -> None:
    """A screen fed slowly that lost bytes (the tail keeps only so much) starts again from
    what is kept, instead of parsing the rest on top of a screen that missed a part."""
    stream, view = Stream(keep=4096), FollowedScreen(COLS, ROWS)
    stream.write(b"\x1b[2Jstale text that was overwritten")
    for n in range(20):
        stream.write(frame(n))
    assert await view.follow(stream.read, stream.end, 100.0, exact=True)
    assert view.redraws == 1
    assert view.lines() == exact(bytes(stream.data[-4096:]))
    assert "stale" not in "\n".join(view.lines())
