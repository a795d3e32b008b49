"""Webhooks in the server worker process: the dispatcher, which starts a delivery workflow
for each event the triggers recorded, and the worker that runs those workflows on a task
queue of their own (`semo-server-webhooks`), so that deliveries, however slow their
receivers, take no slot from sessions' workflow tasks and writes.

The dispatcher starts an event's workflow as soon as the trigger's NOTIFY on `webhook_events`
names it (when the state change commits), and sweeps for undispatched events at start, after
a reconnect and every `webhook_dispatch_poll_s`, so events recorded while no server worker ran
(or while its LISTEN connection was down) go out when one is back. An event is marked
dispatched only once its workflow's start is on record; starting it again (after a crash in
between, or from a second server worker) is refused by Temporal for the same workflow id,
which counts as started. So no event is lost, and none is sent twice under a new id.

The workflow is started with eager start requested: when this process's worker has a slot,
Temporal hands the first workflow task back with the start, saving a poll round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from db import webhooks as db
from db.notify import listen
from db.pool import open_pool
from semo.observability import ContextInterceptor
from semo.settings import Settings
from workflows.webhook_contracts import DeliveryPolicy, WebhookEventInput, webhook_workflow_id
from workflows.webhooks import WebhookEventWorkflow

log = logging.getLogger(__name__)

#: events looked up per sweep
BATCH = 200
#: delivery workflows being started at once
MAX_IN_FLIGHT = 100
#: how often the delivery log is pruned (Settings.webhook_log_retention_days)
PRUNE_EVERY_S = 3600.0


class WebhookDispatcher:
    """Each NOTIFY names its event and webhooks, and is started at once, concurrently with
    the others (a start under load can take a while; the next event does not wait for it).
    A sweep, at start, after a reconnect and every poll interval, starts what is left."""

    def __init__(self, client: Client, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.client = client
        self.pool = pool
        self.settings = settings
        self._sweep = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    def policy(self) -> DeliveryPolicy:
        s = self.settings
        return DeliveryPolicy(timeout_s=s.webhook_timeout_s,
                              retry_initial_s=s.webhook_retry_initial_s,
                              retry_max_interval_s=s.webhook_retry_max_interval_s,
                              retry_for_s=s.webhook_retry_for_s)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="webhook-listen")
        pruned_at = -PRUNE_EVERY_S
        try:
            while True:
                self._sweep.clear()
                try:
                    await self.sweep()
                    if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                        pruned_at = time.monotonic()
                        await db.prune(self.pool, self.settings.webhook_log_retention_days)
                except Exception as err:  # Postgres or Temporal away: the next round retries
                    log.warning("webhook dispatch sweep failed (%s); retrying", err)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._sweep.wait(),
                                           self.settings.webhook_dispatch_poll_s)
        finally:
            listener.cancel()
            for task in [listener, *self._in_flight.values()]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def sweep(self) -> None:
        """Start every undispatched event that is not being started already."""
        while True:
            events = await db.undispatched(self.pool, BATCH)
            tasks = [self._dispatch(e["id"], e["webhook_ids"]) for e in events
                     if e["id"] not in self._in_flight]
            await asyncio.gather(*tasks, return_exceptions=True)
            if len(events) < BATCH:
                return

    def _dispatch(self, event_id: str, webhook_ids: list[str]) -> asyncio.Task:
        task = self._in_flight.get(event_id)
        if task is None:
            task = asyncio.create_task(self._start_one(event_id, webhook_ids),
                                       name=f"webhook-start-{event_id}")
            self._in_flight[event_id] = task
            task.add_done_callback(lambda _: self._in_flight.pop(event_id, None))
        return task

    async def _start_one(self, event_id: str, webhook_ids: list[str]) -> None:
        async with self._slots:
            try:
                # an event whose webhooks were all deleted meanwhile has nothing to start
                if webhook_ids:
                    await self._start(event_id, webhook_ids, self.policy())
                await db.mark_dispatched(self.pool, [event_id])
            except Exception as err:  # the next sweep tries again
                log.warning("could not start the delivery of %s: %s", event_id, err)

    async def _start(self, event_id: str, webhook_ids: list[str], policy: DeliveryPolicy) -> None:
        try:
            await self.client.start_workflow(
                WebhookEventWorkflow.run,
                WebhookEventInput(event_id=event_id, webhook_ids=webhook_ids, policy=policy),
                id=webhook_workflow_id(event_id), task_queue=webhook_task_queue(self.settings),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                request_eager_start=True)
        except WorkflowAlreadyStartedError:
            pass  # started before (by us before a crash, or by another server worker)

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.settings.effective_database_url(), autocommit=True,
                        connect_timeout=10) as conn:
                    await listen(conn, "webhook_events")
                    self._sweep.set()  # what came while we were not listening
                    async for note in conn.notifies():
                        # "{event_id} {webhook_id},{webhook_id}..." (0009's trigger)
                        event_id, _, ids = note.payload.partition(" ")
                        self._dispatch(event_id, [i for i in ids.split(",") if i])
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
