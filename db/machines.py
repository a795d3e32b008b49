"""`client_machines`: each client worker registers its machine (its queue, workspace roots,
agent profiles and the versions of the CLIs they run) at start and touches it while it lives."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool


async def register(pool: AsyncConnectionPool, machine_id: str, *, hostname: str,
                   task_queue: str, workspace_roots: list[str], agent_profiles: list[str],
                   agent_versions: dict) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            """insert into client_machines (id, hostname, task_queue, workspace_roots,
                   agent_profiles, agent_versions, started_at, last_seen_at)
               values (%s, %s, %s, %s, %s, %s, now(), now())
               on conflict (id) do update set hostname = excluded.hostname,
                   task_queue = excluded.task_queue, workspace_roots = excluded.workspace_roots,
                   agent_profiles = excluded.agent_profiles,
                   agent_versions = excluded.agent_versions, started_at = now(),
                   last_seen_at = now()""",
            (machine_id, hostname, task_queue, workspace_roots, agent_profiles,
             Jsonb(agent_versions)))


async def touch(pool: AsyncConnectionPool, machine_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("update client_machines set last_seen_at = now() where id = %s",
                           (machine_id,))


async def list_all(pool: AsyncConnectionPool, office_ids: list[str] | None) -> list[dict]:
    """Every registered machine (any of them may run an office's sessions), with its live
    sessions counted in the given offices only (None: in every office)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("""
            select m.id as machine_id, m.hostname, m.agent_profiles, m.agent_versions,
                   m.workspace_roots, m.last_seen_at,
                   (select count(*) from agent_sessions s
                     where s.machine_id = m.id and s.status <> 'terminated'
                       and (%(all)s or s.office_id = any(%(offices)s)))::int as live_sessions
              from client_machines m order by m.id""",
            {"all": office_ids is None, "offices": office_ids or []})
        return await cur.fetchall()


# --- for `semo dev`, which waits for its worker without an event loop ------------------------


def database_now(database_url: str) -> datetime:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute("select now()").fetchone()[0]


def registered_since(database_url: str, machine_id: str, since: datetime) -> bool:
    """Whether a worker of `machine_id` has registered it at or after `since`."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute("select 1 from client_machines where id = %s and started_at >= %s",
                            (machine_id, since)).fetchone() is not None
