"""Read queries shared by the API and the command executor. They return plain dicts shaped
like the API's resources (SPEC §4); nothing here waits on a client machine."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

_OFFICE_COLS = """id as office_id, name, machine_id, workspace_root, warm_roles, roles,
    max_sessions, idle_timeout_s, agent, personas, settings, status, created_at, updated_at,
    command_id::text as command_id,
    coalesce(settings->'permission_rules', '{"allow": [], "deny": []}') as permission_rules,
    (settings->>'input_timeout_s')::float8 as input_timeout_s"""

#: a session row as the API shows it (also how the command executor reads one)
SESSION_COLS = """id as session_id, office_id, role, agent, machine_id, working_dir, status,
    current_job_id, restarts, circuit, source, workflow_id, last_error, rows, cols,
    pending_input, created_at, last_activity_at"""


async def _one(pool: AsyncConnectionPool, sql: str, params: tuple) -> dict[str, Any] | None:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return await (await cur.execute(sql, params)).fetchone()


async def _all(pool: AsyncConnectionPool, sql: str, params: tuple) -> list[dict[str, Any]]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return await (await cur.execute(sql, params)).fetchall()


async def get_office(pool, office_id: str) -> dict | None:
    return await _one(pool, f"select {_OFFICE_COLS} from offices where id = %s", (office_id,))


async def list_offices(pool, office_ids: list[str] | None) -> list[dict]:
    """Offices that are not deleted; `office_ids=None` means all."""
    if office_ids is None:
        return await _all(pool, f"select {_OFFICE_COLS} from offices where status <> 'deleted'"
                          " order by created_at", ())
    return await _all(pool, f"select {_OFFICE_COLS} from offices where status <> 'deleted'"
                      " and id = any(%s) order by created_at", (office_ids,))


async def member_office_ids(pool, user_id: str) -> list[str]:
    rows = await _all(pool, "select office_id from office_members where user_id = %s", (user_id,))
    return [r["office_id"] for r in rows]


async def office_policy(pool, office_id: str) -> dict[str, Any]:
    """What the client worker applies to a permission request: the office's rules and how
    long a question may wait for a person."""
    row = await _one(pool, """select settings->'permission_rules' as permission_rules,
        (settings->>'input_timeout_s')::float8 as input_timeout_s from offices where id = %s""",
                     (office_id,))
    return row or {"permission_rules": None, "input_timeout_s": None}


async def get_machine(pool, machine_id: str) -> dict | None:
    return await _one(pool, "select * from client_machines where id = %s", (machine_id,))


async def get_session(pool, office_id: str, session_id: str) -> dict | None:
    return await _one(pool, f"select {SESSION_COLS} from agent_sessions"
                      " where office_id = %s and id = %s", (office_id, session_id))


async def get_live_office_session(pool, office_id: str, session_id: str) -> dict | None:
    """The session, in one round trip, if its office exists and is not deleted."""
    cols = ", ".join(f"s.{c.strip()}" for c in SESSION_COLS.split(","))
    return await _one(
        pool,
        f"select {cols} from agent_sessions s join offices o on o.id = s.office_id"
        " where s.office_id = %s and s.id = %s and o.status <> 'deleted'",
        (office_id, session_id),
    )


async def list_sessions(pool, office_id: str, *, live_only: bool = False) -> list[dict]:
    where = " and status <> 'terminated'" if live_only else ""
    return await _all(pool, f"select {SESSION_COLS} from agent_sessions where office_id = %s"
                      f"{where} order by created_at", (office_id,))


async def job_command(pool, job_id: str) -> str | None:
    """The id of the command that made a job (None: no such job)."""
    row = await _one(pool, "select coalesce(command_id::text, '') as c from jobs where id = %s",
                     (job_id,))
    return None if row is None else row["c"]


_JOB_COLS = """id as job_id, session_id, office_id, status, prompt, timeout_s, completion, error,
    created_at, started_at, finished_at, command_id::text as command_id"""


async def get_job(pool, office_id: str, job_id: str) -> dict | None:
    job = await _one(pool, f"select {_JOB_COLS} from jobs where office_id = %s and id = %s",
                     (office_id, job_id))
    if job is None:
        return None
    job["events"] = await _all(pool, """select kind, at, data from session_events
            where job_id = %s order by id""", (job_id,))
    return job


async def list_jobs(pool, office_id: str, session_id: str, limit: int) -> list[dict]:
    """A session's latest jobs, newest first, each with its events (as `get_job`)."""
    jobs = await _all(pool, f"""select {_JOB_COLS} from jobs where office_id = %s
            and session_id = %s order by created_at desc, id desc limit %s""",
                      (office_id, session_id, limit))
    events = await _all(pool, """select job_id, kind, at, data from session_events
            where job_id = any(%s) order by id""", ([j["job_id"] for j in jobs],))
    by_job: dict[str, list[dict]] = {j["job_id"]: [] for j in jobs}
    for ev in events:
        by_job[ev.pop("job_id")].append(ev)
    for job in jobs:
        job["events"] = by_job[job["job_id"]]
    return jobs


async def list_live_sessions_in(pool, office_ids: list[str]) -> list[dict]:
    """The sessions of these offices that are not terminated (an office's event stream)."""
    return await _all(pool, f"select {SESSION_COLS} from agent_sessions where office_id = any(%s)"
                      " and status <> 'terminated' order by created_at", (office_ids,))


async def get_command(pool, office_id: str, command_id: str) -> dict | None:
    return await _one(pool, """select c.id::text as command_id, c.office_id, c.session_id, c.type,
            c.payload, c.status, c.source, c.idempotency_key, c.created_at, c.updated_at,
            case when r.id is null then null else
              jsonb_build_object('status', r.status, 'result', r.result, 'error', r.error,
                                 'created_at', r.created_at) end as result
            from agent_commands c left join agent_command_results r on r.command_id = c.id
            where c.office_id = %s and c.id = %s""", (office_id, command_id))


async def fleet_counts(pool: AsyncConnectionPool) -> dict[str, Any]:
    """Live sessions by status, unfinished jobs, open commands by status (bounded queries:
    live rows only), for the API's metrics."""
    async with pool.connection(timeout=3) as conn:
        sessions: dict[str, int] = dict(await (await conn.execute(
            "select status, count(*) from agent_sessions where status <> 'terminated'"
            " group by status")).fetchall())
        running = (await (await conn.execute(
            "select count(*) from jobs where finished_at is null")).fetchone())[0]
        commands: dict[str, int] = dict(await (await conn.execute(
            "select status, count(*) from agent_commands"
            " where status in ('pending', 'running') group by status")).fetchall())
    return {"sessions": sessions, "jobs_running": running, "commands": commands}
