from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api import schemas
from api.deps import OfficeRow, SessionRow, State
from db import reads, usage
from semo.errors import NotFound

router = APIRouter(prefix="/api/offices/{office_id}", tags=["jobs", "commands"])


@router.get("/jobs/{job_id}", response_model=schemas.Job)
async def get_job(office: OfficeRow, state: State,
                  job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]):
    job = await reads.get_job(state.pool, office["office_id"], job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} not found in office {office['office_id']!r}")
    job["usage"] = await usage.job_usage(
        state.pool, job_id, job["session_id"], state.settings.prices
    )
    return job


@router.get("/sessions/{session_id}/jobs", response_model=schemas.JobList)
async def list_session_jobs(session: SessionRow, state: State,
                            limit: Annotated[int, Query(ge=1, le=200)] = 20):
    """The session's latest jobs, newest first, each with its events."""
    return {"jobs": await reads.list_jobs(state.pool, session["office_id"], session["session_id"],
                                          limit)}


@router.get("/commands/{command_id}", response_model=schemas.Command)
async def get_command(office: OfficeRow, state: State,
                      command_id: uuid.UUID):
    cmd = await reads.get_command(state.pool, office["office_id"], str(command_id))
    if cmd is None:
        raise NotFound(f"command {str(command_id)!r} not found in office {office['office_id']!r}")
    return cmd
