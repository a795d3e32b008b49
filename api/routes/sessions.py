from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from sse_starlette.sse import EventSourceResponse

from api import schemas
from api.deps import (
    CurrentUser,
    IdempotencyKey,
    OfficeIdPath,
    OfficeRow,
    SessionIdPath,
    SessionRow,
    State,
    check_access,
)
from api.routes import answer
from commands.executor import CommandType
from db import output as output_rows, reads, usage
from semo import hops
from semo.errors import InvalidInput
from semo.payloads import (
    AnswerBody,
    Empty,
    HandOffBody,
    KeysBody,
    PromptBody,
    ReviewBody,
    SessionCreate,
)
from semo.screen import render
from semo.terminal_text import strip_terminal_escapes
from workflows.change_contracts import path_problem

router = APIRouter(prefix="/api/offices/{office_id}/sessions", tags=["sessions"])

SCREEN_REPLAY_BYTES = 1024 * 1024
#: byte offsets are Postgres bigints
MAX_OFFSET = 2**63 - 1


@router.post("", status_code=201, response_model=schemas.SessionCreated)
async def create_session(body: SessionCreate, office: OfficeRow, state: State, user: CurrentUser,
                         response: Response, idempotency_key: IdempotencyKey = None):
    outcome = await state.executor.submit(
        office_id=office["office_id"], type=CommandType.CREATE_SESSION, payload=body,
        created_by=user.sub, idempotency_key=idempotency_key)
    return answer(outcome, response)


@router.get("", response_model=schemas.SessionList)
async def list_sessions(office: OfficeRow, state: State):
    sessions = await reads.list_sessions(state.pool, office["office_id"])
    return {"sessions": await usage.with_usage(state.pool, sessions, state.settings.prices)}


@router.get("/{session_id}", response_model=schemas.Session)
async def get_session(session: SessionRow, state: State):
    return (await usage.with_usage(state.pool, [session], state.settings.prices))[0]


async def _command(state, user, office_id, session_id, response, type_, payload, idempotency_key):
    """A session's command. The executor finds the session in the statement that records
    the command (a 404 records nothing); access is decided first, from the token, as for
    any office route."""
    await check_access(state, user, office_id)
    outcome = await state.executor.submit(
        office_id=office_id, session_id=session_id, type=type_, payload=payload,
        created_by=user.sub, idempotency_key=idempotency_key)
    return answer(outcome, response)


@router.delete("/{session_id}", response_model=schemas.Terminated)
async def terminate_session(office_id: OfficeIdPath, session_id: SessionIdPath, state: State,
                            user: CurrentUser, response: Response,
                            idempotency_key: IdempotencyKey = None):
    return await _command(state, user, office_id, session_id, response,
                          CommandType.TERMINATE, Empty(), idempotency_key)


@router.post("/{session_id}/release", response_model=schemas.Released)
async def release(office_id: OfficeIdPath, session_id: SessionIdPath, state: State,
                  user: CurrentUser, response: Response, idempotency_key: IdempotencyKey = None):
    """Hand the session back to the office pool, idle, for the next acquire of its role."""
    return await _command(state, user, office_id, session_id, response, CommandType.RELEASE_SESSION,
                          Empty(), idempotency_key)


@router.post("/{session_id}/prompt", response_model=schemas.PromptSent)
async def prompt(body: PromptBody, office_id: OfficeIdPath, session_id: SessionIdPath,
                 state: State, user: CurrentUser, response: Response,
                 idempotency_key: IdempotencyKey = None):
    return await _command(state, user, office_id, session_id, response,
                          CommandType.SEND_PROMPT, body, idempotency_key)


@router.post("/{session_id}/cancel", response_model=schemas.Ack)
async def cancel(office_id: OfficeIdPath, session_id: SessionIdPath, state: State,
                 user: CurrentUser, response: Response, idempotency_key: IdempotencyKey = None):
    return await _command(state, user, office_id, session_id, response,
                          CommandType.CANCEL, Empty(), idempotency_key)


@router.post("/{session_id}/keys", response_model=schemas.Ack)
async def keys(body: KeysBody, office_id: OfficeIdPath, session_id: SessionIdPath, state: State,
               user: CurrentUser, response: Response, idempotency_key: IdempotencyKey = None):
    return await _command(state, user, office_id, session_id, response,
                          CommandType.SEND_KEYS, body, idempotency_key)


@router.post(
    "/{session_id}/answer",
    response_model=schemas.Answered,
    responses={
        409: {"description": "input_id is not the pending input (answered already, or gone)"},
        422: {"description": "the answer does not fit the input's kind"},
    },
)
async def answer_input(body: AnswerBody, office_id: OfficeIdPath, session_id: SessionIdPath,
                       state: State, user: CurrentUser, response: Response,
                       idempotency_key: IdempotencyKey = None):
    """Answer the session's `pending_input`: a permission with `decision` (and `remember`),
    a question with one of its `options` or `text`, a plan with `decision`."""
    return await _command(state, user, office_id, session_id, response,
                          CommandType.ANSWER_INPUT, body, idempotency_key)


_NO_REPOSITORY: dict[int | str, dict[str, Any]] = {
    409: {"description": "the session's office names no repository"}}


@router.get("/{session_id}/changes", response_model=schemas.Changes,
            responses={**_NO_REPOSITORY, 503: {"description": "the machine did not answer"}})
async def changes(session: SessionRow, office: OfficeRow, state: State,
                  path: Annotated[str | None, Query(
                      max_length=4096, description="only this file (as `files` lists it)")] = None):
    """The work in the session's worktree, committed and not (untracked files included),
    against the commit its branch started from; read by git on the session's machine."""
    if path is not None and (problem := path_problem(path)):
        raise InvalidInput(problem)
    changes = await state.executor.read_changes(office, session, path)
    return changes.model_dump(mode="json")


@router.post("/{session_id}/review", status_code=201, response_model=schemas.ReviewSent,
             responses={**_NO_REPOSITORY, 422: {"description": "a comment is not on the changes"}})
async def review(body: ReviewBody, office_id: OfficeIdPath, session_id: SessionIdPath,
                 state: State, user: CurrentUser, response: Response,
                 idempotency_key: IdempotencyKey = None):
    """One prompt to the agent quoting each comment at its file and line (a job, as
    `/prompt`)."""
    return await _command(state, user, office_id, session_id, response,
                          CommandType.SEND_REVIEW, body, idempotency_key)


@router.post("/{session_id}/handoff", response_model=schemas.HandedOff,
             response_model_exclude_none=True,
             responses={409: {"description": "no repository, busy, or nothing to hand off"}})
async def handoff(office_id: OfficeIdPath, session_id: SessionIdPath, state: State,
                  user: CurrentUser, response: Response, body: HandOffBody | None = None,
                  idempotency_key: IdempotencyKey = None):
    """Commit what is uncommitted, push the session's branch, and (asked and configured)
    open a pull request, all on the session's machine with its own credentials. The body
    may be left out: the defaults push, and open no pull request."""
    return await _command(state, user, office_id, session_id, response,
                          CommandType.HAND_OFF, body or HandOffBody(), idempotency_key)


#: an escape sequence that the end of a page cuts off (CSI, OSC/DCS/..., or ESC + intermediates)
_CUT_ESCAPE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|[\]PX^_][^\x07\x1b]*|[ -/]*)\Z")


def _text_end(data: bytes) -> int:
    """How much of a page `format=text` may show: not an escape sequence or UTF-8 character
    cut off at its end (the next page, which starts there, shows it whole). May be 0."""
    end = len(data)
    esc = data.rfind(b"\x1b", max(0, end - 4200))
    if esc >= 0 and _CUT_ESCAPE.match(data, esc):
        end = esc
    for back in range(1, min(4, end + 1)):
        lead = data[end - back]
        if lead & 0xC0 != 0x80:  # the last character's first byte
            need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else \
                4 if lead >> 3 == 0b11110 else 1
            if need > back:
                end -= back
            break
    return end


def _encode(data: bytes, fmt: str) -> str:
    if fmt == "raw":
        return data.decode("utf-8", errors="surrogateescape").encode(
            "utf-8", errors="backslashreplace").decode("utf-8")
    return strip_terminal_escapes(data)


@router.get("/{session_id}/output", response_model=schemas.Output)
async def output(session: SessionRow, state: State,
                 since: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 limit: Annotated[int, Query(ge=1, le=1024 * 1024)] = 65536,
                 format: Literal["text", "raw"] = "text",
                 tail: Annotated[int | None, Query(
                     ge=1, le=1024 * 1024,
                     description="Start this many bytes before the end instead of at `since` "
                                 "(what `tail` shows; the first line may be cut)")] = None):
    if tail is not None:
        _, end = await output_rows.bounds(state.pool, session["session_id"])
        since = max(0, end - tail)
    start, next_offset, data, kept_from = await output_rows.read(
        state.pool, session["session_id"], since, limit)
    if format == "text":
        data = data[:_text_end(data) or len(data)]  # a page must move on, even if cut
        next_offset = start + len(data)
    return {"session_id": session["session_id"], "since": start, "next_offset": next_offset,
            "data": _encode(data, format), "format": format,
            "truncated_before": kept_from if kept_from > since else None}


@router.get("/{session_id}/output/stream", response_class=EventSourceResponse, responses={
    200: {"description": "`output` and `status` events",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def output_stream(session: SessionRow, state: State, request: Request,
                        since: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                        format: Literal["text", "raw"] = "raw"):
    """Server-sent events: `output` (data from the raw stream) and `status` (on change)."""
    sid, office_id = session["session_id"], session["office_id"]

    async def events():
        offset, status, pending = since, None, None
        with state.live.viewing(sid):  # its output is saved ahead of the fleet's
            while not await request.is_disconnected():
                woken = state.live.listen(sid)  # before reading: no wake-up is missed
                start, next_offset, data, _ = await output_rows.read(state.pool, sid, offset,
                                                                      256 * 1024)
                if format == "text":  # wait for the rest of a character or escape sequence
                    data = data[:_text_end(data)]
                    next_offset = start + len(data)
                if data:
                    traced = hops.on(sid)
                    if traced:
                        hops.mark("sse_read", sid, next_offset)
                    yield {"event": "output", "id": str(next_offset),
                           "data": json.dumps({"offset": start, "next_offset": next_offset,
                                               "data": _encode(data, format)})}
                    if traced:
                        hops.mark("sse_sent", sid, next_offset)
                    offset = next_offset
                    continue
                row = await reads.get_session(state.pool, office_id, sid)
                if row and (row["status"], row["pending_input"]) != (status, pending):
                    status, pending = row["status"], row["pending_input"]
                    yield {"event": "status", "data": json.dumps(
                        {"status": status, "current_job_id": row["current_job_id"],
                         "pending_input": pending}, default=str)}
                    if status == "terminated":
                        return
                # output and status changes both notify; the timeout only bounds a lost connection
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), 15.0)

    return EventSourceResponse(events(), ping=15)


@router.get("/{session_id}/screen", response_model=schemas.Screen)
async def screen(session: SessionRow, state: State):
    _, end = await output_rows.bounds(state.pool, session["session_id"])
    start = max(0, end - SCREEN_REPLAY_BYTES)
    _, _, data, _ = await output_rows.read(state.pool, session["session_id"], start,
                                            SCREEN_REPLAY_BYTES)
    return await asyncio.to_thread(render, data, session["rows"], session["cols"])


