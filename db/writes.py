"""The session workflow's rows (session, job, event), written in one round trip.

Two writers use this: the workflow's `record` local activity, and the command executor,
which writes the rows a prompt's update handed back in the transaction that records the
command's result (so they are in Postgres before anyone hears the answer). Every write is
idempotent and ordered by the workflow's `version`, so a retried or late write never
overwrites a newer one.

No statement needs the result of another, so a batch goes out as one pipeline: what would
be a condition in Python (notify only if the row changed; append the job's event only the
first time it ends) is a condition in SQL.
"""

from __future__ import annotations

import json

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from workflows.contracts import JobRecord, RecordBatch

# live readers (SSE, attach) wake up when the row changed; an older version changes nothing
_SESSION_UPSERT = """
with written as (
    insert into agent_sessions as s (id, office_id, role, agent, machine_id, working_dir, status,
        current_job_id, restarts, circuit, source, workflow_id, last_error, rows, cols, version,
        pending_input, terminated_at)
    values (%(session_id)s, %(office_id)s, %(role)s, %(agent)s, %(machine_id)s, %(working_dir)s,
        %(status)s, %(current_job_id)s, %(restarts)s, %(circuit)s, %(source)s, %(workflow_id)s,
        %(last_error)s, coalesce(%(rows)s, 40), coalesce(%(cols)s, 120), %(version)s,
        %(pending_input)s, case when %(status)s = 'terminated' then now() end)
    on conflict (id) do update set
        working_dir = excluded.working_dir, status = excluded.status,
        current_job_id = excluded.current_job_id, restarts = excluded.restarts,
        circuit = excluded.circuit, last_error = excluded.last_error,
        rows = coalesce(%(rows)s, s.rows), cols = coalesce(%(cols)s, s.cols),
        version = excluded.version, pending_input = excluded.pending_input,
        updated_at = now(), last_activity_at = now(),
        terminated_at = coalesce(s.terminated_at, excluded.terminated_at)
    where s.version < excluded.version
    returning s.id)
select pg_notify('session_status', id) from written
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

# the end, its event and the NOTIFY for job schedulers happen once: a retry finds the job
# finished, ends nothing, and so appends and announces nothing
_JOB_END = """
with ended as (
    insert into jobs as j (id, office_id, session_id, status, prompt, completion, error,
        started_at, finished_at)
    values (%(job_id)s, %(office_id)s, %(session_id)s, %(status)s, '', %(completion)s,
        %(error)s, now(), now())
    on conflict (id) do update set status = excluded.status, completion = excluded.completion,
        error = excluded.error, finished_at = excluded.finished_at, updated_at = now()
    where j.finished_at is null and j.session_id = excluded.session_id
    returning j.id),
event as (
    insert into session_events (office_id, session_id, job_id, kind, data)
    select %(office_id)s, %(session_id)s, id, %(event_kind)s::text, %(event_data)s from ended
    where %(event_kind)s::text is not null)
select pg_notify('job_events', %(notice)s) from ended
"""

_EVENT = """
insert into session_events (office_id, session_id, job_id, kind, data)
values (%s, %s, %s, %s, %s)
"""


async def write_batch(conn: AsyncConnection, batch: RecordBatch) -> None:
    """Queue the batch's statements on `conn` (in a pipeline, they are sent together; the
    caller decides the transaction)."""
    if batch.session is not None:
        row = batch.session.model_dump()
        row["pending_input"] = Jsonb(row["pending_input"]) if row["pending_input"] else None
        await conn.execute(_SESSION_UPSERT, row)
    if batch.job is not None:
        await _write_job(conn, batch.job)
    if batch.event is not None:
        ev = batch.event
        await conn.execute(
            _EVENT, (ev.office_id, ev.session_id, ev.job_id, ev.kind, Jsonb(ev.data))
        )


async def _write_job(conn: AsyncConnection, job: JobRecord) -> None:
    params = job.model_dump()
    params["completion"] = Jsonb(job.completion) if job.completion is not None else None
    if not job.final:
        await conn.execute(_JOB_START, params)
        return
    params["event_data"] = Jsonb(job.event_data)
    params["notice"] = json.dumps({"job_id": job.job_id, "session_id": job.session_id,
                                   "office_id": job.office_id, "status": job.status})
    await conn.execute(_JOB_END, params)


