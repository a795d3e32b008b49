"""`semo session attach`: this terminal becomes the session's terminal, over the API's
WebSocket (api/routes/attach.py says what travels on it).

The local terminal goes into raw mode, so every key (Ctrl+C included) goes to the agent, and
comes back out of it whatever happens: detach, the session ending, the connection dropping,
an exception, SIGTERM or SIGHUP. Modes the agent switched on in this terminal (the alternate
screen, mouse reporting, bracketed paste, application cursor keys, a hidden cursor) are
switched off again on the way out, so the shell you come back to is usable.

The detach key (Ctrl+] by default, as in telnet) is never sent. A window resize (SIGWINCH)
becomes a resize of the session's PTY, unless attached read-only: a watcher sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import termios
import tty
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from cli.client import ApiFailed, ApiRefused, ClientConfig, TimedOut, Unreachable

#: how long a burst of SIGWINCH is let settle before the size is sent
RESIZE_SETTLE_S = 0.05
#: after stdin ends (piped input), how long output is still shown before detaching
EOF_GRACE_S = 1.0

_CTRL_NAMES = {"]": 0x1D, "\\": 0x1C, "^": 0x1E, "_": 0x1F, "@": 0x00}


class AttachError(Exception):
    def __init__(self, message: str, exit_code: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.exit_code, self.hint = message, exit_code, hint


def detach_byte(name: str) -> bytes:
    """`ctrl+]`, `ctrl+x`, `^]`... as the byte the terminal sends for it."""
    key = name.strip().lower()
    for prefix in ("ctrl+", "ctrl-", "c-", "^"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    else:
        raise ValueError(f"detach key {name!r}: give a control key, such as ctrl+] or ctrl+q")
    if len(key) == 1 and "a" <= key <= "z":
        if key in ("c", "m", "i", "j", "h"):
            raise ValueError(f"{name} is too useful to the agent to detach with; try ctrl+]")
        return bytes([ord(key) - ord("a") + 1])
    if key in _CTRL_NAMES and key != "@":
        return bytes([_CTRL_NAMES[key]])
    raise ValueError(f"detach key {name!r}: use ctrl+LETTER, ctrl+], ctrl+\\, ctrl+^ or ctrl+_")


def websocket_url(api_url: str, office_id: str, session_id: str, *, read_only: bool) -> str:
    parts = urlsplit(api_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = (f"{parts.path.rstrip('/')}/api/offices/{quote(office_id, safe='')}/sessions/"
            f"{quote(session_id, safe='')}/attach")
    query = urlencode({"read_only": "true"}) if read_only else ""
    return urlunsplit((scheme, parts.netloc, path, query, ""))


class TerminalModes:
    """Tracks the DEC private modes the remote side sets in our terminal, to undo them."""

    _MODE = re.compile(rb"\x1b\[\?([0-9;]+)([hl])")
    #: modes whose "set" state must be reset on the way out (25, the cursor, the other way)
    _RESET_OFF = ("1049", "1047", "47", "1000", "1002", "1003", "1005", "1006", "1015",
                  "2004", "1", "1004")

    def __init__(self) -> None:
        self.modes: dict[str, bool] = {}
        self._tail = b""

    def feed(self, data: bytes) -> None:
        chunk = self._tail + data
        for m in self._MODE.finditer(chunk):
            for mode in m.group(1).split(b";"):
                self.modes[mode.decode()] = m.group(2) == b"h"
        esc = chunk.rfind(b"\x1b", max(0, len(chunk) - 32))
        self._tail = chunk[esc:] if esc >= 0 and not self._MODE.match(chunk, esc) else b""

    def reset_sequence(self) -> bytes:
        out = b"\x1b[0m"
        for mode in self._RESET_OFF:
            if self.modes.get(mode):
                out += f"\x1b[?{mode}l".encode()
        if self.modes.get("25") is False:
            out += b"\x1b[?25h"
        return out


class _Session:
    def __init__(self, ws, session_id: str, *, read_only: bool, detach_key: bytes,
                 detach_label: str, stdin_fd: int, stdout_fd: int) -> None:
        self.ws = ws
        self.detach_label = detach_label
        self._told_read_only = False
        self.sid = session_id
        self.read_only = read_only
        self.detach_key = detach_key
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.modes = TerminalModes()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.resize_wanted = asyncio.Event()

    def finish(self, reason: str, code: int = 0) -> None:
        if not self.done.done():
            self.done.set_result((reason, code))

    # --- keyboard -> session ---------------------------------------------------------------

    def on_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.stdin_fd)
            asyncio.get_running_loop().call_later(EOF_GRACE_S, self.finish, "input ended")
            return
        cut = data.find(self.detach_key)
        if self.read_only:
            if cut >= 0 or b"\x03" in data:
                self.finish("detached")
            elif not self._told_read_only:
                self._told_read_only = True
                self.note(f"read-only: what you type is not sent; {self.detach_label} detaches")
            return
        if cut >= 0:
            if cut:
                self.outbox.put_nowait(data[:cut])
            self.outbox.put_nowait(None)  # detach once what came before the key is sent
            return
        self.outbox.put_nowait(data)

    async def send_input(self) -> None:
        while True:
            data = await self.outbox.get()
            if data is None:
                self.finish("detached")
                return
            await self.ws.send(data)

    # --- resize ------------------------------------------------------------------------------

    def size(self) -> tuple[int, int] | None:
        for fd in (self.stdout_fd, self.stdin_fd):
            try:
                cols, rows = os.get_terminal_size(fd)
                return rows, cols
            except OSError:
                continue
        return None

    async def send_resizes(self) -> None:
        while True:
            await self.resize_wanted.wait()
            await asyncio.sleep(RESIZE_SETTLE_S)
            self.resize_wanted.clear()
            await self.send_size()

    async def send_size(self) -> None:
        """This terminal's size, as the session's."""
        size = self.size()
        if size:
            await self.ws.send(json.dumps({"type": "resize", "rows": size[0], "cols": size[1]}))

    # --- session -> screen -------------------------------------------------------------------

    async def receive(self) -> None:
        from websockets.exceptions import ConnectionClosed

        rcvd = None
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.modes.feed(message)
                    _write_all(self.stdout_fd, message)
                    continue
                try:
                    msg = json.loads(message)
                except ValueError:
                    continue
                if msg.get("type") == "error":
                    self.note(f"{msg.get('detail')} ({msg.get('status')})")
                elif msg.get("type") == "status" and msg.get("status") in ("restarting", "failed"):
                    self.note(f"session is {msg['status']}")
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
        else:
            rcvd = self.ws.protocol.close_rcvd
        if rcvd is not None and rcvd.code == 1000 and "terminated" in (rcvd.reason or ""):
            self.finish("the session was terminated")
        elif rcvd is not None and rcvd.code == 1000:
            self.finish(f"the API closed the connection{': ' + rcvd.reason if rcvd.reason else ''}")
        else:
            self.finish("the connection to the API was lost", 3)

    def note(self, text: str) -> None:
        """A line from us, not the agent (raw mode: CR LF)."""
        _write_all(self.stdout_fd, f"\r\n\x1b[2m[semo: {text}]\x1b[0m\r\n".encode())


def _feed_file(sess: _Session, fd: int) -> None:
    """Input from a file: send it all, then leave after the grace period."""
    while chunk := os.read(fd, 65536):
        if not sess.read_only:
            sess.outbox.put_nowait(chunk)
    asyncio.get_running_loop().call_later(EOF_GRACE_S, sess.finish, "input ended")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)


def attach(config: ClientConfig, office_id: str, session_id: str, *, read_only: bool = False,
           detach_key: bytes = b"\x1d", detach_label: str = "ctrl+]",
           stdin_fd: int | None = None, stdout_fd: int | None = None) -> int:
    """Attach until detached or the session ends; returns the exit code."""
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    return asyncio.run(_attach(config, office_id, session_id, read_only=read_only,
                               detach_key=detach_key, detach_label=detach_label,
                               stdin_fd=stdin_fd, stdout_fd=stdout_fd))


async def _attach(config: ClientConfig, office_id: str, session_id: str, *, read_only: bool,
                  detach_key: bytes, detach_label: str, stdin_fd: int, stdout_fd: int) -> int:
    from websockets.asyncio.client import connect

    url = websocket_url(config.api_url, office_id, session_id, read_only=read_only)
    try:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {config.token}"},
                           open_timeout=15, ping_interval=20, ping_timeout=20, close_timeout=3,
                           max_size=4 * 1024 * 1024, user_agent_header="semo-cli")
    except Exception as err:  # noqa: BLE001 - translated right here, at the boundary
        raise _translate(err, config.api_url) from None
    async with ws:
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 15))
        except TimeoutError:
            raise TimedOut(f"the API at {config.api_url} accepted but did not greet") from None
        except Exception as err:  # noqa: BLE001 - closed before it began
            raise Unreachable(f"the attach connection closed before it began: {err}") from None
        status = hello.get("status")
        mode = "read-only, " if read_only else ""
        sys.stderr.write(f"attached to {session_id} ({mode}{status}); {detach_label} detaches\n")
        sys.stderr.flush()
        sess = _Session(ws, session_id, read_only=read_only, detach_key=detach_key,
                        detach_label=detach_label, stdin_fd=stdin_fd, stdout_fd=stdout_fd)
        with _raw(stdin_fd) as is_tty, _signals(sess):
            loop = asyncio.get_running_loop()
            try:
                loop.add_reader(stdin_fd, sess.on_stdin)
            except PermissionError:  # a regular file (`< prompt.txt`): epoll cannot watch it
                _feed_file(sess, stdin_fd)
            tasks = [asyncio.create_task(sess.receive())]
            if not read_only:
                # the session takes this terminal's size before anything typed goes out
                # (the API holds keys sent after a resize until it is applied)
                if is_tty or os.isatty(stdout_fd):
                    await sess.send_size()
                tasks += [asyncio.create_task(sess.send_input()),
                          asyncio.create_task(sess.send_resizes())]
            try:
                reason, code = await sess.done
            finally:
                with contextlib.suppress(Exception):
                    loop.remove_reader(stdin_fd)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(OSError):
                    _write_all(stdout_fd, sess.modes.reset_sequence())
    sys.stderr.write(f"\n[{reason}: {session_id}]\n")
    sys.stderr.flush()
    return code


@contextlib.contextmanager
def _raw(fd: int):
    """Raw mode for the duration, restored whatever happens (True when fd is a terminal)."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _signals(sess: _Session):
    """SIGWINCH: a resize; SIGTERM, SIGHUP: leave cleanly (the terminal is restored)."""
    loop = asyncio.get_running_loop()
    handled = []
    for sig, action in ((signal.SIGWINCH, sess.resize_wanted.set),
                        (signal.SIGTERM, lambda: sess.finish("stopped by SIGTERM", 130)),
                        (signal.SIGHUP, lambda: sess.finish("hung up", 130))):
        if sig == signal.SIGWINCH and sess.read_only:
            continue
        loop.add_signal_handler(sig, action)
        handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _translate(err: Exception, api_url: str) -> Exception:
    """The WebSocket client's errors as the HTTP client's (the CLI knows those)."""
    from websockets.exceptions import InvalidStatus, InvalidURI

    if isinstance(err, InvalidStatus):
        response = err.response
        try:
            problem = json.loads(response.body or b"{}")
            if not isinstance(problem, dict):
                problem = {}
        except ValueError:
            problem = {}
        detail = str(problem.get("detail") or response.reason_phrase or "refused")
        status = response.status_code
        if status == 504:
            return TimedOut(detail, status=status, problem=problem)
        cls = ApiFailed if status >= 500 else ApiRefused
        return cls(detail, status=status, problem=problem)
    if isinstance(err, InvalidURI):
        return AttachError(f"{api_url} is not an http(s) URL", 2)
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return TimedOut(f"timed out connecting to the API at {api_url}")
    return Unreachable(f"cannot reach the API at {api_url}: {err}")
