"""WebhookEventWorkflow: one recorded event, delivered to each webhook that subscribed to it.

Its workflow id is `webhook/{event_id}`, so the event's delivery starts once however often the
dispatcher tries (it retries after any crash until the start is on record). Each webhook's
delivery is one activity with Temporal's retry policy: a non-2xx answer or a network error
fails the attempt, and the next one comes after a backoff, for `retry_for_s` in all (about a
day by default). When that runs out the delivery is given up: marked `failed`, and its
webhook disabled with the reason in its row. Nothing here touches a session, so a slow or
dead receiver never holds one up.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError

#: retries of the bookkeeping activities (they only write Postgres)
_BOOKKEEPING = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


class DeliveryPolicy(BaseModel):
    """From the dispatcher's settings, so that the workflow reads no settings itself."""

    timeout_s: float
    retry_initial_s: float
    retry_max_interval_s: float
    retry_for_s: float


class WebhookEventInput(BaseModel):
    event_id: str
    webhook_ids: list[str]
    policy: DeliveryPolicy


class DeliveryRef(BaseModel):
    webhook_id: str
    event_id: str
    policy: DeliveryPolicy


class DeliveryOutcome(BaseModel):
    #: delivered, skipped (the webhook is gone or disabled), refused (its URL may not be called)
    status: str
    status_code: int | None = None
    detail: str | None = None


class GiveUp(BaseModel):
    webhook_id: str
    event_id: str
    reason: str


def webhook_workflow_id(event_id: str) -> str:
    return f"webhook/{event_id}"


@workflow.defn(name="WebhookEvent")
class WebhookEventWorkflow:
    @workflow.run
    async def run(self, inp: WebhookEventInput) -> dict[str, str]:
        outcomes = await asyncio.gather(*(self._deliver(inp, w) for w in inp.webhook_ids))
        return dict(zip(inp.webhook_ids, outcomes))

    async def _deliver(self, inp: WebhookEventInput, webhook_id: str) -> str:
        p = inp.policy
        ref = DeliveryRef(webhook_id=webhook_id, event_id=inp.event_id, policy=p)
        try:
            out: DeliveryOutcome = await workflow.execute_activity(
                "deliver_webhook", ref, result_type=DeliveryOutcome,
                summary=f"deliver {inp.event_id} to {webhook_id}",
                start_to_close_timeout=timedelta(seconds=p.timeout_s + 15),
                schedule_to_close_timeout=timedelta(seconds=p.retry_for_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=p.retry_initial_s), backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=p.retry_max_interval_s),
                    non_retryable_error_types=["WebhookRefused"]))
            return out.status
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, TimeoutError):
                reason = f"no 2xx answer in {_duration(p.retry_for_s)} of retries"
            else:
                reason = getattr(cause, "message", None) or str(cause or err)
            await workflow.execute_activity(
                "give_up_webhook_delivery",
                GiveUp(webhook_id=webhook_id, event_id=inp.event_id,
                       reason=f"delivery of {inp.event_id} failed: {reason}"[:1000]),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=_BOOKKEEPING)
            return "failed"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g}s"
