"""PgOutputStore against the real Postgres: batches, offsets, NOTIFY, retention,
back-pressure and an unreachable database."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
from psycopg_pool import AsyncConnectionPool

from activities.output_store import PgOutputStore
from db import notify, output
from tests.support.waiting import wait_for


def sid() -> str:
    return f"store-{uuid.uuid4().hex[:10]}"


async def rows_of(pool, session_id: str) -> list[tuple[int, int, bytes]]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "select start_offset, end_offset, data from session_output where session_id = %s"
            " order by start_offset", (session_id,))).fetchall()
    return [(a, b, bytes(d)) for a, b, d in rows]


async def test_batches_are_rows_of_at_most_64k_with_contiguous_offsets_and_a_notify(pool, settings):
    s = sid()
    store = PgOutputStore(pool, interval_s=0.05)
    store.start()
    listener = await psycopg.AsyncConnection.connect(settings.effective_database_url(),
                                                     autocommit=True)
    try:
        await listener.execute("listen session_output")
        payload = bytes(range(256)) * 1000  # every byte value, 256 000 bytes
        for i in range(0, len(payload), 10_000):
            store.append(s, i, payload[i:i + 10_000])
        assert store.pending(s) > 0
        notes = []

        async def notified():
            async for note in listener.notifies(timeout=5):
                notes.append(note.payload)
                if note.payload == f"{s}:{len(payload)}":
                    return
        await asyncio.wait_for(notified(), 10)
        rows = await rows_of(pool, s)
        assert b"".join(d for _, _, d in rows) == payload
        assert rows[0][0] == 0 and all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
        assert all(end - start == len(d) <= 64 * 1024 for start, end, d in rows)
        assert store.pending(s) == 0 and store.pending_total() == 0
    finally:
        await listener.close()
        await store.close()


async def test_a_little_output_is_saved_within_the_interval(pool):
    s = sid()
    store = PgOutputStore(pool, interval_s=0.1)
    store.start()
    try:
        started = time.monotonic()
        store.append(s, 0, b"$ ")
        await wait_for(lambda: rows_of(pool, s), timeout=5, interval=0.01, what="the row")
        assert time.monotonic() - started < 1.0
    finally:
        await store.close()


async def test_retention_keeps_the_tail_and_reads_say_where_it_starts(pool):
    s = sid()
    store = PgOutputStore(pool, retention_bytes=256 * 1024)
    chunk = b"x" * 32 * 1024
    for i in range(40):  # 1.25 MiB
        store.append(s, i * len(chunk), chunk)
        await store.flush(s)
    end = 40 * len(chunk)
    rows = await rows_of(pool, s)
    kept = rows[-1][1] - rows[0][0]
    assert rows[-1][1] == end
    assert 256 * 1024 <= kept <= 256 * 1024 + 256 * 1024 // 8 + 64 * 1024
    start, next_offset, data, kept_from = await output.read(pool, s, 0, 64 * 1024)
    assert kept_from == rows[0][0] > 0 and start == kept_from
    assert next_offset == start + len(data) and len(data) == 64 * 1024
    start, next_offset, data, kept_from = await output.read(pool, s, end - 10, 100)
    assert (start, next_offset, len(data)) == (end - 10, end, 10)


async def test_end_offset_continues_from_memory_or_the_table(pool):
    s = sid()
    store = PgOutputStore(pool)
    assert await store.end_offset(s) == 0
    store.append(s, 0, b"hello ")
    store.append(s, 6, b"world")
    assert await store.end_offset(s) == 11  # pending bytes count
    await store.flush()
    store.forget(s)
    assert await PgOutputStore(pool).end_offset(s) == 11
    assert await store.end_offset(s) == 11


async def test_congestion_and_wait_drained(pool):
    s = sid()
    store = PgOutputStore(pool, session_cap=100_000, total_cap=1_000_000)
    store.start()
    try:
        store.append(s, 0, b"y" * 150_000)
        assert store.congested(s)
        await asyncio.wait_for(store.wait_drained(s), 10)
        assert not store.congested(s) and store.pending(s) <= 50_000
        others = [sid() for _ in range(3)]
        for o in others:  # the total cap counts every session
            store.append(o, 0, b"z" * 400_000)
        assert store.congested(s)
        await asyncio.wait_for(store.wait_drained(s), 10)
        assert store.pending_total() <= 750_000
    finally:
        await store.close()


async def test_postgres_away_keeps_the_bytes_and_a_later_flush_writes_them(pool):
    s = sid()
    dead = AsyncConnectionPool("postgresql://postgres@127.0.0.1:1/postgres", min_size=0,
                               max_size=1, timeout=0.5, open=False,
                               kwargs={"connect_timeout": 1})
    await dead.open()
    store = PgOutputStore(dead)
    try:
        store.append(s, 0, b"one ")
        for attempt in range(2):
            try:
                await store.flush()
                raise AssertionError("the flush should fail")
            except AssertionError:
                raise
            except Exception:
                pass
            store.append(s, 4 + attempt * 4, b"two " if attempt == 0 else b"six ")
        assert store.pending(s) == 12
        store.pool = pool  # Postgres is back
        await store.flush()
        rows = await rows_of(pool, s)
        assert b"".join(d for _, _, d in rows) == b"one two six "
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
    finally:
        await dead.close()


async def test_a_watched_session_is_saved_ahead_of_the_fleets_batch(pool):
    """A session someone watches (the API NOTIFYs `session_viewers`) is saved at once and is
    not paused by the fleet's backlog, while the others wait for their batch."""
    watched, other = sid(), sid()
    store = PgOutputStore(pool, interval_s=600, flush_bytes=1 << 30, total_cap=100_000)
    store.start()
    try:
        store.append(watched, 0, b"hello ")  # known to the store before anyone watches
        store.append(other, 0, b"x" * 150_000)  # the fleet's backlog: over the total cap
        assert store.congested(watched) and store.congested(other)

        async def announced():  # said again until heard (the store listens from its start)
            await notify.announce_viewers(pool, [watched])
            return not store.congested(watched)
        await wait_for(announced, timeout=30, interval=0.2, what="the viewer to be heard")
        store.append(watched, 6, b"world")
        assert not store.congested(watched) and store.congested(other)
        rows = await wait_for(lambda: _saved(pool, watched, 11), timeout=30, what="its bytes")
        assert b"".join(d for _, _, d in rows) == b"hello world"
        assert await rows_of(pool, other) == []  # still in the fleet's batch, due later
        await store.flush(other)
        assert b"".join(d for _, _, d in await rows_of(pool, other)) == b"x" * 150_000
    finally:
        await store.close()


async def _saved(pool, session_id: str, end: int):
    rows = await rows_of(pool, session_id)
    return rows if rows and rows[-1][1] == end else None


async def test_a_watched_sessions_overlapping_saves_still_trim_but_never_above_one_under_way(
        pool):
    """A watched session's saves overlap (each on a live connection of its own), so retention
    cannot wait for a save that holds its bytes alone: it trims up to the start of the
    earliest save still under way, and once that one lands the rows are contiguous."""
    s, kib = sid(), 1024
    retention = 256 * kib
    store = PgOutputStore(pool, retention_bytes=retention)
    store.start()
    blocker = await psycopg.AsyncConnection.connect(pool.conninfo, connect_timeout=10)
    try:
        chunk = b"y" * 32 * kib
        store.append(s, 0, chunk)
        store.watch(s)
        for i in range(1, 16):  # 512 KiB, saved
            store.append(s, i * len(chunk), chunk)
        await store.flush(s)
        held = 16 * len(chunk)
        # another transaction holds the key of the next save's first row: that save waits
        await blocker.execute("insert into session_output (session_id, start_offset,"
                              " end_offset, data) values (%s, %s, %s, 'z')", (s, held, held + 1))
        store.append(s, held, chunk)

        async def waits_for_the_key():
            async with pool.connection() as conn:
                return (await (await conn.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                    " and query like '%%insert into session_output%%'")).fetchone())[0]
        await wait_for(waits_for_the_key, timeout=30, what="the save to wait for the held key")
        end = held + len(chunk)
        for _ in range(32):  # 1 MiB more, saved on the other live connections meanwhile
            store.append(s, end, chunk)
            end += len(chunk)
            await asyncio.sleep(0.005)
        rows = await wait_for(lambda: _saved(pool, s, end), timeout=30, what="the later bytes")
        assert rows[0][0] == held + len(chunk), "trimmed up to the save under way, not above"
        await blocker.rollback()
        rows = await wait_for(lambda: _saved_from(pool, s, held), timeout=30,
                              what="the held save to land")
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False)), "a gap"
        store.append(s, end, chunk)
        end += len(chunk)
        await store.flush(s)
        rows = await rows_of(pool, s)
        assert rows[-1][1] == end and rows[0][0] > held
        assert retention <= end - rows[0][0] <= retention + retention // 8 + 64 * kib
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False)), "a gap"
    finally:
        await blocker.close()
        await store.close()


async def _saved_from(pool, session_id: str, start: int):
    rows = await rows_of(pool, session_id)
    return rows if rows and rows[0][0] == start else None
