"""The command intake: carries out rows inserted into `agent_commands` by anyone.

It LISTENs for the insert trigger's NOTIFY, claims pending rows with `FOR UPDATE SKIP
LOCKED` (so several intakes can run at once), drains everything pending at start and after
every reconnect, and polls as a fallback. Each row gets exactly one result row; the
command id is the Temporal update id, so a row run twice after a crash acts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import datetime, timezone

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from db.pool import open_pool
from semo.commands import BACKGROUND_LIMIT_S, Command, CommandExecutor, Outcome
from semo.settings import Settings
from semo.temporal import connect

log = logging.getLogger(__name__)

BATCH = 50
MAX_IN_FLIGHT = 64
#: a row claimed this long ago without a result was abandoned by a crashed claimant
STALE_CLAIM_S = BACKGROUND_LIMIT_S + 60

_CLAIM = f"""
update agent_commands c set status = 'running', claimed_by = %(me)s, claimed_at = now(),
    attempts = c.attempts + 1, updated_at = now()
from (
    select id from agent_commands a
    where (a.status = 'pending'
           or (a.status = 'running' and a.claimed_at < now() - interval '{STALE_CLAIM_S} seconds'))
      and not exists (select 1 from agent_command_results r where r.command_id = a.id)
    order by a.created_at
    limit %(limit)s
    for update skip locked
) picked
where c.id = picked.id
returning c.*
"""


class Intake:
    def __init__(self, executor: CommandExecutor, pool: AsyncConnectionPool, settings: Settings) -> None:
        self.executor = executor
        self.pool = pool
        self.settings = settings
        self.me = f"intake:{executor.instance}"
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        try:
            while not stop.is_set():
                while await self.drain_once():
                    pass
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.intake_poll_interval_s)
        finally:
            listener.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=10)

    async def drain_once(self) -> int:
        """Claim a batch of rows and start them; returns how many were claimed."""
        try:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                rows = await (await cur.execute(_CLAIM, {"me": self.me, "limit": BATCH})).fetchall()
        except psycopg.Error as err:
            log.warning("claiming commands failed (%s); retrying", err)
            await asyncio.sleep(1.0)
            return 0
        for row in sorted(rows, key=lambda r: r["created_at"]):
            await self._slots.acquire()
            task = asyncio.create_task(self._carry_out(Command.from_row(row)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _carry_out(self, cmd: Command) -> None:
        try:
            # one session's (or office's) commands run in the order they were inserted
            async with self._locks[cmd.session_id or f"office:{cmd.office_id}"]:
                age = (datetime.now(timezone.utc) - cmd.created_at).total_seconds()
                if age > self.settings.command_max_age_s:
                    problem = {"type": "urn:semo:error:Expired", "title": "Expired", "status": 410,
                               "detail": f"command was {age:.0f}s old when claimed (limit "
                                         f"{self.settings.command_max_age_s:g}s); not executed"}
                    await self.executor.record(cmd, Outcome(cmd.id, 410, problem), status="expired")
                    return
                outcome = await self.executor.run(cmd)
                log.info("command %s %s -> %s", cmd.id, cmd.type, outcome.status_code)
        except Exception:
            log.exception("command %s could not be recorded; it stays claimed and will be retried",
                          cmd.id)
        finally:
            self._slots.release()

    async def _listen(self, stop: asyncio.Event) -> None:
        url = self.settings.effective_database_url()
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                        url, autocommit=True, connect_timeout=10) as conn:
                    await conn.execute("listen agent_commands")
                    self._wake.set()  # drain what arrived while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("intake LISTEN lost (%s); reconnecting", err)
                await asyncio.sleep(1.0)


async def run_intake(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings)
    pool = await open_pool(settings.effective_database_url(), max_size=10, name="intake")
    try:
        await Intake(CommandExecutor(client, pool, settings), pool, settings).run(stop)
    finally:
        await pool.close()
