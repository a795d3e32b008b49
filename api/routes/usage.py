"""`GET /api/offices/{office_id}/usage`: token usage and cost of an office, as a table."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api import schemas
from api.deps import OfficeRow, State
from db import usage
from semo.errors import InvalidInput

router = APIRouter(prefix="/api/offices/{office_id}", tags=["usage"])


@router.get("/usage", response_model=schemas.UsageTable)
async def get_usage(
        office: OfficeRow, state: State,
        since: Annotated[datetime | None, Query(
            description="responses answered at or after this time (ISO 8601 with a zone)")] = None,
        until: Annotated[datetime | None, Query(
            description="responses answered before this time (ISO 8601 with a zone)")] = None,
        group_by: Annotated[Literal["session", "role", "day"], Query(
            description="one row per session, per role, or per UTC day")] = "session"):
    """The office's model responses in [since, until), summed per key and in total, priced
    per model (`cost_usd` null when a model has no price)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} {value.isoformat()!r} has no time zone; add one, "
                               "e.g. Z or +00:00")
    if since is not None and until is not None and since >= until:
        raise InvalidInput(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
        )
    return await usage.usage_table(state.pool, office["office_id"], group_by, since, until,
                                   state.settings.prices)
