"""Server-side activity: the session workflow's writes to Postgres, one transaction each.

Runs as a local activity on the server worker. Every write is idempotent (retries are safe)
and ordered by the workflow's `version`, so a retried or late write never overwrites a
newer one. A job's end is announced with NOTIFY on `job_events` for job schedulers.
"""

from __future__ import annotations

import json

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from workflows.contracts import EventRecord, JobRecord, RecordBatch, SessionRecord

_SESSION_UPSERT = """
insert into agent_sessions as s (id, office_id, role, agent, machine_id, working_dir, status,
    current_job_id, restarts, circuit, source, workflow_id, last_error, rows, cols, version,
    terminated_at)
values (%(session_id)s, %(office_id)s, %(role)s, %(agent)s, %(machine_id)s, %(working_dir)s,
    %(status)s, %(current_job_id)s, %(restarts)s, %(circuit)s, %(source)s, %(workflow_id)s,
    %(last_error)s, coalesce(%(rows)s, 40), coalesce(%(cols)s, 120), %(version)s,
    case when %(status)s = 'terminated' then now() end)
on conflict (id) do update set
    working_dir = excluded.working_dir, status = excluded.status,
    current_job_id = excluded.current_job_id, restarts = excluded.restarts,
    circuit = excluded.circuit, last_error = excluded.last_error,
    rows = coalesce(%(rows)s, s.rows), cols = coalesce(%(cols)s, s.cols),
    version = excluded.version, updated_at = now(), last_activity_at = now(),
    terminated_at = coalesce(s.terminated_at, excluded.terminated_at)
where s.version < excluded.version
returning s.id
"""

# A job's rows can arrive in either order (its start and its end are written concurrently):
# both are upserts, and once a job has finished nothing moves it back.
_JOB_START = """
insert into jobs as j (id, office_id, session_id, status, prompt, timeout_s, command_id, started_at)
values (%(job_id)s, %(office_id)s, %(session_id)s, %(status)s, coalesce(%(prompt)s, ''),
    %(timeout_s)s, %(command_id)s, now())
on conflict (id) do update set prompt = excluded.prompt, timeout_s = excluded.timeout_s,
    command_id = excluded.command_id, updated_at = now()
where j.session_id = excluded.session_id
"""
_JOB_END = """
insert into jobs as j (id, office_id, session_id, status, prompt, completion, error, started_at,
    finished_at)
values (%(job_id)s, %(office_id)s, %(session_id)s, %(status)s, '', %(completion)s, %(error)s,
    now(), now())
on conflict (id) do update set status = excluded.status, completion = excluded.completion,
    error = excluded.error, finished_at = excluded.finished_at, updated_at = now()
where j.finished_at is null and j.session_id = excluded.session_id
returning j.id
"""
_EVENT = """
insert into session_events (office_id, session_id, job_id, kind, data)
values (%s, %s, %s, %s, %s)
"""


class RecordActivities:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @activity.defn(name="record")
    async def record(self, batch: RecordBatch) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if batch.session is not None:
                cur = await conn.execute(_SESSION_UPSERT, _session_params(batch.session))
                if await cur.fetchone() is not None:  # live readers (SSE, attach) wake up
                    await conn.execute("select pg_notify('session_status', %s)",
                                       (batch.session.session_id,))
            if batch.job is not None:
                await self._write_job(conn, batch.job)
            if batch.event is not None:
                await _insert_event(conn, batch.event)

    async def _write_job(self, conn, job: JobRecord) -> None:
        params = job.model_dump()
        params["completion"] = Jsonb(job.completion) if job.completion is not None else None
        if not job.final:
            await conn.execute(_JOB_START, params)
            return
        cur = await conn.execute(_JOB_END, params)
        if await cur.fetchone() is None:
            return  # already final: a retry
        if job.event_kind:
            await _insert_event(conn, EventRecord(
                office_id=job.office_id, session_id=job.session_id, job_id=job.job_id,
                kind=job.event_kind, data=job.event_data))
        notice = {"job_id": job.job_id, "session_id": job.session_id,
                  "office_id": job.office_id, "status": job.status}
        await conn.execute("select pg_notify('job_events', %s)", (json.dumps(notice),))


def _session_params(rec: SessionRecord) -> dict:
    return rec.model_dump()


async def _insert_event(conn, ev: EventRecord) -> None:
    await conn.execute(_EVENT, (ev.office_id, ev.session_id, ev.job_id, ev.kind, Jsonb(ev.data)))
