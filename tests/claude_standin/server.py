"""A scripted local STAND-IN for the Anthropic Messages API (not the real service).

Tests point the real Claude Code CLI at it with `ANTHROPIC_BASE_URL=http://127.0.0.1:<port>`
and script what "the model" answers:

    standin = ScriptedAnthropicStandIn().start()
    standin.reply_tool_use("Bash", {"command": "touch x", "description": "Create x"})
    standin.reply_text("Created x.\n[SEMO:DONE]")
    ...                      # drive the CLI
    standin.main_requests()  # what the model was sent
    standin.stop()

Only *main-turn* requests (the conversation the user typed into: a request that
carries tools) take scripted replies, in order; when the queue is empty they get
`default_reply`. Claude Code also sends *side* requests without tools (2.1.330
asks for a session title, as JSON, on the same model, unless
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1); those get a short harmless reply
(JSON when asked for a JSON schema) and never consume the script. Every request is recorded
(`requests`) and logged, so a test can see what the CLI called and sent.

It serves `POST /v1/messages` (streaming SSE or JSON), `POST /v1/messages/count_tokens`,
`GET /v1/models`, and answers anything else (2.1.330 sends `HEAD /api/hello` as a
connectivity check when non-essential traffic is allowed) with an empty 200 JSON object.

Manual use (prints the base URL, logs every request):

    python -m tests.claude_standin.server --port 8765 --reply "hello [SEMO:DONE]"
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger("claude_standin")

DEFAULT_TEXT = "[stand-in] No scripted reply is queued."
#: what a reply reports when its script names no usage
DEFAULT_USAGE = {"input_tokens": 10, "output_tokens": 10, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]


@dataclass
class Reply:
    """One scripted answer to a main-turn request.

    `status` >= 400 makes it an HTTP error with an Anthropic error body.
    `delay_s` holds the stream open after `message_start` before any content
    (a slow model); `times` repeats the reply for that many requests (an error
    that survives the CLI's own retries needs several). `usage` is what the reply
    reports (`input_tokens`, `output_tokens`, `cache_read_input_tokens`,
    `cache_creation_input_tokens`; missing ones default to DEFAULT_USAGE) and `model`
    the model it names (default: the one requested). `match`, when given, makes the reply
    wait in the queue for a request whose body it accepts (a subagent's request, say), while
    other requests take the replies after it.
    """

    blocks: list[TextBlock | ToolUseBlock] = field(default_factory=list)
    stop_reason: str = "end_turn"
    status: int = 200
    error_type: str | None = None
    error_message: str = ""
    delay_s: float = 0.0
    times: int = 1
    usage: dict[str, int] | None = None
    model: str | None = None
    match: Callable[[dict[str, Any]], bool] | None = None

    def reported_usage(self) -> dict[str, int]:
        return {**DEFAULT_USAGE, **(self.usage or {})}

    @property
    def is_error(self) -> bool:
        return self.status >= 400


@dataclass
class RecordedRequest:
    """One HTTP request the stand-in received."""

    at: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    kind: str  # "main", "side" or "other"
    reply: Reply | None = None

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    def last_user_text(self) -> str:
        """Text of the last user message (text blocks and tool results joined)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""

    def tool_results(self) -> list[dict[str, Any]]:
        """tool_result blocks of the last user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
                return []
        return []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_content_text(block.get("content")))
    return "\n".join(parts)


def is_main_turn(body: Any) -> bool:
    """True for a request of the user's conversation, False for a side request.

    Verified with Claude Code 2.1.330: the conversation turn always sends the tool
    list (13 tools); side requests (the session-title request, sent on the *same*
    model, so the model cannot tell them apart) send `"tools": []`.
    """
    return isinstance(body, dict) and bool(body.get("tools"))


def _sample(schema: dict[str, Any], text: str) -> Any:
    """A small value that satisfies a simple JSON schema (strings get `text`)."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: _sample(props.get(name) or {}, text) for name in required}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    return text


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str, size: int = 24) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ScriptedAnthropicStandIn:
    """Scripted stand-in for the Anthropic Messages API on 127.0.0.1 (a test double).

    Thread-safe: it runs uvicorn in a background thread; the scripting methods
    may be called from the test thread at any time.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.default_reply = Reply(blocks=[TextBlock(DEFAULT_TEXT)])
        self.side_reply_text = "Scripted session"
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])]
        )

    # -- lifecycle -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ScriptedAnthropicStandIn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="claude-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Anthropic stand-in did not start")
            time.sleep(0.02)
        log.info("Anthropic stand-in listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> ScriptedAnthropicStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------

    def new_tool_use_id(self) -> str:
        return f"toolu_standin_{next(self._ids):06d}"

    def enqueue(self, reply: Reply) -> Reply:
        with self._changed:
            self._queue.append(reply)
            self._changed.notify_all()
        return reply

    def reply_text(self, text: str, *, usage: dict[str, int] | None = None,
                   model: str | None = None,
                   match: Callable[[dict[str, Any]], bool] | None = None) -> Reply:
        """The next main turn answers `text` (reporting `usage`, see Reply) and ends the turn."""
        return self.enqueue(Reply(blocks=[TextBlock(text)], usage=usage, model=model, match=match))

    def reply_tool_use(self, name: str, tool_input: dict[str, Any], *, text: str | None = None,
                       usage: dict[str, int] | None = None, model: str | None = None) -> str:
        """The next main turn calls tool `name` (optionally after some text); returns the tool_use id.

        The CLI runs the tool (asking permission first where needed) and sends the
        result in its next request, which takes the next queued reply.
        """
        tool_id = self.new_tool_use_id()
        blocks: list[TextBlock | ToolUseBlock] = [TextBlock(text)] if text else []
        blocks.append(ToolUseBlock(tool_id, name, dict(tool_input)))
        self.enqueue(Reply(blocks=blocks, stop_reason="tool_use", usage=usage, model=model))
        return tool_id

    def reply_error(
        self, status: int = 500, message: str = "Internal server error", *, error_type: str | None = None, times: int = 1
    ) -> Reply:
        """The next `times` main-turn requests fail with HTTP `status` and an Anthropic error body."""
        return self.enqueue(
            Reply(status=status, error_type=error_type or _ERROR_TYPES.get(status, "api_error"),
                  error_message=message, times=times)
        )

    def reply_slow(self, seconds: float, text: str) -> Reply:
        """The next main turn starts streaming, stalls `seconds`, then answers `text`."""
        return self.enqueue(Reply(blocks=[TextBlock(text)], delay_s=seconds))

    def pending(self) -> int:
        with self._lock:
            return sum(r.times for r in self._queue)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    # -- inspection ------------------------------------------------------------

    def main_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.kind == "main"]

    def paths(self) -> list[str]:
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout_s: float) -> bool:
        """Block until `predicate(requests)` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(list(self.requests)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    # -- HTTP ------------------------------------------------------------------

    def _record(self, request: Request, body: Any, kind: str) -> RecordedRequest:
        rec = RecordedRequest(
            at=time.time(),
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            kind=kind,
        )
        with self._changed:
            self.requests.append(rec)
            self._changed.notify_all()
        log.info("stand-in %s %s%s kind=%s model=%s", request.method, request.url.path,
                 f"?{request.url.query}" if request.url.query else "", kind, rec.model)
        return rec

    def _next_main_reply(self, body: Any) -> Reply:
        with self._lock:
            reply = next((r for r in self._queue
                          if r.match is None or (isinstance(body, dict) and r.match(body))), None)
            if reply is None:
                return self.default_reply
            reply.times -= 1
            if reply.times <= 0:
                self._queue.remove(reply)
            return reply

    def _side_reply(self, body: Any) -> Reply:
        """A harmless answer to a side request; JSON when the request asks for a JSON schema.

        Claude Code 2.1.330 names the session with a tool-less request whose
        `output_config.format` is `{"type": "json_schema", ...}` asking for `{"title": ...}`.
        """
        fmt = (body.get("output_config") or {}).get("format") if isinstance(body, dict) else None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return Reply(blocks=[TextBlock(json.dumps(_sample(fmt.get("schema") or {}, self.side_reply_text)))])
        return Reply(blocks=[TextBlock(self.side_reply_text)])

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        path = request.url.path.rstrip("/")

        if request.method == "POST" and path == "/v1/messages":
            main = is_main_turn(body)
            rec = self._record(request, body, "main" if main else "side")
            reply = self._next_main_reply(body) if main else self._side_reply(body)
            rec.reply = reply
            return self._message_response(reply, body if isinstance(body, dict) else {})
        self._record(request, body, "other")
        if request.method == "POST" and path == "/v1/messages/count_tokens":
            return JSONResponse({"input_tokens": max(1, len(raw) // 4)})
        if request.method == "GET" and path == "/v1/models":
            return JSONResponse(
                {
                    "data": [
                        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                        for m in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
                    ],
                    "has_more": False,
                    "first_id": "claude-sonnet-4-5",
                    "last_id": "claude-opus-4-1",
                }
            )
        return JSONResponse({})

    def _message_response(self, reply: Reply, body: dict[str, Any]) -> Response:
        headers = {"request-id": f"req_standin_{next(self._ids):06d}"}
        if reply.is_error:
            headers["x-should-retry"] = "true" if reply.status >= 500 or reply.status == 429 else "false"
            return JSONResponse(
                {"type": "error", "error": {"type": reply.error_type, "message": reply.error_message}},
                status_code=reply.status,
                headers=headers,
            )
        model = reply.model or body.get("model") or "claude-sonnet-4-5"
        msg_id = f"msg_standin_{next(self._ids):06d}"  # every reply its own id
        usage = reply.reported_usage()
        if not body.get("stream"):
            content = [
                {"type": "text", "text": b.text}
                if isinstance(b, TextBlock)
                else {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
                for b in reply.blocks
            ]
            return JSONResponse(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": reply.stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                },
                headers=headers,
            )
        return StreamingResponse(
            self._stream(reply, model, msg_id, usage),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    async def _stream(self, reply: Reply, model: str, msg_id: str,
                      usage: dict[str, int]) -> AsyncIterator[bytes]:
        # as the real API does: the input side in message_start (output_tokens 1 so far),
        # the final output count in message_delta
        yield _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": 1},
                },
            },
        )
        if reply.delay_s:
            # Keep the connection visibly alive while "thinking", like the real API.
            deadline = time.monotonic() + reply.delay_s
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(1.0, left))
                yield _sse("ping", {"type": "ping"})
        for index, block in enumerate(reply.blocks):
            if isinstance(block, TextBlock):
                yield _sse("content_block_start",
                           {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
                for piece in _chunks(block.text):
                    yield _sse("content_block_delta",
                               {"type": "content_block_delta", "index": index,
                                "delta": {"type": "text_delta", "text": piece}})
            else:
                yield _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index,
                     "content_block": {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}},
                )
                for piece in _chunks(json.dumps(block.input)):
                    yield _sse("content_block_delta",
                               {"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece}})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        yield _sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
             "usage": {"output_tokens": usage["output_tokens"]}},
        )
        yield _sse("message_stop", {"type": "message_stop"})


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the scripted Anthropic API stand-in (a local test double).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default=None, help="text every main turn answers (the default reply)")
    parser.add_argument("--dump", action="store_true", help="log each request body as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # SIGTERM stops it like Ctrl+C does (a background job in a script ignores SIGINT).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    standin = ScriptedAnthropicStandIn(port=args.port)
    if args.reply is not None:
        standin.default_reply = Reply(blocks=[TextBlock(args.reply)])
    standin.start()
    print(f"ANTHROPIC_BASE_URL={standin.base_url}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            if args.dump:
                with standin._lock:
                    new = standin.requests[seen:]
                    seen = len(standin.requests)
                for rec in new:
                    print(json.dumps({"path": rec.path, "kind": rec.kind, "headers": rec.headers,
                                      "body": rec.body})[:20000], flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
