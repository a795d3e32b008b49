"""Input limits: how much a prompt, a keystroke batch, an answer and a terminal size may be.

The API's payloads, the session workflow's validators and the client machine (which types the
input) each check them, and they all measure the same way: text in bytes of UTF-8 (lone
surrogates count as their 3 bytes instead of failing). Deterministic (no I/O)."""

from __future__ import annotations

#: the most a prompt or a `text` of keystrokes may carry (bytes of UTF-8)
MAX_PROMPT_BYTES = 256 * 1024
#: named keys in one batch
MAX_KEYS = 64
#: characters of an answer's text (a deny message, a free-form answer)
MAX_ANSWER_TEXT = 10_000
#: the terminal sizes a resize may ask for
MIN_ROWS, MAX_ROWS, MIN_COLS, MAX_COLS = 2, 500, 10, 1000


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def too_large(text: str | None) -> bool:
    """A prompt or keystroke text over `MAX_PROMPT_BYTES`."""
    return text is not None and utf8_size(text) > MAX_PROMPT_BYTES


def size_problem(rows: int, cols: int) -> str | None:
    """Why a terminal cannot be `rows` x `cols`, or None."""
    if MIN_ROWS <= rows <= MAX_ROWS and MIN_COLS <= cols <= MAX_COLS:
        return None
    return (f"terminal size {rows}x{cols} is out of range "
            f"({MIN_ROWS}-{MAX_ROWS} rows, {MIN_COLS}-{MAX_COLS} columns)")
