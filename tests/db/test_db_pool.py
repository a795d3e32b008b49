"""The connection pools every process uses (db/pool.py), against the real Postgres."""

from __future__ import annotations

import psycopg

from db.pool import open_pool


async def test_a_connection_whose_backend_is_gone_is_not_handed_out(settings):
    """A connection handed back a moment ago is handed out again without a test query,
    unless its server has closed it since (what a Postgres restart does to every one)."""
    url = settings.effective_database_url()
    pool = await open_pool(url, min_size=1, max_size=1, name="test-check")
    try:
        async with pool.connection() as conn:
            pid = (await (await conn.execute("select pg_backend_pid()")).fetchone())[0]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            # returns once the backend has exited, so its socket is closed
            assert (await (await admin.execute("select pg_terminate_backend(%s, 10000)",
                                               (pid,))).fetchone())[0]
        async with pool.connection() as conn:  # well within a second of its return
            again = (await (await conn.execute("select pg_backend_pid()")).fetchone())[0]
        assert again != pid
    finally:
        await pool.close()
