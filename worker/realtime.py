"""Supabase Realtime for the command intake: INSERTs into `agent_commands` wake it up.

Runs only when a Supabase project is configured (`SUPABASE_URL` and `SUPABASE_KEY`); without
one, LISTEN/NOTIFY and the poll are the intake's wake-ups and nothing here is used.

A Realtime event is a hint, never the source of truth: on every one the intake drains the
table, so a lost, repeated or truncated event changes nothing. For the same reason the intake
drains on every SUBSCRIBED, and again on the "Subscribed to PostgreSQL" system message (the
moment Realtime really listens: an insert between the two would otherwise be missed until the
next wake-up).

The subscription is supervised here rather than by the client's own auto-reconnect (which gives
up after a few attempts): any loss (socket closed, channel error or close, join timeout, an
error from the Postgres subscription) closes the client, and a fresh one connects and
subscribes again after a capped backoff.

Session status broadcasts on `office:{office_id}:sessions` are sent by the database itself, in
the transaction that changes the status (`db/migrations/0002_realtime.sql`), not from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from semo.settings import Settings

log = logging.getLogger(__name__)

#: the channel the intake joins; any name but "realtime" does (Postgres Changes ignore it)
TOPIC = "semo-intake:agent_commands"
#: (schema, table) whose INSERTs wake the intake
TABLE = ("public", "agent_commands")


def realtime_url(supabase_url: str) -> str:
    """The Realtime endpoint of a Supabase project, as supabase-py derives it."""
    return supabase_url.rstrip("/") + "/realtime/v1"


def feed_for(settings: Settings, on_wake: Callable[[str], None], **kw) -> RealtimeFeed | None:
    """The Realtime feed for this deployment, or None when no Supabase project is configured."""
    if not settings.supabase_url or settings.supabase_key is None:
        if settings.supabase_url or settings.supabase_key is not None:
            log.warning("Supabase Realtime off: set both SUPABASE_URL and SUPABASE_KEY")
        return None
    return RealtimeFeed(settings.supabase_url, settings.supabase_key.get_secret_value(),
                        on_wake, **kw)


class RealtimeFeed:
    """Keeps one Realtime subscription to INSERTs on `agent_commands` alive; calls `on_wake`
    with a reason on every event that means "drain now"."""

    def __init__(self, supabase_url: str, key: str, on_wake: Callable[[str], None], *,
                 timeout_s: int = 10, min_backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 schema: str = TABLE[0], table: str = TABLE[1]) -> None:
        self.url = realtime_url(supabase_url)
        self.key = key
        self.on_wake = on_wake
        self.timeout_s = timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.schema = schema
        self.table = table
        #: counters, for logs and tests
        self.connects = 0
        self.subscribed = 0
        self.inserts = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self.min_backoff_s
        while not stop.is_set():
            reached = False
            try:
                reached = await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure of one connection: start a fresh one
                log.warning("Realtime: %s: %s", type(err).__name__, err)
            if stop.is_set():
                break
            backoff = self.min_backoff_s if reached else min(backoff * 2, self.max_backoff_s)
            log.info("Realtime: reconnecting in %.1fs", backoff)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)

    async def _session(self, stop: asyncio.Event) -> bool:
        """One client from connect to loss; True when it got as far as SUBSCRIBED."""
        lost = asyncio.Event()
        reached = False

        def on_state(state: RealtimeSubscribeStates, err: Exception | None) -> None:
            nonlocal reached
            if state == RealtimeSubscribeStates.SUBSCRIBED:
                reached = True
                self.subscribed += 1
                self.on_wake("realtime subscribed")
            else:
                log.warning("Realtime: channel %s%s", state.value, f" ({err})" if err else "")
                lost.set()

        def on_system(payload) -> None:
            if payload.extension == "postgres_changes" and payload.status == "ok":
                self.on_wake("realtime listening")

        def on_insert(payload) -> None:
            self.inserts += 1
            self.on_wake("realtime insert")

        client = AsyncRealtimeClient(self.url, token=self.key, auto_reconnect=False,
                                     timeout=self.timeout_s)
        channel = client.channel(TOPIC)
        channel.on_postgres_changes("INSERT", on_insert, table=self.table, schema=self.schema)  # type: ignore[arg-type]
        channel.on_system(on_system)
        try:
            self.connects += 1
            await asyncio.wait_for(client.connect(), self.timeout_s * 2)
            await asyncio.wait_for(channel.subscribe(on_state), self.timeout_s * 2)
            while not (lost.is_set() or stop.is_set()):
                if not client.is_connected:
                    log.warning("Realtime: connection closed")
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(lost.wait(), 1.0)
            return reached
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)
