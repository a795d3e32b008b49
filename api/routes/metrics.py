"""`GET /metrics`: the API's Prometheus metrics (semo/observability.py says what they are).

Unauthenticated, like the health checks and as scrape targets usually are: it carries counts
only, never an office, session or user id. Left out of the OpenAPI schema (it is not JSON).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from semo.observability import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    state = getattr(request.app.state, "semo", None)
    if state is not None:
        await metrics.refresh_from(state.pool)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
