"""Server-side activities: one attempt at delivering an event to a webhook, and giving up.

An attempt reads the event and the webhook from Postgres (the secret never enters Temporal's
history), checks again that the URL may be called (a name can change what it resolves to
after the webhook was made) and connects to the address it checked, POSTs with a timeout and
no redirects, and writes the attempt to the delivery log. A 2xx answer delivers; anything
else fails the attempt, and the workflow (workflows/webhooks.py) makes the next one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import webhooks as db
from semo import webhooks as rules
from semo.errors import InvalidInput
from semo.settings import Settings
from workflows.webhook_contracts import DeliveryOutcome, DeliveryRef, GiveUp

#: how much of a receiver's answer is kept in the log
_ERROR_CHARS = 300


class WebhookActivities:
    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        # made on first use, inside the worker's event loop
        if self._http is None:
            self._http = httpx.AsyncClient(
                follow_redirects=False, headers={"user-agent": "semo-webhooks/1"},
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    @activity.defn(name="deliver_webhook")
    async def deliver(self, ref: DeliveryRef) -> DeliveryOutcome:
        row = await db.load_delivery(self.pool, ref.webhook_id, ref.event_id)
        if row is None:
            return DeliveryOutcome(status="skipped", detail="the webhook was deleted")
        if row["status"] != "pending":
            return DeliveryOutcome(status=row["status"], detail="already finished")
        if not row["enabled"]:
            await db.finish_delivery(self.pool, webhook_id=ref.webhook_id, event_id=ref.event_id,
                                     status="skipped", reason="the webhook is disabled")
            return DeliveryOutcome(status="skipped", detail="the webhook is disabled")
        attempt = ref.attempt_offset + activity.info().attempt
        started = time.monotonic()
        try:
            addresses = await rules.check_destination(row["url"], self.settings)
        except InvalidInput as err:
            await self._log(ref, attempt, None, err.detail, started, delivered=False, last=True)
            raise ApplicationError(err.detail, type="WebhookRefused", non_retryable=True) from None
        content, headers = self._request(row)
        try:
            status, head = await self._post_to_any(row["url"], addresses, content, headers)
        except (httpx.HTTPError, TimeoutError) as err:
            error = f"{type(err).__name__}: {err}".strip().rstrip(":")[:_ERROR_CHARS]
            await self._log(ref, attempt, None, error, started, delivered=False)
            raise ApplicationError(error, type="WebhookUnreachable") from None
        if 200 <= status < 300:
            await self._log(ref, attempt, status, None, started, delivered=True)
            return DeliveryOutcome(status="delivered", status_code=status)
        error = f"HTTP {status}: {head}".strip()
        await self._log(ref, attempt, status, error, started, delivered=False)
        raise ApplicationError(error, type="WebhookRejected")

    async def _post_to_any(self, url: str, addresses: list, content: bytes,
                           headers: dict[str, str]) -> tuple[int, str]:
        """Connect to the checked addresses in turn (as a client does with a name's
        addresses) until one takes the connection."""
        targets = list(dict.fromkeys(rules.pinned(url, ip) for ip in addresses))
        for i, (target, host) in enumerate(targets):
            try:
                return await self._post(target, content,
                                        {**headers, "host": host} if host else headers)
            except httpx.ConnectError:
                if i == len(targets) - 1:
                    raise
        raise AssertionError("no address")  # check_destination returns at least one

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST within `webhook_timeout_s` in all (a receiver that drips its answer gets no
        more), without redirects; the status, and the start of a non-2xx answer's body (the
        rest is never read)."""
        timeout = self.settings.webhook_timeout_s
        async with asyncio.timeout(timeout):
            async with self.http.stream("POST", url, content=content, headers=headers,
                                        timeout=timeout) as resp:
                if 200 <= resp.status_code < 300:
                    return resp.status_code, ""
                head = b""
                async for chunk in resp.aiter_bytes():
                    head += chunk
                    if len(head) >= _ERROR_CHARS:
                        break
                return resp.status_code, head[:_ERROR_CHARS].decode(errors="replace")

    @activity.defn(name="give_up_webhook_delivery")
    async def give_up(self, g: GiveUp) -> None:
        await db.finish_delivery(self.pool, webhook_id=g.webhook_id, event_id=g.event_id,
                                 status="failed", reason=g.reason)

    def _request(self, row: dict) -> tuple[bytes, dict[str, str]]:
        """The body and headers: Standard Webhooks (signed JSON), or Slack's unsigned text."""
        if row["format"] == "slack":
            return rules.encode({"text": rules.slack_text(row)}), \
                {"content-type": "application/json"}
        body = rules.encode(rules.event_body(row))
        timestamp = int(time.time())
        return body, {
            "content-type": "application/json",
            "webhook-id": row["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": rules.sign(row["secret"], row["id"], timestamp, body),
        }

    async def _log(self, ref: DeliveryRef, attempt: int, status_code: int | None,
                   error: str | None, started: float, *, delivered: bool,
                   last: bool = False) -> None:
        next_at = None if delivered or last else self._next_attempt_at(ref, attempt)
        await db.record_attempt(self.pool, webhook_id=ref.webhook_id, event_id=ref.event_id,
                                attempt=attempt, status_code=status_code, error=error,
                                duration_ms=(time.monotonic() - started) * 1000,
                                delivered=delivered, next_attempt_at=next_at)

    @staticmethod
    def _next_attempt_at(ref: DeliveryRef, attempt: int) -> datetime | None:
        """When the next attempt is due (workflows/webhooks.py: the interval doubles from
        `retry_initial_s`); None when none will be made."""
        p = ref.policy
        interval = p.retry_initial_s * 2.0 ** (attempt - 1)
        if attempt > 1:
            interval = min(interval, max(p.retry_max_interval_s, 2 * p.retry_initial_s))
        at = datetime.now(UTC) + timedelta(seconds=interval)
        return at if at < ref.deadline else None
