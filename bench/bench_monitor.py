"""How fast the OutputMonitor scans agent output: `python -m bench.bench_monitor`.

Feeds ~20 MB of synthetic, escape-heavy Claude-Code-like output (frame repaints with
erase/cursor-up sequences, words placed with cursor-to-column as Claude Code 2.x does,
24-bit colour, box drawing, spinners, tool output, hyperlinks, an occasional prompt, PR URL
and marker) and prints a JSON dict whose `monitor_mb_s` is the best-of-3 throughput in MB/s
(10^6 bytes) of `OutputMonitor.feed`, fed as the SessionManager feeds it under a flood: in
batches of `PROCESS_BYTES` (128 KiB; it gathers a terminal's reads for up to 4 ms). For
comparison, `monitor_4k_mb_s` feeds it every single PTY-sized read (4 KiB) instead.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from activities.monitor import OutputMonitor, PatternSet, strip_terminal_escapes
from activities.terminal import PROCESS_BYTES

_WORDS = ("the function returns a value when error handling is done and tests pass for "
          "module config parser session worker request response retry timeout update "
          "question what why how file line code review change diff").split()


def _colour(rng: random.Random, text: str) -> str:
    r, g, b = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    return f"\x1b[38;2;{r};{g};{b}m{text}\x1b[39m"


def _prose(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    out = []
    for w in words:
        roll = rng.random()
        if roll < 0.15:
            w = f"\x1b[1m{w}\x1b[22m"
        elif roll < 0.25:
            w = _colour(rng, w)
        elif roll < 0.28:
            w += "?"
        out.append(w)
    if rng.random() < 0.5:
        return " ".join(out)
    # Claude Code 2.x moves the cursor to the next word's column instead of writing a space
    col, parts = 3, []
    for w in out:
        parts.append(f"\x1b[{col}G{w}")
        col += len(w) + 1
    return "".join(parts)


def _frame(rng: random.Random, lines_before: int) -> str:
    """One Ink repaint: erase the previous dynamic frame, write static output, redraw."""
    parts = ["\x1b[2K\x1b[1A" * lines_before, "\x1b[2K\x1b[G"]
    for _ in range(rng.randrange(1, 4)):
        kind = rng.random()
        if kind < 0.5:
            text = _prose(rng, rng.randrange(8, 30))
            parts.append(f"\x1b[38;2;255;255;255m●\x1b[39m {text}\r\r\n")
            for _ in range(rng.randrange(0, 4)):
                parts.append(f"  {_prose(rng, rng.randrange(8, 20))}\r\n")
        elif kind < 0.8:
            bullet = _colour(rng, "●")
            parts.append(f"{bullet} \x1b[1mBash\x1b[22m(npm test -- --grep parser)\r\n")
            for i in range(rng.randrange(1, 6)):
                lead = "  ⎿  " if i == 0 else "     "
                parts.append(f"{lead}\x1b[2m{_prose(rng, rng.randrange(4, 12))}\x1b[22m\r\n")
        elif kind < 0.95:
            parts.append(f"\x1b]8;;file:///src/mod{rng.randrange(99)}.py\x07src/mod.py"
                         f"\x1b]8;;\x07 \x1b[32m+{rng.randrange(50)}\x1b[39m "
                         f"\x1b[31m-{rng.randrange(50)}\x1b[39m\r\n")
        else:
            parts.append("\x1b[31mError:\x1b[39m the test failed, retrying with a fix\r\n")
    spinner = rng.choice("✻✽✶✳✢·")
    parts.append(f"\r\n{_colour(rng, spinner)} \x1b[38;5;174mThinking…\x1b[39m "
                 f"\x1b[2m({rng.randrange(99)}s · ↑ {rng.randrange(9)}.{rng.randrange(9)}k "
                 "tokens · esc to interrupt)\x1b[22m\r\n")
    width = 100
    parts.append("\x1b[2m╭" + "─" * (width - 2) + "╮\x1b[22m\r\n")
    parts.append("\x1b[2m│\x1b[22m > \x1b[7m \x1b[27m" + " " * (width - 6)
                 + "\x1b[2m│\x1b[22m\r\n")
    parts.append("\x1b[2m╰" + "─" * (width - 2) + "╯\x1b[22m\r\n")
    parts.append("  \x1b[2m? for shortcuts\x1b[22m")
    return "".join(parts)


def make_stream(size: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    chunks: list[bytes] = []
    total = 0
    n = 0
    while total < size:
        n += 1
        piece = _frame(rng, 5)
        if n % 997 == 0:
            piece += ("\r\n\x1b[3GDo\x1b[6Gyou\x1b[10Gwant\x1b[15Gto\x1b[18Gproceed?\r\r\n"
                      "\x1b[3G\x1b[38;5;153m❯\x1b[5G1.\x1b[8GYes\x1b[39m\r\r\n")
        if n % 1499 == 0:
            piece += f"\r\n● Opened https://github.com/acme/app/pull/{n}\r\r\n"
        b = piece.encode()
        chunks.append(b)
        total += len(b)
    chunks.append("\r\n\x1b[38;5;231m●\x1b[3G\x1b[39mDone.\x1b[K\r\x1b[2B  [SEMO:DONE]\x1b[K\r\n"
                  .encode())
    return b"".join(chunks)


def scan_rate(stream: bytes, chunk: int, repeat: int) -> tuple[float, int]:
    """(best MB/s, events) of a fresh monitor fed `stream` in pieces of `chunk` bytes."""
    best = float("inf")
    events = 0
    for _ in range(repeat):
        mon = OutputMonitor(PatternSet.for_agent("claude"))
        pieces = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
        t0 = time.perf_counter()
        n = 0
        for piece in pieces:
            n += len(mon.feed(piece))
        best = min(best, time.perf_counter() - t0)
        events = n
    return len(stream) / best / 1e6, events


def run(size: int = 20_000_000, chunk: int = PROCESS_BYTES, repeat: int = 3) -> dict:
    stream = make_stream(size)
    rate, events = scan_rate(stream, chunk, repeat)
    rate_4k, events_4k = scan_rate(stream, 4096, repeat)
    assert events == events_4k, "the chunking changed the events"
    return {"monitor_mb_s": round(rate, 1), "monitor_4k_mb_s": round(rate_4k, 1),
            "mb": round(len(stream) / 1e6, 1), "chunk_bytes": chunk, "events": events,
            "non_text_pct": round(100 * _escape_bytes(stream) / len(stream), 1)}


def _escape_bytes(stream: bytes) -> int:
    """Roughly: the bytes that are not text (escape sequences, CR)."""
    return len(stream) - len(strip_terminal_escapes(stream).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--chunk", type=int, default=PROCESS_BYTES, help="bytes per feed() call")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps(run(int(args.mb * 1e6), args.chunk, args.repeat)))


if __name__ == "__main__":
    main()
