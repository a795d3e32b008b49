"""The hook server: Claude Code's hook events arrive over a Unix socket from hook_relay.py,
and a held hook's answer goes back the same way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.claude.constants import MAX_LINE_BYTES
from semo.settings import Settings

log = logging.getLogger(__name__)


def _answers(path: Path) -> bool:
    """Whether a process listens on the Unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


# --- the hook server ---------------------------------------------------------------------------


def socket_path(settings: Settings) -> Path:
    """Where this worker listens for hooks: `home/run/` (or SEMO_HOOK_SOCKET_DIR), or a
    private folder under the temp dir when that path is too long for a Unix socket."""
    name = f"hooks-{settings.machine_id[:32]}-{os.getpid()}.sock"
    base = (settings.hook_socket_dir or settings.home / "run").expanduser().resolve()
    if len(os.fsencode(base / name)) <= 100:
        return base / name
    digest = hashlib.sha256(os.fsencode(base)).hexdigest()[:12]
    return (
        Path(tempfile.gettempdir()) / f"semo-{os.getuid()}" / f"hooks-{digest}-{os.getpid()}.sock"
    )


def _private_dir(path: Path) -> None:
    """Create `path` (0700) or check that it is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is not a directory owned by this user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(0o700)


#: a handler may return a future: the relay then waits for its decision (an output for
#: Claude Code, or None for none) for up to the server's `hold_s`
HookHandler = Callable[[dict], "asyncio.Future[dict | None] | None"]


class HookServer:
    """The Unix socket hook relays talk to; one per client worker.

    A message is one JSON line `{"session_id", "token", "event"}`; it is handed to the
    session's handler only when the token is that session's (constant-time compare)."""

    def __init__(self, path: Path, hold_s: float = 600.0) -> None:
        self.path = path
        self.hold_s = hold_s
        self._routes: dict[str, tuple[str, HookHandler]] = {}
        self._server: asyncio.AbstractServer | None = None
        #: the sockets of dead workers whose agents this one adopted (listen_also)
        self._also: dict[Path, asyncio.AbstractServer] = {}
        self._lock = asyncio.Lock()
        self.denied = 0

    async def start(self) -> None:
        async with self._lock:
            if self._server is not None:
                return
            _private_dir(self.path.parent)
            if self.path.exists() or self.path.is_symlink():
                self.path.unlink()  # left by a worker that died; our pid is in the name
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_LINE_BYTES)
            self.path.chmod(0o600)
            log.info("Claude Code hooks on %s", self.path)

    def register(self, session_id: str, handler: HookHandler, token: str | None = None) -> str:
        """The session's secret (fresh, or `token`: an adopted agent's, which its relay
        still sends), replacing any earlier route; returns it."""
        token = token or secrets.token_urlsafe(32)
        self._routes[session_id] = (token, handler)
        return token

    async def listen_also(self, path: Path) -> None:
        """Take over `path` too: the socket of a dead worker whose agents this one adopted
        (their relays still name it). Only a socket nobody answers on is taken: a live
        worker's is its own."""
        async with self._lock:
            if path == self.path or path in self._also:
                return
            _private_dir(path.parent)
            if await asyncio.to_thread(_answers, path):
                raise OSError(f"{path} is a live worker's hook socket")
            if path.exists() or path.is_symlink():
                path.unlink()
            self._also[path] = await asyncio.start_unix_server(self._client, path=str(path),
                                                               limit=MAX_LINE_BYTES)
            path.chmod(0o600)
            log.info("Claude Code hooks on %s too (adopted agents)", path)

    def unregister(self, session_id: str, handler: HookHandler | None = None) -> None:
        route = self._routes.get(session_id)
        if route is not None and (handler is None or route[1] == handler):
            del self._routes[session_id]

    async def close(self) -> None:
        servers = {**self._also, **({self.path: self._server} if self._server else {})}
        self._server, self._also = None, {}
        for path, server in servers.items():
            server.close()
            await server.wait_closed()
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = b"denied\n"
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            msg = json.loads(line)
            session_id, token, event = msg["session_id"], msg["token"], msg["event"]
            route = self._routes.get(session_id) if isinstance(session_id, str) else None
            if (route is not None and isinstance(token, str) and isinstance(event, dict)
                    and hmac.compare_digest(token.encode(), route[0].encode())):
                held = route[1](event)
                answer = b"ok\n"
                if held is not None:  # a decision may come: wait for it, bounded
                    try:
                        output = await asyncio.wait_for(held, self.hold_s)
                    except TimeoutError:
                        output = None  # Claude Code shows its own dialog; keys answer it
                    if output:
                        answer = json.dumps({"output": output}).encode() + b"\n"
            else:
                self.denied += 1
                log.warning("hook event for session %r refused: unknown session or wrong secret",
                            str(session_id)[:80])
        except (
            TimeoutError,
            ValueError,
            KeyError,
            TypeError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ) as err:
            log.warning("bad hook message: %s", type(err).__name__)
        except Exception:
            log.exception("hook handler failed")
        try:
            writer.write(answer)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


@dataclass
class Held:
    """A hook holding its relay until a person (or a rule, or a timeout) decides."""

    kind: str
    event: dict
    future: asyncio.Future
    options: list[str]


def decision_output(held: Held, decision: str | None, option: str | None, text: str | None,
                    remember: bool) -> dict[str, Any]:
    """What the held hook prints for Claude Code (its hookSpecificOutput)."""
    event = held.event
    if held.kind == "permission":
        verdict: dict[str, Any] = {"behavior": decision or "deny"}
        if decision == "allow" and remember:
            # "always allow": Claude Code's own suggestions for this request, except a
            # change of permission mode (that would allow far more than was asked)
            kept = [sug for sug in event.get("permission_suggestions") or []
                    if isinstance(sug, dict) and sug.get("type") != "setMode"]
            if kept:
                verdict["updatedPermissions"] = kept
        if decision != "allow":
            verdict["message"] = text or "Denied through semo."
        return {"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": verdict}}
    if held.kind == "question":
        tool_input = event.get("tool_input") if isinstance(event.get("tool_input"), dict) else {}
        questions = [q for q in tool_input.get("questions") or [] if isinstance(q, dict)]
        first = str(questions[0].get("question")) if questions else ""
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "allow",
                "updatedInput": {
                    **tool_input,
                    "answers": {first: option if option is not None else text},
                },
            }
        }
    out: dict[str, Any] = {"hookEventName": "PreToolUse",
                           "permissionDecision": "allow" if decision == "allow" else "deny"}
    if decision != "allow":
        out["permissionDecisionReason"] = text or "Not approved yet: keep planning."
    return {"hookSpecificOutput": out}
