"""Webhooks in the server worker process: the dispatcher, which starts a delivery workflow
for each event the triggers recorded, and the worker that runs those workflows on a task
queue of their own (`semo-server-webhooks`), so that deliveries, however slow their
receivers, take no slot from sessions' workflow tasks and writes.

The dispatcher's wake-ups Wake-ups: LISTEN on `webhook_events` (NOTIFYed by the
trigger when the state change commits), and a poll every `webhook_dispatch_poll_s` for what a
lost connection missed; at start it drains too, so events recorded while no server worker ran
go out when one comes back. An event is marked dispatched only once its workflow's start is on
record; starting it again (after a crash in between, or from a second server worker) is
refused by Temporal for the same workflow id, which counts as started. So no event is lost,
and none is sent twice under a new id.

The workflow is started with eager start requested: when this process's worker has a slot,
Temporal hands the first workflow task back with the start, saving a poll round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from db import webhooks as db
from db.pool import open_pool
from semo.observability import ContextInterceptor
from semo.settings import Settings
from workflows.webhook_contracts import DeliveryPolicy, WebhookEventInput, webhook_workflow_id
from workflows.webhooks import WebhookEventWorkflow

log = logging.getLogger(__name__)

#: events started per round
BATCH = 200


class WebhookDispatcher:
    def __init__(self, client: Client, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.client = client
        self.pool = pool
        self.settings = settings
        self._wake = asyncio.Event()

    def policy(self) -> DeliveryPolicy:
        s = self.settings
        return DeliveryPolicy(timeout_s=s.webhook_timeout_s, retry_initial_s=s.webhook_retry_initial_s,
                              retry_max_interval_s=s.webhook_retry_max_interval_s,
                              retry_for_s=s.webhook_retry_for_s)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="webhook-listen")
        try:
            while True:
                self._wake.clear()
                try:
                    while await self.drain() == BATCH:
                        pass
                except Exception as err:  # Postgres or Temporal away: the next round retries
                    log.warning("webhook dispatch failed (%s); retrying", err)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.webhook_dispatch_poll_s)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def drain(self) -> int:
        """Start the workflows of up to BATCH undispatched events; how many were started."""
        events = await db.undispatched(self.pool, BATCH)
        if not events:
            return 0
        policy = self.policy()
        # an event whose webhooks were all deleted meanwhile has nothing to start
        started = await asyncio.gather(*(self._start(e["id"], e["webhook_ids"], policy)
                                         for e in events if e["webhook_ids"]),
                                       return_exceptions=True)
        outcomes = iter(started)
        done = []
        for e in events:
            ok = next(outcomes) if e["webhook_ids"] else True
            if ok is True:
                done.append(e["id"])
            else:
                log.warning("could not start the delivery of %s: %s", e["id"], ok)
        if done:
            await db.mark_dispatched(self.pool, done)
        return len(done)

    async def _start(self, event_id: str, webhook_ids: list[str], policy: DeliveryPolicy) -> bool:
        try:
            await self.client.start_workflow(
                WebhookEventWorkflow.run,
                WebhookEventInput(event_id=event_id, webhook_ids=webhook_ids, policy=policy),
                id=webhook_workflow_id(event_id), task_queue=webhook_task_queue(self.settings),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                request_eager_start=True)
        except WorkflowAlreadyStartedError:
            pass  # started before (by us before a crash, or by another server worker)
        return True

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.settings.effective_database_url(), autocommit=True,
                        connect_timeout=10) as conn:
                    await conn.execute("listen webhook_events")
                    self._wake.set()  # what came while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("webhook LISTEN connection lost (%s); reconnecting", err)
                await asyncio.sleep(1.0)


def webhook_task_queue(settings: Settings) -> str:
    return f"{settings.server_task_queue}-webhooks"


@contextlib.asynccontextmanager
async def webhook_runtime(client: Client, settings: Settings) -> AsyncIterator[WebhookDispatcher]:
    """Run the webhook worker and the dispatcher for the duration of the block, on a
    connection pool of their own (as their task queue is: sessions' writes never wait for
    a connection a delivery holds)."""
    pool = await open_pool(settings.effective_database_url(), max_size=10, name="webhooks")
    hooks = WebhookActivities(pool, settings)
    worker = Worker(client, task_queue=webhook_task_queue(settings),
                    workflows=[WebhookEventWorkflow], activities=[hooks.deliver, hooks.give_up],
                    interceptors=[ContextInterceptor()], max_concurrent_activities=100,
                    max_concurrent_local_activities=100)
    dispatcher = WebhookDispatcher(client, pool, settings)
    try:
        async with worker:
            task = asyncio.create_task(dispatcher.run(), name="webhook-dispatch")
            try:
                yield dispatcher
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await hooks.close()
        await pool.close()
