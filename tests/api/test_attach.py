"""`semo session attach`: the CLI in a real PTY (ptyprocess) on one end, a real agent terminal
on the client machine on the other, the API's WebSocket in between.

Typed keys reach the session and its output comes back; a resize of the local terminal
resizes the session's PTY; Ctrl+C goes through; Ctrl+] detaches and leaves the session
running; the local terminal is out of raw mode afterwards (checked with `stty -a` in the same
PTY); read-only sends nothing; the WebSocket refuses what the REST routes refuse.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import threading
import time

import psycopg
import pytest
from ptyprocess import PtyProcess
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from api.routes.attach import to_commands
from cli.attach import TerminalModes, detach_byte, websocket_url
from dev.embedded import venv_bin
from tests.support.tokens import token_for
from tests.support.waiting import wait_for


class Term:
    """A program in a PTY of its own, its output collected by a thread."""

    def __init__(self, command: str, env: dict[str, str], rows: int = 24, cols: int = 80) -> None:
        self.proc = PtyProcess.spawn(["bash", "--noprofile", "--norc", "-c", command], env=env,
                                     dimensions=(rows, cols))
        self.buf = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.proc.read(65536)
            except EOFError:
                return
            with self._lock:
                self.buf += data

    @property
    def text(self) -> str:
        with self._lock:
            return self.buf.decode(errors="replace")

    def send(self, data: bytes) -> None:
        self.proc.write(data)

    async def expect(self, needle: str, timeout: float = 20.0, after: int = 0) -> int:
        """Wait until `needle` shows at or after character `after`; returns where it ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.text.find(needle, after)
            if at >= 0:
                return at + len(needle)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{needle!r} not seen within {timeout}s; output:\n{self.text[-3000:]}")

    async def exited(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.isalive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not self.proc.isalive(), f"still running; output:\n{self.text[-3000:]}"
        return self.proc.exitstatus

    def close(self) -> None:
        if self.proc.isalive():
            self.proc.terminate(force=True)


@pytest.fixture
def attach_env(api_url, tmp_path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "TERM": "xterm-256color", "SEMO_API_URL": api_url,
            "SEMO_TOKEN": token_for(["*"]), "SEMO_HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}


@pytest.fixture
async def session(http, office) -> str:
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    yield r.json()["session_id"]
    await http.delete(f"/api/offices/{office}/sessions/{r.json()['session_id']}")


def attach_command(office: str, sid: str, *flags: str) -> str:
    """Attach, then report the exit code and the terminal's modes from the same PTY."""
    semo = shlex.quote(str(venv_bin("semo")))
    args = " ".join(shlex.quote(a) for a in (f"{office}/{sid}", *flags))
    return f"{semo} session attach {args}; echo attach-exit=$?; stty -a; echo modes-end"


async def size_of(http, office, sid) -> tuple[int, int]:
    shot = (await http.get(f"/api/offices/{office}/sessions/{sid}/screen")).json()
    return shot["rows"], shot["cols"]


def assert_cooked(stty: str) -> None:
    """`stty -a` says the terminal is back in its normal (cooked) mode."""
    flags = stty.replace("\r", " ").replace("\n", " ").split()
    assert "icanon" in flags and "echo" in flags and "isig" in flags, stty
    assert "-icanon" not in flags and "-echo" not in flags, stty


async def test_attach_types_sees_resizes_and_detaches(http, office, session, attach_env):
    term = Term(attach_command(office, session), attach_env, rows=24, cols=80)
    try:
        await term.expect(f"attached to {session} (ready); ctrl+] detaches")
        # the session took this terminal's size
        await wait_for(lambda: _size_is(http, office, session, (24, 80)), what="24x80")
        term.send(b"stty size\r")
        at = await term.expect("24 80")

        term.send(b"echo hello-$((6*7))\r")
        at = await term.expect("hello-42", after=at)

        # a resize of the local terminal (SIGWINCH) resizes the session's PTY
        term.proc.setwinsize(30, 100)
        await wait_for(lambda: _size_is(http, office, session, (30, 100)), what="30x100")
        term.send(b"stty size\r")
        at = await term.expect("30 100", after=at)

        # Ctrl+C is a key like any other: it interrupts the agent's foreground program
        term.send(b"sleep 30\r")
        await asyncio.sleep(0.5)
        term.send(b"\x03")
        term.send(b"echo after-$((1+1))\r")
        at = await term.expect("after-2", timeout=30, after=at)

        # Ctrl+] detaches: not sent, the CLI exits 0, the terminal is cooked again
        term.send(b"\x1d")
        at = await term.expect("attach-exit=0", after=at)
        assert f"[detached: {session}]" in term.text
        assert await term.exited() == 0
        await term.expect("modes-end", after=at)  # stty's report is whole
        assert_cooked(term.text[at:])
    finally:
        term.close()
    s = (await http.get(f"/api/offices/{office}/sessions/{session}")).json()
    assert s["status"] == "ready", "detaching leaves the session running"
    out = (await http.get(f"/api/offices/{office}/sessions/{session}/output")).json()["data"]
    assert "hello-42" in out and "after-2" in out


async def _size_is(http, office, sid, size):
    return await size_of(http, office, sid) == size


async def test_read_only_sends_nothing(http, office, session, attach_env):
    before = await size_of(http, office, session)
    term = Term(attach_command(office, session, "--read-only"), attach_env, rows=20, cols=70)
    try:
        await term.expect("(read-only, ready)")
        term.send(b"echo nope-$((2*2))\r")
        at = await term.expect("read-only: what you type is not sent; ctrl+] detaches")
        term.proc.setwinsize(25, 90)
        await asyncio.sleep(1.0)
        term.send(b"\x1d")
        at = await term.expect("attach-exit=0", after=at)
        await term.expect("modes-end", after=at)  # stty's report is whole
        assert_cooked(term.text[at:])
    finally:
        term.close()
    out = (await http.get(f"/api/offices/{office}/sessions/{session}/output")).json()["data"]
    assert "nope" not in out
    assert await size_of(http, office, session) == before, "a watcher does not resize"


async def test_terminating_the_session_ends_attach_cleanly(http, office, session, attach_env):
    term = Term(attach_command(office, session), attach_env)
    try:
        await term.expect("detaches")
        term.send(b"printf '\\033[?1049h\\033[?25l' ; echo in-alt-screen\r")  # a TUI's modes
        at = await term.expect("in-alt-screen")
        r = await http.delete(f"/api/offices/{office}/sessions/{session}")
        assert r.status_code == 200, r.text
        at = await term.expect("attach-exit=0", after=at)
        assert f"[the session was terminated: {session}]" in term.text
        await term.expect("modes-end", after=at)  # stty's report is whole
        assert_cooked(term.text[at:])
        # the modes the agent set were reset on the way out
        tail = term.text[term.text.find("in-alt-screen"):]
        assert "\x1b[?1049l" in tail and "\x1b[?25h" in tail
    finally:
        term.close()
    # attaching to a session that is gone shows its last output, then says so
    term = Term(attach_command(office, session), attach_env)
    try:
        at = await term.expect("in-alt-screen")
        await term.expect(f"[the session was terminated: {session}]", after=at)
        assert await term.exited() == 0
    finally:
        term.close()


# --- the WebSocket itself ---------------------------------------------------------------------


async def test_websocket_refuses_like_rest(api_url, office, session):
    url = websocket_url(api_url, office, session, read_only=False)
    cases = [({}, url, 401), ({"Authorization": "Bearer not-a-jwt"}, url, 401),
             ({"Authorization": f"Bearer {token_for(['elsewhere'], sub='stranger')}"}, url, 404),
             ({"Authorization": f"Bearer {token_for(['*'])}"},
              websocket_url(api_url, office, "no-such-session", read_only=False), 404)]
    for headers, target, status in cases:
        with pytest.raises(InvalidStatus) as err:
            async with connect(target, additional_headers=headers, open_timeout=10):
                pass
        assert err.value.response.status_code == status
        problem = json.loads(err.value.response.body)
        assert problem["status"] == status and problem["detail"]
    # a browser cannot set headers: the token may come as a query parameter
    async with connect(f"{url}?token={token_for([office], sub='member')}", open_timeout=10) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["session_id"] == session
    # read-only is enforced by the server too, whatever the client sends
    watch = websocket_url(api_url, office, session, read_only=True)
    async with connect(watch, additional_headers={"Authorization": f"Bearer {token_for(['*'])}"},
                       open_timeout=10) as ws:
        assert json.loads(await ws.recv())["read_only"] is True
        await ws.send(b"echo sneaky\r")
        while isinstance(msg := await asyncio.wait_for(ws.recv(), 10), bytes):
            pass
        assert json.loads(msg) == {"type": "error", "status": 403,
                                   "detail": "attached read-only: input is not sent"}


async def _receive_until(ws, done, timeout_s: float = 20) -> tuple[bytes, list[dict]]:
    """The output and error messages an attach WebSocket sends until `done(output, errors)`
    holds (or `timeout_s` passes: the caller asserts what it needed)."""
    seen, errors = b"", []
    deadline = time.monotonic() + timeout_s
    while not done(seen, errors) and time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(ws.recv(), 1)
        except TimeoutError:
            continue
        if isinstance(msg, bytes):
            seen += msg
        elif json.loads(msg)["type"] == "error":
            errors.append(json.loads(msg))
    return seen, errors


async def test_keys_typed_right_after_a_resize_see_the_new_size(api_url, office, session):
    """Resizes and keys go as separate commands; keys sent after a resize wait for it, so a
    `stty size` typed the moment a viewer attaches reads the viewer's size."""
    url = websocket_url(api_url, office, session, read_only=False)
    async with connect(url, additional_headers={"Authorization": f"Bearer {token_for(['*'])}"},
                       open_timeout=10) as ws:
        json.loads(await ws.recv())  # hello
        for rows, cols in [(30 + n, 70 + n) for n in range(12)]:
            await ws.send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))
            await ws.send(b"stty size\r")
            seen, _ = await _receive_until(ws, lambda seen, _: f"{rows} {cols}".encode() in seen)
            assert f"{rows} {cols}".encode() in seen, seen[-500:]


async def test_websocket_input_batches_named_keys_and_nul(api_url, office, session, pool, http):
    url = websocket_url(api_url, office, session, read_only=False)
    async with connect(url, additional_headers={"Authorization": f"Bearer {token_for(['*'])}"},
                       open_timeout=10) as ws:
        hello = json.loads(await ws.recv())
        assert hello["rows"] == 40 and hello["cols"] == 120
        # NUL (Ctrl+Space) cannot be jsonb text: it goes as the named key ctrl+space
        await ws.send(b"echo nul-\x00$((1+1))\r")
        await ws.send(json.dumps({"type": "input", "data": "echo text-$((2+2))\r"}))
        await ws.send(json.dumps({"type": "resize", "rows": 1, "cols": 1}))
        seen, errors = await _receive_until(
            ws, lambda seen, errors: b"nul-2" in seen and b"text-4" in seen and bool(errors))
        assert b"nul-2" in seen and b"text-4" in seen, seen[-2000:]
        assert errors and "out of range" in errors[0]["detail"]
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "select payload from agent_commands where session_id = %s and type = 'send_keys'"
            " order by created_at", (session,))).fetchall()
    payloads = [r[0] for r in rows]
    assert payloads[0] == {"keys": ["ctrl+space"], "text": "echo nul-"}, payloads
    # in order, byte for byte (input typed while a command is in flight joins the next one)
    written = "".join(p.get("text", "") + "\x00" * len(p["keys"]) for p in payloads)
    assert written == "echo nul-\x00$((1+1))\recho text-$((2+2))\r"


async def test_a_viewer_is_announced_to_the_client_worker_while_attached(api_url, office,
                                                                         session, settings):
    """While a viewer follows a session, the API says so on `session_viewers` (the client
    worker then saves that session's output ahead of the rest of its machine's)."""
    listener = await psycopg.AsyncConnection.connect(settings.effective_database_url(),
                                                     autocommit=True)
    try:
        await listener.execute("listen session_viewers")
        url = websocket_url(api_url, office, session, read_only=True)
        async with connect(url, open_timeout=10, additional_headers={
                "Authorization": f"Bearer {token_for(['*'])}"}) as ws:
            json.loads(await ws.recv())  # hello

            async def heard():
                async for note in listener.notifies(timeout=30):
                    if note.payload == session:
                        return
            await asyncio.wait_for(heard(), 30)
    finally:
        await listener.close()


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("typed,expected", [
    ("ls -la\r", [([], "ls -la\r")]),                    # a batch stays one command
    ("\r", [(["enter"], "")]),
    ("\x03\x03", [(["ctrl+c", "ctrl+c"], "")]),
    ("\x1b[Ax", [(["up"], ""), ([], "x")]),              # leading keys by name, then the text
    ("a\x1b[Ab", [([], "a\x1b[Ab")]),                    # after text, keys stay characters
    ("\x1bOA", [(["esc"], ""), ([], "OA")]),             # application-mode arrows, byte for byte
    ("x\x00y", [(["ctrl+space"], "x"), ([], "y")]),      # NUL is never text: a key after "x"
    ("\x01\x05", [([], "\x01\x05")]),                    # unnamed controls are text
])
def test_to_commands(typed, expected):
    commands = to_commands(typed)
    assert [(c.keys, c.text) for c in commands] == expected


def test_to_commands_keeps_every_byte_in_order():
    from workflows.contracts import NAMED_KEYS

    typed = "héllo\x1b[A\x00\x7fwörld\r\x1b\x1bOB\t" * 300 + "é" * 20000
    commands = to_commands(typed)
    written = "".join(c.text + "".join(NAMED_KEYS[k] for k in c.keys) for c in commands)
    assert written == typed
    assert all("\x00" not in c.text for c in commands)
    assert all(len(c.text.encode()) <= 16 * 1024 and len(c.keys) <= 64 for c in commands)


def test_detach_keys_and_urls():
    assert detach_byte("ctrl+]") == b"\x1d" and detach_byte("^Q") == b"\x11"
    with pytest.raises(ValueError):
        detach_byte("ctrl+c")
    with pytest.raises(ValueError):
        detach_byte("q")
    assert websocket_url("https://h:1/base/", "o", "s", read_only=True) == \
        "wss://h:1/base/api/offices/o/sessions/s/attach?read_only=true"


def test_terminal_modes_are_undone():
    modes = TerminalModes()
    modes.feed(b"x\x1b[?1049h\x1b[?25l\x1b[?20")
    modes.feed(b"04h\x1b[?1000;1006h y \x1b[?1000l")
    reset = modes.reset_sequence()
    assert b"\x1b[?1049l" in reset and b"\x1b[?2004l" in reset and b"\x1b[?1006l" in reset
    assert b"\x1b[?25h" in reset and b"\x1b[?1000l" not in reset
