"""The server worker: session and pool workflows, and their Postgres writes (task queue
`semo-server`); webhook deliveries, and the dispatcher that starts them."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.worker import Worker

from activities.records import RecordActivities
from activities.webhooks import WebhookActivities
from db.pool import open_pool
from semo.observability import ContextInterceptor
from semo.settings import Settings
from semo.temporal import connect
from worker.webhook_dispatch import webhook_dispatcher
from workflows.pool import OfficePoolWorkflow
from workflows.session import SessionWorkflow
from workflows.webhooks import WebhookEventWorkflow

log = logging.getLogger(__name__)

WORKFLOWS = [SessionWorkflow, OfficePoolWorkflow, WebhookEventWorkflow]


def build_server_worker(client: Client, settings: Settings, records: RecordActivities) -> Worker:
    hooks = WebhookActivities(records.pool, settings)
    return Worker(
        client,
        task_queue=settings.server_task_queue,
        workflows=WORKFLOWS,
        activities=[records.record, hooks.deliver, hooks.give_up],
        interceptors=[ContextInterceptor()],
        max_concurrent_local_activities=200,
    )


async def run_server_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings)
    pool = await open_pool(settings.effective_database_url(), max_size=20, name="server-worker")
    try:
        worker = build_server_worker(client, settings, RecordActivities(pool))
        async with worker, webhook_dispatcher(client, pool, settings):
            log.info("server worker on %s", settings.server_task_queue)
            await stop.wait()
    finally:
        await pool.close()
