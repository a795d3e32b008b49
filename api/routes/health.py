from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import schemas
from api.deps import State
from db.pool import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health)
async def healthz():
    return {"status": "ok", "checks": {}}


@router.get("/readyz", response_model=schemas.Health, responses={503: {"model": schemas.Health}})
async def readyz(state: State):
    """Ready when Postgres and Temporal both answer; says which one does not."""
    checks: dict[str, str] = {}

    async def postgres():
        await ping(state.pool, timeout_s=3)

    async def temporal():
        await state.executor.client.service_client.check_health(timeout=timedelta(seconds=3))

    for name, probe in (("postgres", postgres), ("temporal", temporal)):
        try:
            await asyncio.wait_for(probe(), 5)
            checks[name] = "ok"
        except Exception as err:
            checks[name] = f"down: {type(err).__name__}: {err}"[:300]
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)
