"""Token usage rows (`model_responses`, `usage_sessions`): the client worker's writes and the
API's sums. Sums come back per model; semo/usage.py prices them and makes the usage object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from semo.usage import ModelPrice, empty, summarize, summarize_by

COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
          "cache_creation_input_tokens", "cache_creation_1h_input_tokens")


@dataclass
class Response:
    """One model response as a transcript recorded it (its largest counts so far)."""

    session_id: str
    message_id: str
    office_id: str
    job_id: str | None
    model: str
    sidechain: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    responded_at: datetime | None = None

    def merge(self, other: Response) -> None:
        """Take the larger counts of another sighting of the same response."""
        for k in COUNTS:
            setattr(self, k, max(getattr(self, k), getattr(other, k)))
        self.job_id = self.job_id or other.job_id


# One statement: `old` sees the rows as they were before it (a data-modifying CTE's snapshot),
# so what comes back is what each row grew by: 0 for a response recorded before, which is
# what keeps the worker's token counter from counting a re-read transcript again.
_RECORD = f"""
with incoming as (
    select * from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bool[],
                         %s::int8[], %s::int8[], %s::int8[], %s::int8[], %s::int8[],
                         %s::timestamptz[])
        as t(session_id, message_id, office_id, job_id, model, sidechain, {", ".join(COUNTS)},
             responded_at)),
old as (
    select r.* from model_responses r join incoming i using (session_id, message_id)),
up as (
    insert into model_responses as r (session_id, message_id, office_id, job_id, model, sidechain,
        {", ".join(COUNTS)}, responded_at)
    select session_id, message_id, office_id, job_id, model, sidechain, {", ".join(COUNTS)},
        coalesce(responded_at, now()) from incoming
    on conflict (session_id, message_id) do update set
        job_id = coalesce(r.job_id, excluded.job_id),
        {", ".join(f"{k} = greatest(r.{k}, excluded.{k})" for k in COUNTS)}
    where (r.job_id is null and excluded.job_id is not null)
        or {" or ".join(f"excluded.{k} > r.{k}" for k in COUNTS)}
    returning r.session_id, r.message_id, r.model, {", ".join(f"r.{k}" for k in COUNTS)})
select up.model, {", ".join(f"up.{k} - coalesce(old.{k}, 0) as {k}" for k in COUNTS)}
from up left join old using (session_id, message_id)
"""


async def record_responses(conn: AsyncConnection, responses: list[Response]) -> list[dict]:
    """Upsert responses (one per key); returns per written row its model and what each count
    grew by."""
    if not responses:
        return []
    cols = ("session_id", "message_id", "office_id", "job_id", "model", "sidechain", *COUNTS,
            "responded_at")
    params = [[getattr(r, c) for r in responses] for c in cols]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_RECORD, params)
        return await cur.fetchall()


async def mark_session(conn: AsyncConnection, session_id: str, office_id: str) -> None:
    """The session's agent reports usage (its jobs show zeros, not null, before a response)."""
    await conn.execute("insert into usage_sessions (session_id, office_id) values (%s, %s)"
                       " on conflict do nothing", (session_id, office_id))


_SUMS = f"""model, count(*) as responses,
    {", ".join(f"sum({k})::int8 as {k}" for k in COUNTS)}"""


async def _all(pool: AsyncConnectionPool, sql: str, params: Any) -> list[dict]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return await (await cur.execute(sql, params)).fetchall()


async def job_sums(
    pool: AsyncConnectionPool, job_id: str, session_id: str
) -> tuple[bool, list[dict]]:
    """(whether the job's session reports usage, the job's per-model sums)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = await (await cur.execute(
            f"select {_SUMS} from model_responses where job_id = %s group by model order by model",
            (job_id,))).fetchall()
        if rows:
            return True, rows
        marked = await (await cur.execute("select 1 from usage_sessions where session_id = %s",
                                          (session_id,))).fetchone()
        return marked is not None, []


async def session_sums(
    pool: AsyncConnectionPool, session_ids: list[str]
) -> tuple[set[str], list[dict]]:
    """(the sessions that report usage, per-(session, model) sums)."""
    rows = await _all(pool, f"""select session_id, {_SUMS} from model_responses
                                where session_id = any(%s) group by session_id, model
                                order by session_id, model""", (session_ids,))
    marked = await _all(pool, "select session_id from usage_sessions where session_id = any(%s)",
                        (session_ids,))
    return {r["session_id"] for r in marked} | {r["session_id"] for r in rows}, rows


_KEYS = {
    "session": "r.session_id",
    "role": "coalesce(s.role, '')",
    "day": "to_char(r.responded_at at time zone 'UTC', 'YYYY-MM-DD')",
}


async def table_sums(pool: AsyncConnectionPool, office_id: str, group_by: str,
                     since: datetime | None, until: datetime | None) -> list[dict]:
    """Per-(key, model) sums of the office's responses answered in [since, until)."""
    key = _KEYS[group_by]  # KeyError: the route checked it
    return await _all(
        pool,
        f"""select {key} as key, {_SUMS} from model_responses r
                                left join agent_sessions s on s.id = r.session_id
                                where r.office_id = %(office)s
                                  and (%(since)s::timestamptz is null
                                       or r.responded_at >= %(since)s)
                                  and (%(until)s::timestamptz is null or r.responded_at < %(until)s)
                                group by 1, model order by 1, model""",
        {"office": office_id, "since": since, "until": until},
    )


# --- usage objects (priced) -------------------------------------------------------------------


async def job_usage(pool: AsyncConnectionPool, job_id: str, session_id: str,
                    prices: dict[str, ModelPrice]) -> dict | None:
    """The job's usage object; None when its session's agent reports none (a shell)."""
    reports, rows = await job_sums(pool, job_id, session_id)
    return summarize(rows, prices) if reports else None


async def sessions_usage(pool: AsyncConnectionPool, session_ids: list[str],
                         prices: dict[str, ModelPrice]) -> dict[str, dict | None]:
    """Each session's usage object (None for those whose agent reports none)."""
    if not session_ids:
        return {}
    reporting, rows = await session_sums(pool, session_ids)
    by_session = summarize_by(rows, "session_id", prices)
    return {sid: (by_session.get(sid) or empty()) if sid in reporting else None
            for sid in session_ids}


async def office_usage(pool: AsyncConnectionPool, office_id: str,
                       prices: dict[str, ModelPrice]) -> dict | None:
    """The office's usage object; None when none of its sessions ever reported usage."""
    return (await offices_usage(pool, [office_id], prices))[office_id]


async def offices_usage(pool: AsyncConnectionPool, office_ids: list[str],
                        prices: dict[str, ModelPrice]) -> dict[str, dict | None]:
    """Each office's usage object (None for those none of whose sessions reported usage)."""
    rows = await _all(pool, f"""select office_id, {_SUMS} from model_responses
                                where office_id = any(%s) group by office_id, model
                                order by office_id, model""", (office_ids,))
    marked = await _all(pool, "select distinct office_id from usage_sessions"
                        " where office_id = any(%s)", (office_ids,))
    reporting = {r["office_id"] for r in marked} | {r["office_id"] for r in rows}
    by_office = summarize_by(rows, "office_id", prices)
    return {oid: (by_office.get(oid) or empty()) if oid in reporting else None
            for oid in office_ids}


async def usage_table(pool: AsyncConnectionPool, office_id: str, group_by: str,
                      since: datetime | None, until: datetime | None,
                      prices: dict[str, ModelPrice]) -> dict:
    """`GET /usage`: a usage row per key (session, role or UTC day) and their total; the
    total is None, as the office's own usage is, when none of its sessions reports usage."""
    rows = await table_sums(pool, office_id, group_by, since, until)
    keyed = summarize_by(rows, "key", prices)
    reports = bool(rows) or await office_usage(pool, office_id, prices) is not None
    return {"office_id": office_id, "since": since, "until": until, "group_by": group_by,
            "rows": [{"key": key, **usage} for key, usage in keyed.items()],
            "total": summarize(_by_model(rows), prices) if reports else None}


def _by_model(rows: list[dict]) -> list[dict]:
    """Per-(key, model) rows summed per model."""
    out: dict[str, dict] = {}
    for row in rows:
        acc = out.setdefault(row["model"], {"model": row["model"], "responses": 0,
                                            **{k: 0 for k in COUNTS}})
        acc["responses"] += row["responses"]
        for k in COUNTS:
            acc[k] += row[k] or 0
    return list(out.values())


async def with_usage(pool: AsyncConnectionPool, sessions: list[dict],
                     prices: dict[str, ModelPrice]) -> list[dict]:
    """The session dicts, each with its `usage` (the same two queries for any number)."""
    found = await sessions_usage(pool, [s["session_id"] for s in sessions], prices)
    return [{**s, "usage": found.get(s["session_id"])} for s in sessions]
