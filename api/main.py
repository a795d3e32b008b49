"""The FastAPI app: wiring only. Clients and pools are made in `lifespan`."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import docs, errors
from api.auth import TokenVerifier, redact_tokens_in_logs
from api.deps import AppState
from api.live import LiveNotifier
from api.routes import (
    attach,
    console,
    events,
    health,
    jobs,
    machines,
    metrics,
    offices,
    sessions,
    usage,
    webhooks,
)
from commands.executor import CommandExecutor
from db.pool import open_pool
from semo.observability import ApiMetrics, RequestContext
from semo.settings import Settings
from semo.temporal import connect


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    verifier = TokenVerifier(settings)  # refuses to build without a secret: fail at start
    redact_tokens_in_logs()  # a WebSocket's `?token=` would otherwise be in request log lines

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = await open_pool(settings.effective_database_url(), max_size=20, name="api")
        client = await connect(settings)
        live = LiveNotifier(settings.effective_database_url(), pool)
        live.start()
        executor = CommandExecutor(client, pool, settings)
        executor.result_listener = live.listen
        app.state.semo = AppState(settings=settings, pool=pool, executor=executor,
                                  verifier=verifier, live=live)
        try:
            yield
        finally:
            await live.close()
            await app.state.semo.executor.claimant.close()
            await pool.close()

    app = FastAPI(
        title="semo-sessions",
        version="0.1.0",
        description="Create, drive, watch and clean up interactive terminal sessions of CLI "
                    "coding agents, each a Temporal workflow.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # docs.install serves them without a CDN
    )
    errors.install(app)
    docs.install(app)
    app.state.metrics = ApiMetrics()
    app.add_middleware(RequestContext, metrics=app.state.metrics)  # ids on log lines, counts
    for router in (health.router, offices.router, sessions.router, jobs.router, attach.router,
                   events.router, metrics.router, usage.router, webhooks.router,
                   machines.router):
        app.include_router(router)
    console.install(app)  # the web console's pages, login and files (/console/...)
    return app
