"""`GET /api/machines`: the client machines an office's sessions may run on, with what each
can run (its agent profiles, and whether each profile's program was found there)."""

from __future__ import annotations

from fastapi import APIRouter

from api import schemas
from api.deps import CurrentUser, State, opened_office_ids
from db import machines

router = APIRouter(prefix="/api/machines", tags=["machines"])


@router.get("", response_model=schemas.MachineList)
async def list_machines(state: State, user: CurrentUser):
    """Every registered machine (a token may create an office on any of them); its live
    sessions are counted in the offices this token opens."""
    return {"machines": await machines.list_all(state.pool,
                                                await opened_office_ids(state, user))}
