"""A scripted local STAND-IN for OpenAI's Responses API (not the real service).

Tests point the real Codex CLI at it through a model provider in `$CODEX_HOME/config.toml`
(`base_url = "http://127.0.0.1:<port>/v1"`, `wire_api = "responses"`) and script what "the
model" answers:

    standin = ScriptedResponsesStandIn().start()
    standin.reply_command("touch x")           # an exec_command function call
    standin.reply_text("Created x.\n[SEMO:DONE]")
    ...                                        # drive the CLI
    standin.main_requests()                    # what the model was sent
    standin.stop()

Only *main-turn* requests (those that carry tools: the conversation) take scripted replies,
in order; when the queue is empty they get `default_text`. Codex also sends side requests
without tools (a title for the task); they get a short harmless reply and never consume the
script. Every response and every output item gets a NEW id, as the real service gives.

The stream is what Codex reads: `response.created`, `response.output_item.added`,
`response.output_text.delta` / `response.function_call_arguments.delta`,
`response.output_item.done`, `response.completed` with `usage` (`input_tokens` INCLUDES the
cached ones, `input_tokens_details.cached_tokens` says how many). An error reply answers
with an HTTP error status and an OpenAI error body.

Manual use (prints the base URL, logs every request):

    python -m tests.codex_standin.server --port 8765 --reply "hello [SEMO:DONE]"
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger("codex_standin")

DEFAULT_TEXT = "[stand-in] No scripted reply is queued."
DEFAULT_MODEL = "gpt-5-codex"


@dataclass(frozen=True)
class Message:
    text: str


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    items: list[Message | FunctionCall] = field(default_factory=list)
    #: what `response.completed` reports (input includes cached, as the real API counts)
    input_tokens: int = 100
    cached_tokens: int = 0
    output_tokens: int = 20
    model: str | None = None
    #: an HTTP error instead of a stream
    status: int = 200
    error_message: str = ""
    error_code: str = ""
    #: how long the stream stays open after `response.created` before any output (a slow
    #: model)
    delay_s: float = 0.0

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    def usage(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens}


@dataclass
class Recorded:
    path: str
    kind: str  # "main", "side" or "other"
    body: Any
    reply: Reply | None = None


def is_main_turn(body: Any) -> bool:
    """A conversation request carries tools; a side request (the task title) does not."""
    return isinstance(body, dict) and bool(body.get("tools"))


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


def _chunks(text: str, size: int = 12) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class ScriptedResponsesStandIn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.default_text = DEFAULT_TEXT
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle,
                                           methods=["GET", "POST", "HEAD", "DELETE"])])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle --------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> ScriptedResponsesStandIn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                access_log=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="codex-standin", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Responses API stand-in did not start")
            time.sleep(0.02)
        log.info("Responses API stand-in listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    # -- scripting --------------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        with self._lock:
            self._script.append(reply)

    def reply_text(self, text: str, **usage: Any) -> None:
        self.reply(Reply(items=[Message(text)], **usage))

    def reply_command(self, cmd: str, *, escalated: bool = False, justification: str = "",
                      **usage: Any) -> None:
        """An `exec_command` call; `escalated` asks to leave the sandbox (an approval)."""
        args: dict[str, Any] = {"cmd": cmd}
        if escalated:
            args.update(sandbox_permissions="require_escalated",
                        justification=justification or f"run {cmd}")
        self.reply(Reply(items=[FunctionCall("exec_command", args)], **usage))

    def reply_slow(self, seconds: float, text: str, **usage: Any) -> None:
        """A text reply that starts only after `seconds` (a turn that takes a while)."""
        self.reply(Reply(items=[Message(text)], delay_s=seconds, **usage))

    def reply_error(self, status: int, message: str, code: str = "invalid_request_error",
                    delay_s: float = 0.0) -> None:
        """An HTTP error with an OpenAI error body (`delay_s`: sent only after that long)."""
        self.reply(Reply(status=status, error_message=message, error_code=code,
                         delay_s=delay_s))

    def clear(self) -> None:
        """Forget the script and the requests (a module-wide stand-in between tests)."""
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def main_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.kind == "main"]

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    # -- serving ----------------------------------------------------------------

    def _next_main_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else Reply(items=[Message(self.default_text)])

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path.endswith("/responses"):
            main = is_main_turn(body)
            reply = self._next_main_reply() if main else Reply(items=[Message("Stand-in task")],
                                                               input_tokens=1, output_tokens=1)
            with self._lock:
                self.requests.append(Recorded(path, "main" if main else "side", body, reply))
            log.info("%s %s -> %s", request.method, path, "main" if main else "side")
            if reply.is_error:
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                return JSONResponse({"error": {"message": reply.error_message,
                                               "type": reply.error_code, "code": reply.error_code,
                                               "param": None}}, status_code=reply.status)
            model = reply.model or (body.get("model") if isinstance(body, dict) else None) \
                or DEFAULT_MODEL
            return StreamingResponse(self._stream(reply, model), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        with self._lock:
            self.requests.append(Recorded(path, "other", body))
        log.info("%s %s -> other", request.method, path)
        if request.method == "GET" and path.endswith("/models"):
            return JSONResponse({"object": "list", "data": [], "models": []})
        return JSONResponse({})

    def _id(self, prefix: str) -> str:
        return f"{prefix}_standin_{next(self._ids):06d}_{time.monotonic_ns() % 10**9:09d}"

    async def _stream(self, reply: Reply, model: str) -> AsyncIterator[bytes]:
        resp_id = self._id("resp")
        base = {"id": resp_id, "object": "response", "created_at": int(time.time()),
                "model": model, "status": "in_progress", "output": []}
        yield _sse("response.created", {"response": base})
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        done_items = []
        for index, item in enumerate(reply.items):
            if isinstance(item, Message):
                item_id = self._id("msg")
                added = {"id": item_id, "type": "message", "role": "assistant",
                         "status": "in_progress", "content": []}
                yield _sse("response.output_item.added", {"output_index": index, "item": added})
                for piece in _chunks(item.text):
                    yield _sse("response.output_text.delta",
                               {"item_id": item_id, "output_index": index, "content_index": 0,
                                "delta": piece})
                    await asyncio.sleep(0)
                done = {**added, "status": "completed",
                        "content": [{"type": "output_text", "text": item.text,
                                     "annotations": []}]}
            else:
                item_id, call_id = self._id("fc"), self._id("call")
                arguments = json.dumps(item.arguments)
                added = {"id": item_id, "type": "function_call", "status": "in_progress",
                         "name": item.name, "call_id": call_id, "arguments": ""}
                yield _sse("response.output_item.added", {"output_index": index, "item": added})
                for piece in _chunks(arguments):
                    yield _sse("response.function_call_arguments.delta",
                               {"item_id": item_id, "output_index": index, "delta": piece})
                done = {**added, "status": "completed", "arguments": arguments}
            yield _sse("response.output_item.done", {"output_index": index, "item": done})
            done_items.append(done)
        yield _sse("response.completed",
                   {"response": {**base, "status": "completed", "output": done_items,
                                 "usage": reply.usage()}})


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the scripted Responses API stand-in.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default=None, help="text every main turn answers")
    parser.add_argument("--command", action="append", default=[],
                        help="queue an escalated exec_command call (then --reply texts)")
    parser.add_argument("--dump", action="store_true", help="print each request body")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    standin = ScriptedResponsesStandIn(port=args.port)
    if args.reply is not None:
        standin.default_text = args.reply
    for cmd in args.command:
        standin.reply_command(cmd, escalated=True)
    standin.start()
    print(f"BASE_URL={standin.base_url}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            if args.dump:
                with standin._lock:
                    new, seen = standin.requests[seen:], len(standin.requests)
                for rec in new:
                    print(json.dumps({"path": rec.path, "kind": rec.kind,
                                      "body": rec.body})[:6000], flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
