from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api import schemas
from api.deps import CurrentUser, IdempotencyKey, OfficeRow, State, can_open, opened_office_ids
from api.routes import answer
from commands.executor import CommandType
from db import reads, usage
from semo.errors import Conflict
from semo.payloads import Empty, OfficeCreate, OfficeUpdate
from workflows.contracts import PoolSessionView

router = APIRouter(prefix="/api/offices", tags=["offices"])


@router.post("", status_code=201, response_model=schemas.Office)
async def create_office(body: OfficeCreate, state: State, user: CurrentUser, response: Response,
                        idempotency_key: IdempotencyKey = None):
    office_id = body.office_id or f"office-{uuid.uuid4().hex[:10]}"
    existing = await reads.get_office(state.pool, office_id)
    # a retry may replay its first answer, but only to someone the office is open to
    if existing is not None and (idempotency_key is None
                                 or not await can_open(state, user, office_id)):
        raise Conflict(f"office {office_id!r} already exists")
    outcome = await state.executor.submit(
        office_id=office_id, type=CommandType.CREATE_OFFICE, payload=body, created_by=user.sub,
        idempotency_key=idempotency_key)
    return answer(outcome, response)


@router.get("", response_model=schemas.OfficeList)
async def list_offices(state: State, user: CurrentUser):
    offices = await reads.list_offices(state.pool, await opened_office_ids(state, user))
    found = await usage.offices_usage(state.pool, [o["office_id"] for o in offices],
                                      state.settings.prices)
    return {"offices": [{**o, "usage": found[o["office_id"]]} for o in offices]}


@router.get("/{office_id}", response_model=schemas.Office)
async def get_office(office: OfficeRow, state: State):
    """The office with its pool: capacity, sessions in use, and each live session's state."""
    sessions = await reads.list_sessions(state.pool, office["office_id"], live_only=True)
    view = await state.executor.pool_view(office["office_id"])
    pooled = {p.session_id: p for p in view.sessions} if view else {}
    rows = [
        {
            **s,
            "pool_state": _pool_state(pooled[s["session_id"]], s["status"])
            if s["session_id"] in pooled else None,
            "warm": pooled[s["session_id"]].warm if s["session_id"] in pooled else None,
        }
        for s in sessions
    ]
    if view:
        in_use = sum(1 for r in rows if r["pool_state"] == "in_use")
    else:
        in_use = sum(1 for s in sessions if s["status"] != "failed")
    prices = state.settings.prices
    return {**office, "pool": {"capacity": office["max_sessions"], "in_use": in_use,
                               "live": len(sessions),
                               "sessions": await usage.with_usage(state.pool, rows, prices)},
            "usage": await usage.office_usage(state.pool, office["office_id"], prices)}


def _pool_state(entry: PoolSessionView, status: str) -> str:
    """The entry's pool state as of the session's row. A session writes its row before it
    tells the pool it is up, so for a moment the pool still says `starting` for a session
    that is ready: count it as the pool is about to (a cold one is taken by whoever asked
    for it, a warm one waits idle), so a page refreshed on the row's change reads right."""
    if entry.state == "starting" and status in ("ready", "busy", "waiting_input"):
        return "idle" if entry.warm else "in_use"
    return entry.state


@router.patch("/{office_id}", response_model=schemas.Office)
async def update_office(body: OfficeUpdate, office: OfficeRow, state: State, user: CurrentUser,
                        response: Response, idempotency_key: IdempotencyKey = None):
    """Change an office's name, `permission_rules` or `input_timeout_s`; running sessions
    apply new rules to their next request."""
    outcome = await state.executor.submit(
        office_id=office["office_id"], type=CommandType.UPDATE_OFFICE, payload=body,
        created_by=user.sub, idempotency_key=idempotency_key)
    return answer(outcome, response)


@router.delete("/{office_id}", response_model=schemas.OfficeDeleted)
async def delete_office(office: OfficeRow, state: State, user: CurrentUser, response: Response,
                        idempotency_key: IdempotencyKey = None):
    outcome = await state.executor.submit(
        office_id=office["office_id"], type=CommandType.DELETE_OFFICE, payload=Empty(),
        created_by=user.sub, idempotency_key=idempotency_key)
    return answer(outcome, response)
