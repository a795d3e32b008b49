"""What the webhook delivery workflow and its activities exchange (workflows/webhooks.py).

A module of its own so that the workflow imports it passed through the sandbox (as the session
workflow does its contracts): models are defined once per process, not once per run.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


def webhook_workflow_id(event_id: str) -> str:
    return f"webhook/{event_id}"


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
    #: no attempt after this (the workflow's start + retry_for_s)
    deadline: datetime
    #: attempts made before this activity's first (the log numbers attempts over all)
    attempt_offset: int = 0


class DeliveryOutcome(BaseModel):
    #: delivered, skipped (the webhook is gone or disabled), refused (its URL may not be called)
    status: str
    status_code: int | None = None
    detail: str | None = None


class GiveUp(BaseModel):
    webhook_id: str
    event_id: str
    reason: str
