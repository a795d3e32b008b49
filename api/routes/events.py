"""Live events of offices, for the console (and anyone else): server-sent events.

`GET /api/offices/{office_id}/events` (one office) and `GET /api/events` (every office the
token opens) send

    snapshot  {"sessions": [Session]}: first, and again whenever events may have been missed
    session   Session: a session that changed (status, job, restarts, circuit...); one that
              ended is sent once more, `terminated`, and then no longer
    output    {"session_id", "next_offset"}: the session's terminal printed something
    job       {"job_id", "session_id", "office_id", "status"}: a job ended

Nothing polls: the API's one LISTEN connection (api/live.py) hands the stream every
notification, and the sessions are read again only when one of them (or a session not seen
before, which may be a new one of these offices) changed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette.sse import EventSourceResponse

from api import schemas
from api.deps import CurrentUser, OfficeRow, State, opened_office_ids
from db import reads

router = APIRouter(tags=["events"])

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"description": "`snapshot`, `session`, `output` and `job` events",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
#: session ids of other offices remembered (so their notifications cost nothing), at most
FOREIGN_MAX = 10_000


@router.get("/api/offices/{office_id}/events", response_class=EventSourceResponse,
            responses=_STREAM)
async def office_events(office: OfficeRow, state: State, request: Request):
    office_id = office["office_id"]

    async def scope() -> list[str]:
        return [office_id]

    return EventSourceResponse(_events(state, request, scope), ping=15)


@router.get("/api/events", response_class=EventSourceResponse, responses=_STREAM)
async def all_events(state: State, user: CurrentUser, request: Request):
    async def scope() -> list[str]:
        ids = await opened_office_ids(state, user)
        return [o["office_id"] for o in await reads.list_offices(state.pool, ids)]

    return EventSourceResponse(_events(state, request, scope), ping=15)


def _view(row: dict) -> dict:
    """A session as the REST routes show it."""
    return schemas.Session.model_validate(row).model_dump(mode="json")


def _event(name: str, data: dict) -> dict:
    return {"event": name, "data": json.dumps(data)}


async def _events(state, request: Request, scope: Callable[[], Awaitable[list[str]]]):
    with state.live.tap() as tap:  # before the first read: nothing in between is missed
        offices = await scope()
        known = {r["session_id"]: _view(r)
                 for r in await reads.list_live_sessions_in(state.pool, offices)}
        yield _event("snapshot", {"sessions": list(known.values())})
        foreign: set[str] = set()
        while not await request.is_disconnected():
            notes, lost = await tap.take(15.0)
            changed, outputs, jobs = set(), {}, []
            for channel, payload in notes:
                if channel == "session_status":
                    changed.add(payload)
                elif channel == "session_output":
                    sid, _, end = payload.partition(":")
                    if sid in known and end.isdigit():
                        outputs[sid] = int(end)
                elif channel == "job_events":
                    try:
                        job = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(job, dict) and job.get("office_id") in offices:
                        jobs.append(job)
            if lost or any(sid in known or sid not in foreign for sid in changed):
                offices = await scope()
                fresh = {r["session_id"]: _view(r)
                         for r in await reads.list_live_sessions_in(state.pool, offices)}
                if lost:
                    yield _event("snapshot", {"sessions": list(fresh.values())})
                else:
                    for sid, view in fresh.items():
                        if known.get(sid) != view:
                            yield _event("session", view)
                    for sid in known.keys() - fresh.keys():  # ended (or its office went away)
                        row = await reads.get_session(state.pool, known[sid]["office_id"], sid)
                        if row is not None:
                            yield _event("session", _view(row))
                if len(foreign) > FOREIGN_MAX:
                    foreign.clear()
                foreign |= changed - fresh.keys()
                known = fresh
            for sid, end in outputs.items():
                if sid in known:
                    yield _event("output", {"session_id": sid, "next_offset": end})
            for job in jobs:
                yield _event("job", job)
