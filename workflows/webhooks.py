"""WebhookEventWorkflow: one recorded event, delivered to each webhook that subscribed to it.

Its workflow id is `webhook/{event_id}`, so the event's delivery starts once however often the
dispatcher tries (it retries after any crash until the start is on record). Per webhook:

- the first attempt is a local activity, run inside the first workflow task (which the
  dispatcher's eager start hands straight to this process): an event that is delivered at
  once costs one workflow task and no activity task, and reaches its receiver a few ms after
  the state change;
- if it fails, a durable timer waits `retry_initial_s`, and an activity with Temporal's retry
  policy makes the next attempts, each interval double the last (up to the maximum), until
  `retry_for_s` from the event's start (about a day by default);
- when that runs out (or the URL may no longer be called) the delivery is given up: marked
  `failed`, and its webhook disabled with the reason in its row.

It runs on a task queue of its own (worker/webhook_dispatch.py), so a slow or dead receiver
holds no slot a session's workflow or its writes need. Attempt n (1-based, over both kinds)
is numbered so in the delivery log.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError

with workflow.unsafe.imports_passed_through():
    from workflows.webhook_contracts import DeliveryOutcome, DeliveryRef, GiveUp, WebhookEventInput

#: retries of the bookkeeping activities (they only write Postgres)
_BOOKKEEPING = RetryPolicy(initial_interval=timedelta(seconds=1),
                           maximum_interval=timedelta(seconds=30))
#: an attempt refused before sending (its URL may not be called): never retried
REFUSED = "WebhookRefused"


# Not sandboxed: it imports nothing but temporalio and its contracts, and keeps no state
# outside the run; a sandbox would re-import this module for every event, which was most of
# the CPU an event cost the worker.
@workflow.defn(name="WebhookEvent", sandboxed=False)
class WebhookEventWorkflow:
    @workflow.run
    async def run(self, inp: WebhookEventInput) -> dict[str, str]:
        outcomes = await asyncio.gather(*(self._deliver(inp, w) for w in inp.webhook_ids))
        return dict(zip(inp.webhook_ids, outcomes, strict=True))

    async def _deliver(self, inp: WebhookEventInput, webhook_id: str) -> str:
        p = inp.policy
        deadline = workflow.now() + timedelta(seconds=p.retry_for_s)
        ref = DeliveryRef(webhook_id=webhook_id, event_id=inp.event_id, policy=p,
                          deadline=deadline, attempt_offset=0)
        attempt_timeout = timedelta(seconds=p.timeout_s + 15)
        try:
            out: DeliveryOutcome = await workflow.execute_local_activity(
                "deliver_webhook", ref, result_type=DeliveryOutcome,
                start_to_close_timeout=attempt_timeout,
                retry_policy=RetryPolicy(maximum_attempts=1))
            return out.status
        except (ActivityError, ApplicationError) as err:  # a local one may come unwrapped
            if _refused(err):
                return await self._give_up(inp, webhook_id, _reason(err, p.retry_for_s))
        await workflow.sleep(timedelta(seconds=p.retry_initial_s))
        left = deadline - workflow.now()
        if left <= timedelta(0):
            return await self._give_up(inp, webhook_id, "no 2xx answer")
        try:
            out = await workflow.execute_activity(
                "deliver_webhook", ref.model_copy(update={"attempt_offset": 1}),
                result_type=DeliveryOutcome,
                summary=f"deliver {inp.event_id} to {webhook_id}",
                start_to_close_timeout=attempt_timeout, schedule_to_close_timeout=left,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=2 * p.retry_initial_s),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=max(p.retry_max_interval_s,
                                                           2 * p.retry_initial_s)),
                    non_retryable_error_types=[REFUSED]))
            return out.status
        except ActivityError as err:
            return await self._give_up(inp, webhook_id, _reason(err, p.retry_for_s))

    async def _give_up(self, inp: WebhookEventInput, webhook_id: str, reason: str) -> str:
        await workflow.execute_activity(
            "give_up_webhook_delivery",
            GiveUp(webhook_id=webhook_id, event_id=inp.event_id,
                   reason=f"delivery of {inp.event_id} failed: {reason}"[:1000]),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=_BOOKKEEPING)
        return "failed"


def _application_error(err: ActivityError | ApplicationError) -> ApplicationError | None:
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause if isinstance(cause, ApplicationError) else None


def _refused(err: ActivityError | ApplicationError) -> bool:
    app = _application_error(err)
    return app is not None and app.type == REFUSED


def _reason(err: ActivityError | ApplicationError, retry_for_s: float) -> str:
    app = _application_error(err)
    if app is not None and app.type == REFUSED:
        return app.message
    timed_out = getattr(err, "retry_state", None) == RetryState.TIMEOUT
    if isinstance(err.cause, TimeoutError) or timed_out:
        return f"no 2xx answer in {_duration(retry_for_s)} of retries"
    return app.message if app is not None else str(err.cause or err)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g}s"
