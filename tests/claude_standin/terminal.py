"""Drive the real Claude Code TUI in a real PTY and read its screen the way a person would.

`ClaudeTerminal` spawns the CLI with `ptyprocess.PtyProcess.spawn` (own session,
so its process group is its pid), feeds every byte to a `pyte` screen from a
reader thread (blocking reads never run on the caller's thread), and offers
`submit_prompt()` with the typing sequence measured in docs/claude-code.md:

1. wait for the input box (a `❯` line under a full-width `─` rule, footer not
   showing "esc to interrupt"): bytes sent before the TUI has mounted are
   half-lost (text is kept, the Enter is dropped);
2. send the prompt as one bracketed paste `ESC[200~ … ESC[201~` (multi-line
   safe: newlines inside a paste do not submit);
3. wait until the box shows the text (or `[Pasted text #…]` for a long one);
4. send `\\r`; confirm the box emptied or the turn started, else one more `\\r`.

`answer_permission()` waits PERMISSION_SETTLE_S after a permission dialog is
drawn before pressing a key: keys sent right away are dropped.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyte
from ptyprocess import PtyProcess

ROWS, COLS = 40, 120
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
BUSY_MARK = "esc to interrupt"
PERMISSION_QUESTION = "Do you want to proceed?"
PERMISSION_SETTLE_S = 0.5


def _is_rule(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 20 and set(stripped) == {"─"}


def input_box(lines: list[str]) -> str | None:
    """Text in the TUI's input box (the last `❯` line right under a `─` rule), or None if not shown.

    The box line is `❯` + NO-BREAK SPACE + text; earlier prompts echoed in the
    conversation are `❯` + plain space and are not under a rule.
    """
    for i in range(len(lines) - 1, 0, -1):
        if lines[i].startswith("❯") and _is_rule(lines[i - 1]):
            box = []
            for line in lines[i:]:
                if _is_rule(line):
                    break
                box.append(line)
            first = box[0][1:]
            return "\n".join([first, *box[1:]]).replace("\xa0", " ").strip()
    return None


class ClaudeTerminal:
    """One Claude Code process in a PTY with a rendered screen."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], rows: int = ROWS, cols: int = COLS) -> None:
        self.screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self._lock = threading.Lock()
        self.proc = PtyProcess.spawn(argv, cwd=str(cwd), env=env, dimensions=(rows, cols))
        self._reader = threading.Thread(target=self._read_loop, name="claude-pty-reader", daemon=True)
        self._reader.start()

    # -- output ----------------------------------------------------------------

    def _read_loop(self) -> None:
        while True:
            try:
                data = self.proc.read(65536)
            except (EOFError, OSError, ValueError):
                return
            with self._lock:
                self.raw += data
                self._stream.feed(data)

    def lines(self) -> list[str]:
        with self._lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def is_busy(self) -> bool:
        return BUSY_MARK in self.text()

    def is_ready_for_prompt(self) -> bool:
        lines = self.lines()
        joined = "\n".join(lines)
        return input_box(lines) is not None and BUSY_MARK not in joined and PERMISSION_QUESTION not in joined

    def wait_for(self, predicate: Callable[[str], bool], timeout_s: float, what: str) -> str:
        """Poll the screen until `predicate(screen_text)`; AssertionError with the screen on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.text()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; screen:\n{screen}")
            if not self.proc.isalive():
                raise AssertionError(f"claude exited while waiting for {what}; screen:\n{screen}")
            time.sleep(0.05)

    # -- input -----------------------------------------------------------------

    def write(self, data: str | bytes) -> None:
        self.proc.write(data.encode() if isinstance(data, str) else data)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.is_ready_for_prompt():
            if time.monotonic() > deadline:
                raise AssertionError(f"claude's input box did not appear in {timeout_s}s; screen:\n{self.text()}")
            if not self.proc.isalive():
                raise AssertionError(f"claude exited before its input box appeared; screen:\n{self.text()}")
            time.sleep(0.05)

    def submit_prompt(self, prompt: str, timeout_s: float = 30.0) -> None:
        """Type `prompt` into the input box and press Enter (see the module docstring)."""
        if not prompt.strip():
            raise ValueError("an empty prompt cannot be submitted")
        self.wait_ready(timeout_s)
        self.write(PASTE_START + prompt + PASTE_END)
        probe = " ".join(prompt.strip().splitlines()[0].split())[:30]

        def echoed(_: str) -> bool:
            box = input_box(self.lines()) or ""
            return (probe in " ".join(box.split())) or "[Pasted text" in box

        self.wait_for(echoed, timeout_s, "the pasted prompt to show in the input box")
        self.write("\r")
        for attempt in range(2):
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                box = input_box(self.lines())
                if self.is_busy() or (box is not None and not echoed("")):
                    return
                time.sleep(0.05)
            if attempt == 0:
                self.write("\r")
        raise AssertionError(f"the prompt was not submitted; screen:\n{self.text()}")

    def answer_permission(self, key: str = "1", timeout_s: float = 30.0) -> None:
        """Answer the permission dialog on screen ("1" = Yes, Enter = the highlighted default).

        2.1.330 drops keys that arrive within ~0.1 s of the dialog being drawn
        (measured: a key at 0-0.1 s was lost, at >= 0.15 s always taken), so
        wait PERMISSION_SETTLE_S after its last line ("Esc to cancel") shows,
        press once, and press again only if the same dialog is still up.
        """
        self.wait_for(lambda s: PERMISSION_QUESTION in s and "Esc to cancel" in s, timeout_s, "a permission dialog")
        for _ in range(2):
            time.sleep(PERMISSION_SETTLE_S)
            self.write(key)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                if PERMISSION_QUESTION not in self.text():
                    return
                time.sleep(0.05)
        raise AssertionError(f"the permission dialog did not take {key!r}; screen:\n{self.text()}")

    # -- shutdown --------------------------------------------------------------

    def terminate(self, timeout_s: float = 5.0) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL) and close the PTY."""
        pid = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout_s
            while self.proc.isalive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.proc.isalive():
                break
        try:
            os.killpg(pid, signal.SIGKILL)  # children the CLI left behind (tool shells)
        except ProcessLookupError:
            pass
        self.proc.close(force=True)
        self._reader.join(timeout=5)
