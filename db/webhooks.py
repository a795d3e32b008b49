"""Webhooks' SQL: subscriptions (the API), the outbox the triggers of 0009 fill (the
dispatcher), and deliveries and their attempts (the delivery activity, the API)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from db.reads import _all, _one

#: a webhook as the API shows it: never its secret
_PUBLIC_COLS = """id as webhook_id, office_id, url, events, format, description, enabled,
    disabled_at, disabled_reason, created_at"""


def new_webhook_id() -> str:
    return f"wh_{uuid.uuid4().hex[:20]}"


async def create_webhook(pool: AsyncConnectionPool, *, office_id: str, url: str,
                         events: list[str], secret: str, format: str, description: str | None,
                         created_by: str | None) -> dict:
    return await _one(pool, f"""
        insert into webhooks (id, office_id, url, events, secret, format, description, created_by)
        values (%s, %s, %s, %s, %s, %s, %s, %s)
        returning {_PUBLIC_COLS}, secret""",
        (new_webhook_id(), office_id, url, events, secret, format, description, created_by))


async def list_webhooks(pool: AsyncConnectionPool, office_id: str) -> list[dict]:
    return await _all(pool, f"select {_PUBLIC_COLS} from webhooks where office_id = %s"
                      " order by created_at, id", (office_id,))


async def get_webhook(pool: AsyncConnectionPool, office_id: str, webhook_id: str) -> dict | None:
    return await _one(pool, f"select {_PUBLIC_COLS} from webhooks"
                      " where office_id = %s and id = %s", (office_id, webhook_id))


async def delete_webhook(pool: AsyncConnectionPool, office_id: str, webhook_id: str) -> bool:
    """Delete it with its delivery log; deliveries still retrying find it gone and stop."""
    row = await _one(pool, "delete from webhooks where office_id = %s and id = %s returning id",
                     (office_id, webhook_id))
    return row is not None


async def list_deliveries(pool: AsyncConnectionPool, webhook_id: str, limit: int) -> list[dict]:
    """The newest deliveries first, each with its attempts in order."""
    return await _all(pool, """
        select d.event_id, e.type, e.session_id, e.job_id, e.at as event_at, d.status,
               d.attempts as attempt_count, d.last_status_code, d.last_error,
               d.next_attempt_at, d.created_at, d.finished_at,
               coalesce((select jsonb_agg(jsonb_build_object(
                            'attempt', a.attempt, 'status_code', a.status_code,
                            'error', a.error, 'duration_ms', a.duration_ms, 'at', a.at)
                          order by a.id)
                         from webhook_attempts a
                         where a.webhook_id = d.webhook_id and a.event_id = d.event_id),
                        '[]'::jsonb) as attempts
        from webhook_deliveries d join webhook_events e on e.id = d.event_id
        where d.webhook_id = %s
        order by d.created_at desc, d.event_id desc
        limit %s""", (webhook_id, limit))


# --- the dispatcher ------------------------------------------------------------------------

async def undispatched(pool: AsyncConnectionPool, limit: int) -> list[dict]:
    """Events whose delivery workflow has not been started (oldest first), with the webhooks
    they go to."""
    return await _all(pool, """
        select e.id, array_remove(array_agg(d.webhook_id order by d.webhook_id), null)
                   as webhook_ids
        from webhook_events e left join webhook_deliveries d on d.event_id = e.id
        where e.dispatched_at is null
          and e.id in (select id from webhook_events where dispatched_at is null
                       order by at limit %s)
        group by e.id, e.at order by e.at""", (limit,))


async def mark_dispatched(pool: AsyncConnectionPool, event_ids: list[str]) -> None:
    async with pool.connection() as conn:
        await conn.execute("update webhook_events set dispatched_at = now()"
                           " where id = any(%s) and dispatched_at is null", (event_ids,))


# --- the delivery activity -----------------------------------------------------------------

async def load_delivery(pool: AsyncConnectionPool, webhook_id: str,
                        event_id: str) -> dict[str, Any] | None:
    """What one attempt needs: the event, and the webhook's URL, secret, format and state."""
    return await _one(pool, """
        select e.id, e.type, e.office_id, e.session_id, e.job_id, e.data, e.at,
               w.url, w.secret, w.format, w.enabled, d.status, d.attempts
        from webhook_deliveries d
        join webhook_events e on e.id = d.event_id
        join webhooks w on w.id = d.webhook_id
        where d.webhook_id = %s and d.event_id = %s""", (webhook_id, event_id))


async def record_attempt(pool: AsyncConnectionPool, *, webhook_id: str, event_id: str,
                         attempt: int, status_code: int | None, error: str | None,
                         duration_ms: float, delivered: bool,
                         next_attempt_at: datetime | None) -> None:
    """One attempt in the log, and the delivery's state after it (a delivery already
    finished, by an attempt that raced this one, stays as it is)."""
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        await conn.execute("""
            insert into webhook_attempts (webhook_id, event_id, attempt, status_code, error,
                duration_ms) values (%s, %s, %s, %s, %s, %s)""",
            (webhook_id, event_id, attempt, status_code, error, duration_ms))
        await conn.execute("""
            update webhook_deliveries set attempts = attempts + 1, last_status_code = %s,
                last_error = %s,
                status = case when %s then 'delivered' else status end,
                finished_at = case when %s then clock_timestamp() end,
                next_attempt_at = %s
            where webhook_id = %s and event_id = %s and status = 'pending'""",
            (status_code, error, delivered, delivered, next_attempt_at, webhook_id, event_id))


async def finish_delivery(pool: AsyncConnectionPool, *, webhook_id: str, event_id: str,
                          status: str, reason: str | None) -> None:
    """End a delivery that will not be tried again: `failed` also disables its webhook, and
    says why in the webhook's row."""
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        await conn.execute("""
            update webhook_deliveries set status = %s, finished_at = clock_timestamp(),
                next_attempt_at = null, last_error = coalesce(last_error, %s)
            where webhook_id = %s and event_id = %s and status = 'pending'""",
            (status, reason, webhook_id, event_id))
        if status == "failed":
            await conn.execute("""
                update webhooks w set enabled = false, disabled_at = now(), updated_at = now(),
                    disabled_reason = %s || coalesce(' (last: ' || d.last_error || ')', '')
                from webhook_deliveries d
                where w.id = %s and w.enabled and d.webhook_id = w.id and d.event_id = %s""",
                (reason, webhook_id, event_id))


async def prune(pool: AsyncConnectionPool, older_than_days: float) -> int:
    """Forget events (with their deliveries and attempts) older than this whose deliveries
    are all finished; how many."""
    async with pool.connection() as conn:
        cur = await conn.execute("""
            delete from webhook_events e
            where e.at < now() - %s * interval '1 day' and e.dispatched_at is not null
              and not exists (select 1 from webhook_deliveries d
                              where d.event_id = e.id and d.status = 'pending')""",
            (older_than_days,))
        return cur.rowcount
