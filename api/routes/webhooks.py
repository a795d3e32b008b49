"""An office's webhooks: subscribe a URL to event types, list, delete, read the delivery log.

A webhook is configuration of the record, not an action on an agent, so it is written here
directly rather than as an `agent_commands` row: a command's payload is readable by the
office's users (GET .../commands/{id}, Supabase), and this one would carry the secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentUser, OfficeRow, State
from db import webhooks as db
from semo import webhooks as rules
from semo.errors import NotFound

router = APIRouter(prefix="/api/offices/{office_id}/webhooks", tags=["webhooks"])

WebhookIdPath = Annotated[str, Path(pattern=r"^wh_[a-f0-9]{1,40}$")]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http:// or https://")
    events: list[str] = Field(min_length=1, max_length=len(rules.EVENT_TYPES),
                              description="event types: " + ", ".join(rules.EVENT_TYPES))
    secret: str | None = Field(default=None, max_length=200,
                               description="`whsec_` + base64 of 24..64 bytes; made when left out")
    description: str | None = Field(default=None, max_length=500)
    format: Literal["standard", "slack"] = Field(
        default="standard",
        description="standard: signed JSON (Standard Webhooks); "
                    "slack: an unsigned `{\"text\": ...}` for incoming webhooks")


class Webhook(BaseModel):
    webhook_id: str
    office_id: str
    url: str
    events: list[str]
    format: str
    description: str | None
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime


class WebhookCreated(Webhook):
    #: shown once, in this answer
    secret: str


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class DeliveryAttempt(BaseModel):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float | None
    at: datetime


class Delivery(BaseModel):
    event_id: str
    type: str
    session_id: str
    job_id: str | None
    event_at: datetime
    status: Literal["pending", "delivered", "failed", "skipped"]
    attempts: list[DeliveryAttempt]
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryList(BaseModel):
    webhook_id: str
    deliveries: list[Delivery]


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(body: WebhookCreate, office: OfficeRow, state: State, user: CurrentUser):
    """Subscribe `url` to `events`. Refused (422, nothing stored) for a URL that is not
    http(s), unknown event types, and a URL whose host this deployment may not call."""
    events = rules.check_events(body.events)
    secret = body.secret or rules.new_secret()
    rules.secret_key(secret)
    await rules.check_destination(body.url, state.settings)
    return await db.create_webhook(state.pool, office_id=office["office_id"], url=body.url,
                                   events=events, secret=secret, format=body.format,
                                   description=body.description, created_by=user.sub)


@router.get("", response_model=WebhookList)
async def list_webhooks(office: OfficeRow, state: State):
    """The office's webhooks, without their secrets; a disabled one says why."""
    return {"webhooks": await db.list_webhooks(state.pool, office["office_id"])}


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
async def delete_webhook(office: OfficeRow, state: State, webhook_id: WebhookIdPath):
    """Stop sending to it; deliveries still retrying end, and its log goes with it."""
    if not await db.delete_webhook(state.pool, office["office_id"], webhook_id):
        raise _not_found(office, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(office: OfficeRow, state: State, webhook_id: WebhookIdPath,
                          limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    """The newest deliveries first: each one's attempts (status code or error), and when the
    next try is due."""
    if await db.get_webhook(state.pool, office["office_id"], webhook_id) is None:
        raise _not_found(office, webhook_id)
    return {"webhook_id": webhook_id,
            "deliveries": await db.list_deliveries(state.pool, webhook_id, limit)}


def _not_found(office: dict, webhook_id: str) -> NotFound:
    return NotFound(f"webhook {webhook_id!r} not found in office {office['office_id']!r}")
