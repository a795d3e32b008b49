from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api import schemas
from api.deps import CurrentUser, IdempotencyKey, OfficeRow, State
from api.routes import answer
from db import reads
from semo.errors import Conflict
from semo.payloads import Empty, OfficeCreate

router = APIRouter(prefix="/api/offices", tags=["offices"])


@router.post("", status_code=201, response_model=schemas.Office)
async def create_office(body: OfficeCreate, state: State, user: CurrentUser, response: Response,
                        idempotency_key: IdempotencyKey = None):
    office_id = body.office_id or f"office-{uuid.uuid4().hex[:10]}"
    existing = await reads.get_office(state.pool, office_id)
    if existing is not None and idempotency_key is None:
        raise Conflict(f"office {office_id!r} already exists")
    outcome = await state.executor.submit(
        office_id=office_id, type="create_office", payload=body, created_by=user.sub,
        idempotency_key=idempotency_key)
    return answer(outcome, response)


@router.get("", response_model=schemas.OfficeList)
async def list_offices(state: State, user: CurrentUser):
    ids = None if user.all_offices else sorted(
        set(user.claimed_offices) | set(await reads.member_office_ids(state.pool, user.sub)))
    return {"offices": await reads.list_offices(state.pool, ids)}


@router.get("/{office_id}", response_model=schemas.Office)
async def get_office(office: OfficeRow, state: State):
    sessions = await reads.list_sessions(state.pool, office["office_id"], live_only=True)
    return {**office, "pool": {"capacity": office["max_sessions"], "in_use": len(sessions),
                               "sessions": sessions}}


@router.delete("/{office_id}", response_model=schemas.OfficeDeleted)
async def delete_office(office: OfficeRow, state: State, user: CurrentUser, response: Response,
                        idempotency_key: IdempotencyKey = None):
    outcome = await state.executor.submit(
        office_id=office["office_id"], type="delete_office", payload=Empty(), created_by=user.sub,
        idempotency_key=idempotency_key)
    return answer(outcome, response)
