"""`session_output`: a session's raw terminal output in chunks keyed by byte offset, written by
the client worker's output store, read by the API (output, screen, stream, attach)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

# A batch is one statement (one round trip, atomic without a transaction block): the rows,
# the retention trims of every session due one, then a NOTIFY per session. %b: the bytes go
# as binary (text would hex-encode them). The trims see the table as it was before the
# statement: rows it inserts below a cutoff go with the session's next trim.
_SAVE = """
with saved as (
    insert into session_output (session_id, start_offset, end_offset, data)
    select * from unnest(%s::text[], %s::int8[], %s::int8[], %b::bytea[])
    on conflict do nothing),
trimmed as (
    delete from session_output o
    using unnest(%s::text[], %s::int8[]) as t(session_id, cutoff)
    where o.session_id = t.session_id and o.end_offset <= t.cutoff)
select pg_notify('session_output', x) from unnest(%s::text[]) as x
"""


async def bounds(pool: AsyncConnectionPool, session_id: str) -> tuple[int, int]:
    """(where the kept output starts, where it ends): retention trims the start."""
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "select coalesce(min(start_offset), 0), coalesce(max(end_offset), 0)"
            " from session_output where session_id = %s", (session_id,))).fetchone()
    return row[0], row[1]


async def prepare_writer(conn: AsyncConnection) -> None:
    """The output writer's connection: autocommit, and commits that do not wait for the disk
    (a crash of Postgres may lose the last few milliseconds of output, never reorder it)."""
    await conn.set_autocommit(True)
    await conn.execute("set synchronous_commit to off")


async def release_writer(conn: AsyncConnection) -> None:
    await conn.execute("reset synchronous_commit")


async def save(conn: AsyncConnection, chunks: list[tuple[str, int, bytes]],
               ends: dict[str, int], trims: dict[str, int] | None = None) -> None:
    """Insert `(session_id, start, data)` chunks (a chunk saved before is skipped), drop the
    chunks of each session in `trims` that end at or before its cutoff, and NOTIFY
    `session_output` with `session_id:end` for each session's new end."""
    trims = trims or {}
    await conn.execute(_SAVE, (
        [sid for sid, _, _ in chunks], [start for _, start, _ in chunks],
        [start + len(data) for _, start, data in chunks], [data for _, _, data in chunks],
        list(trims), list(trims.values()),
        [f"{sid}:{end}" for sid, end in ends.items()]))


async def read(pool, session_id: str, since: int, limit: int) -> tuple[int, int, bytes, int]:
    """(start, next_offset, raw bytes, truncated_before) of the session's raw output.

    `start` is where the returned bytes begin: `since`, or later when the chunks before it
    were dropped by retention (then `truncated_before` says from where output is kept).
    """
    async with pool.connection() as conn:
        # the primary key (session_id, start_offset) answers this from the index
        first = await (await conn.execute(
            "select min(start_offset) from session_output where session_id = %s",
            (session_id,))).fetchone()
        kept_from = first[0] or 0
        start = max(since, kept_from)
        rows = await (await conn.execute(
            """select start_offset, data from session_output
               where session_id = %s and end_offset > %s and start_offset < %s
               order by start_offset""", (session_id, start, start + limit))).fetchall()
    buf = bytearray()
    for chunk_start, data in rows:
        data = bytes(data)
        lo = max(start - chunk_start, 0)
        if chunk_start + lo != start + len(buf):
            break  # a gap (should not happen): stop at it
        buf += data[lo:]
        if len(buf) >= limit:
            break
    buf = buf[:limit]
    return start, start + len(buf), bytes(buf), kept_from
