"""The command tables (`agent_commands`, `agent_command_results`) and the office rows a command
writes: the statements the command executor and the intake run."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from db.reads import SESSION_COLS

_COLUMNS = """office_id, session_id, type, payload, status, source, idempotency_key, created_by,
    claimed_by, claimed_at, attempts, claim_lock, started_at"""
_VALUES = """%(office_id)s, %(session_id)s, %(type)s, %(payload)s, 'running', 'api', %(key)s,
    %(created_by)s, %(instance)s, now(), 1, %(lock)s, now()"""
_INSERT = f"insert into agent_commands ({_COLUMNS}) values ({_VALUES}) returning *"
#: nothing is inserted for a session that is not there (or whose office was deleted)
_INSERT_FOR_SESSION = f"""
with session as (
    select {SESSION_COLS} from agent_sessions
    where office_id = %(office_id)s and id = %(session_id)s
      and exists (select from offices where id = %(office_id)s and status <> 'deleted'))
insert into agent_commands ({_COLUMNS}) select {_VALUES} from session
returning *, (select to_jsonb(session) from session) as session"""

#: a result's status -> its command's status
_COMMAND_STATUS = {"ok": "done", "error": "failed", "expired": "expired"}


async def insert_claimed(pool: AsyncConnectionPool, *, office_id: str, session_id: str | None,
                         type: str, payload: Any, idempotency_key: str | None,
                         created_by: str | None, instance: str, lock: int) -> dict | None:
    """Record a command already claimed by `instance` (the API runs what it records). A
    session's command is recorded only if the session is there, in a live office, and the row
    brings the session along (`session`): one round trip for both. None: no such session.
    Raises UniqueViolation for an Idempotency-Key already taken."""
    params = {"office_id": office_id, "session_id": session_id, "type": type,
              "payload": Jsonb(payload), "key": idempotency_key, "created_by": created_by,
              "instance": instance, "lock": lock}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return await (await cur.execute(
            _INSERT if session_id is None else _INSERT_FOR_SESSION, params)).fetchone()


async def by_idempotency_key(pool: AsyncConnectionPool, office_id: str, key: str) -> dict | None:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return await (await cur.execute(
            "select * from agent_commands where office_id = %s and idempotency_key = %s",
            (office_id, key))).fetchone()


async def stored_result(pool: AsyncConnectionPool,
                        command_id: uuid.UUID) -> tuple[str, dict | None, str] | None:
    """(result status, result, command type) of a command that has its result."""
    async with pool.connection() as conn:
        return await (await conn.execute(
            """select r.status, r.result, c.type from agent_command_results r
               join agent_commands c on c.id = r.command_id where r.command_id = %s""",
            (command_id,))).fetchone()


async def record_result(conn: AsyncConnection, command_id: uuid.UUID, status: str,
                        result: dict, error: str | None) -> bool:
    """The command's one result (first writer wins), its status, and a NOTIFY for whoever
    waits on it, in one statement. True when this call wrote the result."""
    cur = await conn.execute(
        """with result as (
               insert into agent_command_results (command_id, status, result, error)
               values (%s, %s, %s, %s)
               on conflict (command_id) do nothing returning id),
           command as (
               update agent_commands set status = %s, updated_at = now() where id = %s)
           select exists (select from result), pg_notify('command_results', %s)""",
        (command_id, status, Jsonb(result), error, _COMMAND_STATUS[status], command_id,
         str(command_id)))
    return (await cur.fetchone())[0]


# --- offices ---------------------------------------------------------------------------------


async def insert_office(conn: AsyncConnection, office_id: str, *, name: str, machine_id: str,
                        workspace_root: str | None, warm_roles: list[str], roles: list[str],
                        max_sessions: int, idle_timeout_s: float, agent: str,
                        personas: dict, settings: dict, created_by: str | None,
                        command_id: uuid.UUID) -> None:
    """Raises UniqueViolation for an office id already taken."""
    await conn.execute(
        """insert into offices (id, name, machine_id, workspace_root, warm_roles, roles,
               max_sessions, idle_timeout_s, agent, personas, settings, created_by, command_id)
           values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (office_id, name, machine_id, workspace_root, warm_roles, roles, max_sessions,
         idle_timeout_s, agent, Jsonb(personas), Jsonb(settings), created_by, command_id))


async def add_owner(conn: AsyncConnection, office_id: str, user_id: str) -> None:
    await conn.execute(
        """insert into office_members (office_id, user_id, role) values (%s, %s, 'owner')
           on conflict do nothing""", (office_id, user_id))


async def mark_office_deleted(pool: AsyncConnectionPool, office_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "update offices set status = 'deleted', deleted_at = coalesce(deleted_at, now()),"
            " updated_at = now() where id = %s", (office_id,))


async def update_office(pool: AsyncConnectionPool, office_id: str, name: str | None,
                        settings: dict) -> bool:
    """Rename and merge `settings` (a null value removes its key). False: no live office."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """update offices set name = coalesce(%s, name),
                   settings = jsonb_strip_nulls(settings || %s), updated_at = now()
               where id = %s and status <> 'deleted' returning id""",
            (name, Jsonb(settings), office_id))
        return await cur.fetchone() is not None
