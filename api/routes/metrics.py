"""`GET /metrics`: the API's Prometheus metrics (semo/observability.py says what they are).

Unauthenticated, like the health checks and as scrape targets usually are: it carries counts
only, never an office, session or user id. Left out of the OpenAPI schema (it is not JSON).
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request, Response

from db.reads import fleet_counts
from semo.observability import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    state = getattr(request.app.state, "semo", None)
    if state is not None:
        try:
            counts = await fleet_counts(state.pool)
        except Exception as err:  # a scrape still answers, with what the process knows
            log.warning("metrics: Postgres gauges not read", error=str(err))
            counts = None
        metrics.set_counts(counts)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
