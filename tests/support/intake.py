"""Command rows inserted as a dashboard would, their results, and an intake in this process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from commands.executor import CommandExecutor
from db.pool import open_pool
from tests.support.waiting import wait_for
from worker.intake import Intake


async def insert_rows(pool, rows: list[dict]) -> list[uuid.UUID]:
    """Insert rows the way a dashboard or psql would (one statement: one burst)."""
    ids = [uuid.uuid4() for _ in rows]
    async with pool.connection() as conn:
        await conn.execute(
            """insert into agent_commands (id, office_id, session_id, type, payload, created_at)
               select u.id, u.office_id, u.session_id, u.type, u.payload,
                      coalesce(u.created_at, now())
               from unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::jsonb[],
                           %s::timestamptz[])
                    as u(id, office_id, session_id, type, payload, created_at)""",
            (ids, [r["office_id"] for r in rows], [r.get("session_id") for r in rows],
             [r["type"] for r in rows], [Jsonb(r.get("payload", {})) for r in rows],
             [r.get("created_at") for r in rows]))
    return ids


async def results_of(pool, ids) -> dict[uuid.UUID, dict]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = await (await cur.execute(
            """select r.command_id, r.status, r.result, r.error, c.status as command_status,
                      c.attempts, c.claimed_by
               from agent_command_results r join agent_commands c on c.id = r.command_id
               where r.command_id = any(%s)""", (list(ids),))).fetchall()
    return {r["command_id"]: r for r in rows}


async def count_results(pool, ids) -> int:
    async with pool.connection() as conn:
        return (await (await conn.execute(
            "select count(*) from agent_command_results where command_id = any(%s)",
            (list(ids),))).fetchone())[0]


@contextlib.asynccontextmanager
async def running_intake(settings, temporal_client, *, executor_cls=CommandExecutor, **kw):
    """An intake in this process (its own pool, executor and claim lock)."""
    pool = await open_pool(settings.effective_database_url(), max_size=10, name="test-intake")
    intake = Intake(executor_cls(temporal_client, pool, settings), pool, settings, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    try:
        await wait_for(lambda: _claiming(intake, task), timeout=15, what="intake claim lock")
        yield intake
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await pool.close()


async def _claiming(intake, task):
    if task.done():
        task.result()  # raise what killed it
    return intake.claimant.key is not None


