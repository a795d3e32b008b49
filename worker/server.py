"""The server worker: session and pool workflows, and their Postgres writes (task queue
`semo-server`); webhook deliveries, and the dispatcher that starts them."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.worker import Worker

from activities.records import RecordActivities
from db.pool import open_pool
from semo.observability import ContextInterceptor
from semo.settings import Settings
from semo.temporal import connect
from worker.webhook_dispatch import webhook_runtime
from workflows.changes import HandOffWorkflow, ReadChangesWorkflow
from workflows.pool import OfficePoolWorkflow
from workflows.session import SessionWorkflow
from workflows.webhooks import WebhookEventWorkflow

log = logging.getLogger(__name__)

#: every workflow (for replays too); webhook deliveries run on a queue of their own
#: (worker/webhook_dispatch.py)
WORKFLOWS = [SessionWorkflow, OfficePoolWorkflow, WebhookEventWorkflow, ReadChangesWorkflow,
             HandOffWorkflow]


def build_server_worker(client: Client, settings: Settings, records: RecordActivities) -> Worker:
    return Worker(
        client,
        task_queue=settings.server_task_queue,
        workflows=WORKFLOWS,
        activities=[records.record],
        interceptors=[ContextInterceptor()],
        max_concurrent_local_activities=200,
    )


async def run_server_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings)
    pool = await open_pool(settings.effective_database_url(), max_size=20, name="server-worker")
    try:
        worker = build_server_worker(client, settings, RecordActivities(pool))
        async with worker, webhook_runtime(client, settings):
            log.info("server worker on %s", settings.server_task_queue)
            await stop.wait()
    finally:
        await pool.close()
