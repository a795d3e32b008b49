"""`client_machines`: each client worker registers its machine (its queue, workspace roots,
agent profiles and the versions of the CLIs they run) at start and touches it while it lives."""

from __future__ import annotations

from datetime import datetime

import psycopg
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


# --- for `semo dev`, which waits for its worker without an event loop ------------------------


def database_now(database_url: str) -> datetime:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute("select now()").fetchone()[0]


def registered_since(database_url: str, machine_id: str, since: datetime) -> bool:
    """Whether a worker of `machine_id` has registered it at or after `since`."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute("select 1 from client_machines where id = %s and started_at >= %s",
                            (machine_id, since)).fetchone() is not None
