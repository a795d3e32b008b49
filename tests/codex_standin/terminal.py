"""The real Codex CLI in a real PTY, its screen read the way a person would (pyte), for the
tests that pin what docs/codex.md says Codex does. No semo code: what semo relies on."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyte
from ptyprocess import PtyProcess

ROWS, COLS = 40, 120
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


class CodexTerminal:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self._stream = pyte.ByteStream(self.screen)
        self._lock = threading.Lock()
        self.proc = PtyProcess.spawn(argv, cwd=str(cwd), env=env, dimensions=(ROWS, COLS))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.proc.read(65536)
            except EOFError:
                return
            with self._lock:
                self._stream.feed(data)

    def lines(self) -> list[str]:
        with self._lock:
            return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(line for line in self.lines() if line.strip())

    def wait_for(self, predicate: Callable[[str], object], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.text()):
            if time.monotonic() > deadline or not self.proc.isalive():
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()}")
            time.sleep(0.1)

    def send(self, data: str) -> None:
        self.proc.write(data.encode())

    def press_until(self, key: str, predicate: Callable[[str], object], timeout_s: float,
                    what: str) -> None:
        """Press `key` until the screen shows `predicate`: a key pressed while the TUI is
        still settling after it drew a screen is dropped (seen under load on the trust
        screen), so a screen that has not moved on after a few seconds gets it again."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.send(key)
            try:
                self.wait_for(predicate, min(3.0, max(deadline - time.monotonic(), 0.1)), what)
                return
            except AssertionError:
                if time.monotonic() > deadline or not self.proc.isalive():
                    raise

    def submit(self, prompt: str) -> None:
        """Paste the prompt into the idle composer, see it there, press Enter."""
        self.wait_for(lambda s: "? for shortcuts" in s and "Ask Codex" in s, 60, "the composer")
        time.sleep(0.5)  # keys sent while the TUI is still settling are dropped
        self.send(PASTE_START + prompt + PASTE_END)
        self.wait_for(lambda s: prompt.splitlines()[0] in s, 10, "the prompt in the composer")
        self.send("\r")

    def terminate(self) -> None:
        """End it and reap it (SIGHUP, SIGINT, then SIGKILL)."""
        if self.proc.isalive():
            self.proc.terminate(force=True)
        self.proc.close(force=True)
        self._reader.join(timeout=5)


def env_for(home: Path, codex_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"HOME": str(home), "CODEX_HOME": str(codex_home), "TERM": "xterm-256color",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STANDIN_API_KEY": "sk-standin",
            **(extra or {})}


def wait_until(probe: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `probe` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)
