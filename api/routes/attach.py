"""`semo session attach` on the server: a WebSocket that makes a terminal the session's own.

`GET /api/offices/{office_id}/sessions/{session_id}/attach` (WebSocket upgrade)

The API has no network path to the client machine, so attach uses the same two channels as
everything else: output comes from Postgres as the client worker saves it (woken by the
`session_output` NOTIFY), and input goes out as `send_keys` commands (recorded in
`agent_commands`, carried out through Temporal like a `POST .../keys`). A resize is a `resize`
update of the session workflow, whose activity sets the PTY's size on the machine.

Protocol
    server -> client
        text    {"type": "hello", "session_id", "office_id", "status", "rows", "cols",
                 "offset", "read_only"}: first; raw output follows from `offset`
        binary  raw output bytes, in order
        text    {"type": "status", "status", "current_job_id"}: when it changes
        text    {"type": "error", "status", "detail"}: input or a resize that was refused
        close   1000 "session terminated" when the session ends
    client -> server
        binary  what the keyboard typed (UTF-8); or text {"type": "input", "data": "..."}
        text    {"type": "resize", "rows": R, "cols": C}

Authentication happens before the upgrade, with the REST routes' rules: a bearer token in
`Authorization` or a `token` query parameter (browsers cannot set headers on a WebSocket),
or the web console's cookie from the console's own origin (api/console_auth.py); missing or
bad: 401, an office the token does not open or an unknown session: 404, answered as the same
problem+json as REST (a WebSocket denial response).

Input is batched: while one keys command is in flight, what is typed meanwhile queues and
goes in the next, so a fast typist or a paste costs a few commands, not one per byte. A
command writes its text, then its named keys (as send_keys does). Control sequences that
have a name (Enter, Ctrl+C, Esc, the arrows...) at the start of a batch go as named keys
(byte for byte what was typed, and readable in `agent_commands`), in a command of their own
when text follows; after text they stay characters of the text, so the order is kept and a
batch stays one command. `text` travels as JSON and is stored in jsonb, which cannot hold
U+0000: NUL (Ctrl+Space) is always the named key `ctrl+space`, which ends its command.
Bytes that are not UTF-8 become U+FFFD; a paste over TEXT_PER_COMMAND
goes as several commands, in order.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from dataclasses import dataclass, field

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from api import console_auth
from api.deps import can_open, office_not_found
from api.errors import problem_response
from commands.executor import CommandType
from db import output as output_rows, reads
from semo import hops
from semo.errors import NotFound, SemoError
from semo.payloads import KeysBody
from semo.screen import replay_start
from workflows.contracts import MAX_KEYS, NAMED_KEYS
from workflows.ids import is_valid_id

log = logging.getLogger(__name__)

router = APIRouter(tags=["sessions"])

#: output sent per frame, and how much of the tail a fresh attach replays
FRAME_BYTES = 64 * 1024
REPLAY_BYTES = 64 * 1024
#: text per keys command (a paste larger than this goes as several, in order)
TEXT_PER_COMMAND = 16 * 1024
#: how often the session row is re-read for a status change when no output wakes us
STATUS_POLL_S = 2.0
#: keys typed right after a resize wait at most this long for it to be applied
RESIZE_FIRST_S = 16.0

#: control sequences that have a key name, longest first (each maps to exactly its own bytes)
_NAMED_SEQUENCES = sorted(
    ((seq, name) for name, seq in NAMED_KEYS.items()
     if seq and (seq[0] < " " or seq[0] == "\x7f")),
    key=lambda item: -len(item[0]))


@dataclass
class KeysCommand:
    keys: list[str] = field(default_factory=list)
    text: str = ""


def to_commands(typed: str) -> list[KeysCommand]:
    """Typed input as keys commands that, carried out in order, write exactly `typed`."""
    commands: list[KeysCommand] = []
    current = KeysCommand()
    text: list[str] = []
    text_bytes = 0

    def flush() -> None:
        nonlocal current, text, text_bytes
        current.text = "".join(text)
        if current.keys or current.text:
            commands.append(current)
        current, text, text_bytes = KeysCommand(), [], 0

    i = 0
    while i < len(typed):
        piece, name = typed[i], None
        if piece < " " or piece == "\x7f":
            for seq, key in _NAMED_SEQUENCES:
                if typed.startswith(seq, i):
                    piece, name = seq, key
                    break
        i += len(piece)
        if name is not None and (name == "ctrl+space" or not text):
            if len(current.keys) >= MAX_KEYS:
                flush()
            current.keys.append(name)  # pressed after the command's text
            if name == "ctrl+space":
                flush()  # NUL cannot be text: what follows is the next command's
            continue
        size = len(piece.encode("utf-8", "surrogatepass"))
        if current.keys or text_bytes + size > TEXT_PER_COMMAND:
            flush()  # keys already taken go before this text: a command of their own
        text.append(piece)
        text_bytes += size
    flush()
    return commands


@router.websocket("/api/offices/{office_id}/sessions/{session_id}/attach")
async def attach(websocket: WebSocket, office_id: str, session_id: str,
                 token: str | None = None, since: int | None = None, read_only: bool = False):
    state = websocket.app.state.semo
    try:
        user, session = await _authorize(state, websocket, office_id, session_id, token)
    except SemoError as err:
        await _deny(websocket, err)
        return
    await websocket.accept()
    bridge = AttachBridge(state, websocket, user, session, read_only,
                          getattr(websocket.app.state, "metrics", None))
    await bridge.run(since)


async def _authorize(state, websocket: WebSocket, office_id: str, session_id: str,
                     token: str | None):
    header = websocket.headers.get("authorization")
    if header is None and token is None and console_auth.COOKIE in websocket.cookies:
        user = await console_auth.cookie_principal(state.pool, websocket, None)
    else:
        user = await state.verifier.verify_async(header or (f"Bearer {token}" if token else None))
    if not is_valid_id(office_id) or not is_valid_id(session_id):
        raise NotFound("no such session")
    office = await reads.get_office(state.pool, office_id)
    if office is None or office["status"] == "deleted" \
            or not await can_open(state, user, office_id):
        raise office_not_found(office_id)
    session = await reads.get_session(state.pool, office_id, session_id)
    if session is None:
        raise NotFound(f"session {session_id!r} not found in office {office_id!r}")
    return user, session


async def _deny(websocket: WebSocket, err: SemoError) -> None:
    p = err.problem()
    response = problem_response(p.pop("status"), p.pop("title"), p.pop("detail"), **p)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:  # a server without the denial extension: close before accepting (the client sees 403)
        await websocket.close(code=4000 + err.status, reason=err.detail[:120])


class AttachBridge:
    """One attached terminal: output out, keys and resizes in."""

    def __init__(self, state, websocket: WebSocket, user, session: dict, read_only: bool,
                 metrics) -> None:
        self.state = state
        self.ws = websocket
        self.user = user
        self.session = session
        self.sid = session["session_id"]
        self.office_id = session["office_id"]
        self.read_only = read_only
        self.metrics = metrics
        self._send_lock = asyncio.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._typed: list[str] = []
        self._typed_ready = asyncio.Event()
        self._size: tuple[int, int] | None = None
        self._size_applied: tuple[int, int] | None = None
        self._size_ready = asyncio.Event()
        #: set while no resize is waiting to be applied: keys typed after a resize wait for
        #: it (a `stty size` typed right after attaching sees the attached terminal's size)
        self._size_settled = asyncio.Event()
        self._size_settled.set()
        self._size_asked = 0  # resizes asked for
        self._told_read_only = False

    async def run(self, since: int | None) -> None:
        if self.metrics:
            self.metrics.attached.inc()
        tasks: list[asyncio.Task] = []
        try:
            offset = await self._start_offset(since)
            await self._send_json({"type": "hello", "session_id": self.sid,
                                   "office_id": self.office_id, "status": self.session["status"],
                                   "rows": self.session["rows"], "cols": self.session["cols"],
                                   "offset": offset, "read_only": self.read_only})
            tasks = [asyncio.create_task(self._pump_output(offset), name=f"attach-out-{self.sid}"),
                     asyncio.create_task(self._receive(), name=f"attach-in-{self.sid}"),
                     asyncio.create_task(self._send_keys(), name=f"attach-keys-{self.sid}"),
                     asyncio.create_task(self._resize(), name=f"attach-resize-{self.sid}")]
            done, _ = await asyncio.wait(tasks[:2], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                err = None if task.cancelled() else task.exception()
                if isinstance(err, (WebSocketDisconnect, OSError)):  # the client went away
                    log.debug("attach to %s: client gone (%s)", self.sid, err)
                elif err is not None:
                    log.error("attach to %s failed", self.sid, exc_info=err)
        except WebSocketDisconnect:
            pass
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.metrics:
                self.metrics.attached.dec()
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=1000)

    # --- output -------------------------------------------------------------------------------

    async def _start_offset(self, since: int | None) -> int:
        """Where output starts: `since`, or the tail: from the last full-screen clear in the
        last REPLAY_BYTES (a TUI's current screen), else from the first line start in them."""
        kept_from, end = await output_rows.bounds(self.state.pool, self.sid)
        if since is not None:
            return max(since, kept_from)
        window = max(kept_from, end - REPLAY_BYTES)
        if window == end:
            return end
        _, _, data, _ = await output_rows.read(self.state.pool, self.sid, window, end - window)
        clear = replay_start(data)
        if clear > 0:
            return window + clear
        if window == kept_from:
            return window
        newline = data.find(b"\n")
        return window + newline + 1 if newline >= 0 else window

    async def _pump_output(self, offset: int) -> None:
        with self.state.live.viewing(self.sid):  # its output is saved ahead of the fleet's
            await self._pump(offset)

    async def _pump(self, offset: int) -> None:
        status = self.session["status"]
        while True:
            woken = self.state.live.listen(self.sid)  # before reading: no wake-up is missed
            _, next_offset, data, _ = await output_rows.read(self.state.pool, self.sid, offset,
                                                              FRAME_BYTES)
            if data:
                traced = hops.on(self.sid)
                if traced:
                    hops.mark("ws_read", self.sid, next_offset)
                async with self._send_lock:
                    await self.ws.send_bytes(data)
                if traced:
                    hops.mark("ws_sent", self.sid, next_offset)
                offset = next_offset
                continue
            row = await reads.get_session(self.state.pool, self.office_id, self.sid)
            if row is not None and row["status"] == "terminated":
                # all its output has been sent: say so, and end (also for one already gone)
                await self._send_json({"type": "status", "status": "terminated",
                                       "current_job_id": None})
                async with self._send_lock:
                    await self.ws.close(code=1000, reason="session terminated")
                return
            if row is not None and row["status"] != status:
                before, status = status, row["status"]
                await self._send_json({"type": "status", "status": status,
                                       "current_job_id": row["current_job_id"]})
                if before in ("starting", "restarting", "failed") and status == "ready":
                    self._size_applied = None  # a restarted agent has the default size again
                    if self._size:
                        self._size_ready.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken.wait(), STATUS_POLL_S)

    # --- input --------------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await self._typed_in(self._decoder.decode(message["bytes"]), len(message["bytes"]))
                continue
            try:
                msg = json.loads(message.get("text") or "")
                kind = msg.get("type") if isinstance(msg, dict) else None
            except ValueError:
                kind = None
            if kind == "input" and isinstance(msg.get("data"), str):
                await self._typed_in(msg["data"], len(msg["data"].encode("utf-8", "surrogatepass")))
            elif kind == "resize":
                self._resize_to(msg.get("rows"), msg.get("cols"))
            elif kind != "ping":
                await self._error(422, "unknown message: send binary input, or JSON with type "
                                       "input, resize or ping")

    async def _typed_in(self, text: str, size: int) -> None:
        if self.read_only:
            if not self._told_read_only:
                self._told_read_only = True
                await self._error(403, "attached read-only: input is not sent")
            return
        if self.metrics:
            self.metrics.attach_input.inc(size)
        if text:
            self._typed.append(text)
            self._typed_ready.set()

    async def _send_keys(self) -> None:
        """One keys command at a time; what is typed meanwhile goes in the next batch."""
        while True:
            await self._typed_ready.wait()
            self._typed_ready.clear()
            typed, self._typed = "".join(self._typed), []
            with contextlib.suppress(TimeoutError):  # bounded: a stuck resize never eats keys
                await asyncio.wait_for(self._size_settled.wait(), RESIZE_FIRST_S)
            for cmd in to_commands(typed):
                if not await self._submit(cmd):
                    break  # refused (not ready, gone): the rest of this batch would be too

    async def _submit(self, cmd: KeysCommand) -> bool:
        try:
            body = KeysBody(keys=cmd.keys, text=cmd.text or None)
            outcome = await self.state.executor.submit(
                office_id=self.office_id, session_id=self.sid, type=CommandType.SEND_KEYS,
                payload=body, created_by=self.user.sub)
        except ValidationError as err:
            await self._error(422, f"input refused: {err.errors()[0]['msg']}")
            return False
        except SemoError as err:
            await self._error(err.status, err.detail)
            return False
        if not outcome.ok:
            await self._error(outcome.status_code, str(outcome.body.get("detail", "refused")))
            return False
        return True

    # --- resize -------------------------------------------------------------------------------

    def _resize_to(self, rows, cols) -> None:
        if self.read_only:
            return  # a watcher does not change the size of someone else's terminal
        if not isinstance(rows, int) or not isinstance(cols, int):
            return
        self._size = (rows, cols)
        self._size_asked += 1
        self._size_settled.clear()
        self._size_ready.set()

    async def _resize(self) -> None:
        """Latest size wins: a window dragged through fifty sizes costs a few updates."""
        while True:
            await self._size_ready.wait()
            self._size_ready.clear()
            size, asked = self._size, self._size_asked
            try:
                await self._apply_size(size)
            finally:
                if asked == self._size_asked:  # none asked for meanwhile
                    self._size_settled.set()

    async def _apply_size(self, size: tuple[int, int] | None) -> None:
        """One resize update (an error is told to the client, never raised)."""
        if size is None or size == self._size_applied:
            return
        rows, cols = size
        try:
            await self.state.executor.resize(self.session, rows, cols)
            self._size_applied = size
        except SemoError as err:
            await self._error(err.status, f"resize refused: {err.detail}")

    # --- plumbing -----------------------------------------------------------------------------

    async def _send_json(self, payload: dict) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(payload))

    async def _error(self, status: int, detail: str) -> None:
        with contextlib.suppress(Exception):  # the client may be gone already
            await self._send_json({"type": "error", "status": status, "detail": detail})
