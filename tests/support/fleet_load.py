"""A fleet of Claude-like TUIs redrawing their screens, for tests/system/test_fleet_load.py and
bench/bench_fleet.py (one harness, so the benchmark measures what the test checks).

Each agent is `python -c TUI GO FRAMES HZ`: it draws Claude Code's input box, sends the
SessionStart hook as Claude Code does (so a start is ready at once), waits until the file GO
exists, then redraws a ~10 KB screen (cursor moves, 256-colour runs, a spinner,
the input box under a rule, a footer) HZ times a second, FRAMES times, and then sleeps.
Every frame ends with a stamp `t=<time.time()> n=<frame>` (fixed width), so a viewer can
time each frame from the moment the agent wrote it, and `expected()` can rebuild every byte
the agent wrote from the stamps a reader saw. Frames hold no LF (cursor moves only), so the
PTY's line discipline passes them through unchanged: what the agent wrote is what is read.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from pathlib import Path

import httpx

#: the agent program; argv: GO FRAMES HZ. Its frame() is also exec'd here (one definition)
TUI = r'''
import json, os, socket, sys, time
ROWS, COLS = 40, 120
WORDS = [w.ljust(9) for w in ("reading", "editing", "tests", "pyproject", "session",
         "manager", "output", "monitor", "worktree", "refactor", "imports", "fixture",
         "coverage", "schema", "handler", "context", "retries", "timeouts", "journal")]
SPIN = "\u2722\u2733\u2736\u273b\u273d\u274b"
RULE = "\u2500" * COLS


def frame(n, stamp):
    out = ["\x1b[?25l\x1b[H"]
    for r in range(33):
        out.append("\x1b[%02d;01H" % (r + 1))
        for k in range(12):
            out.append("\x1b[38;5;%03dm%s " % (16 + (r * 7 + n + k) % 216,
                                               WORDS[(r + n + k) % len(WORDS)]))
        out.append("\x1b[0m\x1b[K")
    out.append("\x1b[34;01H\x1b[38;5;174m%s\x1b[0m Thinking\u2026 (%04ds \u00b7 esc to interrupt)"
               "\x1b[K" % (SPIN[n % len(SPIN)], n // 10 % 10000))
    out.append("\x1b[36;01H\x1b[2m%s\x1b[0m\x1b[37;01H\u276f \x1b[K\x1b[38;01H\x1b[2m%s\x1b[0m"
               "\x1b[39;01H  ? for shortcuts\x1b[K" % (RULE, RULE))
    out.append("\x1b[40;01H  \u23bf t=%s n=%08d\x1b[K" % (stamp, n))
    return "".join(out).encode()


INIT = ("\x1b[2J\x1b[H\u25cf Ready.\x1b[36;01H%s\x1b[37;01H\u276f \x1b[38;01H%s"
        "\x1b[39;01H  ? for shortcuts" % (RULE, RULE)).encode()

if __name__ == "__main__":
    go, frames, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    os.write(1, INIT)
    if os.environ.get("SEMO_HOOK_SOCKET"):  # Claude Code's SessionStart hook, as its relay sends it
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(os.environ["SEMO_HOOK_SOCKET"])
                s.sendall(json.dumps({"session_id": os.environ["SEMO_SESSION_ID"],
                                      "token": os.environ["SEMO_HOOK_TOKEN"],
                                      "event": {"hook_event_name": "SessionStart",
                                                "source": "startup"}}).encode() + b"\n")
                s.shutdown(socket.SHUT_WR)
                s.recv(64)
        except OSError:
            pass
    while not os.path.exists(go):
        time.sleep(0.05)
    t0 = time.monotonic()
    for n in range(frames):
        data = frame(n, "%017.6f" % time.time())
        while data:
            data = data[os.write(1, data):]
        time.sleep(max(0.0, t0 + (n + 1) / hz - time.monotonic()))
    time.sleep(3600)
'''

_ns: dict = {}
exec(compile(TUI, "<tui>", "exec"), _ns)  # noqa: S102 - our own constant, defining frame()
frame = _ns["frame"]
INIT: bytes = _ns["INIT"]
FRAME_BYTES = len(frame(0, f"{0.0:017.6f}"))
#: how every frame begins (hide the cursor, home)
FRAME_START = b"\x1b[?25l\x1b[H"
STAMP = re.compile(rb"t=(\d{10}\.\d{6}) n=(\d{8})")


def argv(go: str, frames: int, hz: float = 10.0) -> list[str]:
    return [sys.executable, "-c", TUI, go, str(frames), str(hz)]


def total_bytes(frames: int) -> int:
    """What one agent writes in all."""
    return len(INIT) + frames * FRAME_BYTES


def expected(received: bytes) -> bytes:
    """The bytes the agent wrote, rebuilt from the stamps in what was received (every frame
    but its stamp is fixed): equal to `received` exactly when nothing was lost or reordered."""
    out = [INIT]
    for m in STAMP.finditer(received):
        out.append(frame(int(m.group(2)), m.group(1).decode()))
    return b"".join(out)


def profile(go: str, frames: int, hz: float = 10.0) -> dict:
    """An agent profile that runs the TUI and is watched as Claude Code is (a ClaudeDriver:
    `kind` claude, `hooks`); the TUI sends the SessionStart hook, as Claude Code does."""
    return {"kind": "claude", "argv": argv(go, frames, hz), "monitor": "claude", "hooks": True,
            "resume_args": [], "ready_timeout_s": 60}


class Viewer:
    """One attached viewer's received bytes and, per frame stamp, when it arrived."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.arrived: dict[int, tuple[float, float]] = {}  # frame -> (written, received)
        self.offsets: dict[int, int] = {}  # frame -> where its stamp ends in the stream
        self._scanned = 0
        self.ready = asyncio.Event()

    def got(self, chunk: bytes) -> None:
        now = time.time()
        self.data += chunk
        # a stamp may straddle two chunks: rescan the last few bytes of the one before
        start = max(0, self._scanned - 40)
        for m in STAMP.finditer(self.data, start):
            n = int(m.group(2))
            if n not in self.arrived:
                self.arrived[n] = (float(m.group(1)), now)
                self.offsets[n] = m.end()
        self._scanned = len(self.data)

    def caught_up(self, until: float) -> bool:
        """It has a frame written after `until` (so all written before, in order)."""
        return any(wrote > until for wrote, _ in self.arrived.values())

    def missing(self, since: float, until: float, hz: float) -> int:
        """Frames an agent redrawing `hz` times a second wrote in the window and this viewer
        has not (an estimate: the agent may have written fewer, held up by back-pressure)."""
        got = sum(1 for wrote, _ in self.arrived.values() if since <= wrote <= until)
        return max(0, int((until - since) * hz) - got)

    def latencies_ms(self, since: float, until: float) -> list[float]:
        return [(got - wrote) * 1000 for wrote, got in self.arrived.values()
                if since <= wrote <= until]


async def watch_ws(info: dict, office: str, sid: str, viewer: Viewer) -> None:
    from websockets.asyncio.client import connect

    url = info["api_url"].replace("http", "ws", 1) + \
        f"/api/offices/{office}/sessions/{sid}/attach?since=0&read_only=true"
    async with connect(url, additional_headers={"Authorization": f"Bearer {info['token']}"},
                       open_timeout=30, max_size=8 * 1024 * 1024) as ws:
        async for message in ws:
            if isinstance(message, bytes):
                viewer.got(message)
            elif json.loads(message).get("type") == "hello":
                viewer.ready.set()


async def watch_sse(info: dict, office: str, sid: str, viewer: Viewer) -> None:
    url = f"{info['api_url']}/api/offices/{office}/sessions/{sid}/output/stream"
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http:
        async with http.stream("GET", url, params={"since": 0, "format": "raw"},
                               headers={"Authorization": f"Bearer {info['token']}"}) as r:
            r.raise_for_status()
            viewer.ready.set()
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "output":
                    viewer.got(json.loads(line[5:])["data"].encode("utf-8", "surrogateescape"))


class Fleet:
    """`count` TUI sessions in one office of a running `semo dev`, created through the API."""

    def __init__(self, info: dict, machine: str, go: Path, count: int,
                 agent: str = "tui") -> None:
        self.info, self.machine, self.go, self.count = info, machine, go, count
        self.agent = agent
        self.office = f"fleet-{uuid.uuid4().hex[:6]}"
        self.sids: list[str] = []
        self.api = httpx.AsyncClient(base_url=info["api_url"], timeout=180,
                                     headers={"Authorization": f"Bearer {info['token']}"},
                                     limits=httpx.Limits(max_connections=50))

    async def start(self, parallel: int = 16) -> float:
        """Create every session (each ready once its input box is drawn); seconds taken."""
        r = await self.api.post("/api/offices", json={
            "office_id": self.office, "name": "fleet", "machine_id": self.machine,
            "agent": self.agent, "warm_roles": [], "max_sessions": self.count})
        r.raise_for_status()
        gate = asyncio.Semaphore(parallel)

        async def one(i: int) -> str:
            async with gate:
                r = await self.api.post(f"/api/offices/{self.office}/sessions",
                                        json={"role": f"R{i}"})
                r.raise_for_status()
                return r.json()["session_id"]

        t0 = time.perf_counter()
        self.sids = list(await asyncio.gather(*(one(i) for i in range(self.count))))
        return time.perf_counter() - t0

    async def persisted(self, pool_conn) -> dict[str, int]:
        rows = await (await pool_conn.execute(
            "select session_id, max(end_offset) from session_output"
            " where session_id = any(%s) group by session_id", (self.sids,))).fetchall()
        return {sid: end for sid, end in rows}

    async def close(self, delete: bool = True) -> None:
        """Delete the office (which terminates its sessions one by one: minutes for 200),
        or, with `delete` False, leave them to the stack's own stop."""
        try:
            if delete:
                await self.api.delete(f"/api/offices/{self.office}")
        finally:
            await self.api.aclose()
