"""Connection pools: one per process, made at start-up, with timeouts."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


async def open_pool(database_url: str, *, min_size: int = 1, max_size: int = 10,
                    name: str = "semo") -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        timeout=10.0,
        open=False,
        # a connection that died with a Postgres restart is replaced, not handed out
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": True, "connect_timeout": 10,
                "application_name": f"semo-{name}",
                # no query or open transaction may hang a process forever
                "options": "-c statement_timeout=30s -c idle_in_transaction_session_timeout=60s"},
    )
    await pool.open(wait=True, timeout=30.0)
    return pool
