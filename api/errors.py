"""Errors as RFC 9457 problem+json, mapped in one place, and documented in the OpenAPI schema.

A request body over `MAX_BODY_BYTES` is refused with a 413 problem before it is read. Nothing
here logs a request's headers or body: a bearer token never reaches a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from semo.errors import SemoError

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"

#: the largest request body the API reads (a prompt is at most 256 KiB): larger is a 413
MAX_BODY_BYTES = 4 * 1024 * 1024

_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem: `detail` says what went wrong and how to fix it.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "command_id": {"type": "string", "description": "the command whose result is pending"},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "for 422: each invalid field (loc, msg, type)"},
    },
}

_DESCRIPTIONS = {
    400: "The body could not be read (not UTF-8)",
    401: "Missing, malformed, expired or wrongly signed token",
    404: "Not found, or not opened by this token",
    409: "Conflict with the current state (busy, not ready, already exists)",
    413: "Request body too large",
    422: "Invalid input",
    429: "The office is at its session cap",
    503: "A dependency (Temporal, the client machine, the JWKS) is unavailable",
    504: "No result in time; the command goes on (read it by `command_id`)",
}


def problem_response(status: int, title: str, detail: str, **extra) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"type": "about:blank" if not extra.get("type") else extra.pop("type"),
                         "title": title, "status": status, "detail": detail, **extra},
                        status_code=status, media_type=PROBLEM, headers=headers)


class _TooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, f"request body over {MAX_BODY_BYTES} bytes")


class BodyLimit:
    """Refuse a request body over `max_bytes` with a 413 problem (Starlette's own limit answers
    text/plain), before anything buffers it: by its Content-Length, or while it streams in."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            too_large = problem_response(413, "Content too large", _TooLarge().detail)
            return await too_large(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()  # FastAPI re-raises it from the body read: a 413 problem
            return message

        return await self.app(scope, limited, send)


def install(app: FastAPI) -> None:
    app.add_middleware(BodyLimit)

    @app.exception_handler(SemoError)
    async def _semo(request: Request, err: SemoError) -> JSONResponse:
        p = err.problem()
        return problem_response(p.pop("status"), p.pop("title"), p.pop("detail"), **p)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        # `input` is left out on purpose: it may be a 2 MB prompt, or a secret sent by mistake
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in err.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(422, "Invalid request", _bounded(detail) or "invalid request",
                                errors=errors[:50])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return problem_response(err.status_code, str(err.detail), str(err.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "Internal error", "an unexpected error occurred; see the API log"
        )

    generate = app.openapi  # FastAPI's own: builds the schema once and keeps it

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bounded(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def document_problems(schema: dict[str, Any]) -> None:
    """Declare the problem+json answers each operation can give (FastAPI only knows 422)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = _PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            statuses: set[int] = set()
            if op.get("security"):
                statuses |= {401, 503}  # 503: the JWKS URL, when used, did not answer
            if op.get("parameters") or op.get("requestBody"):
                statuses.add(422)
            if "{office_id}" in path:
                statuses.add(404)
            if method in ("post", "delete", "put", "patch") and op.get("security"):
                statuses |= {409, 429, 503, 504}
            if op.get("requestBody"):
                statuses |= {400, 413}
            for status in sorted(statuses):
                op["responses"][str(status)] = {
                    "description": _DESCRIPTIONS[status],
                    "content": {PROBLEM: {"schema": ref}},
                }
