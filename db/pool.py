"""Connection pools: one per process, made at start-up, with timeouts."""

from __future__ import annotations

import select
import time

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

#: a connection handed back this recently is handed out again without a round trip to test it
RECENT_S = 1.0


class PooledConnection(AsyncConnection):
    """A connection that remembers when the pool last got it back."""

    returned_at = 0.0


async def _returned(conn: PooledConnection) -> None:
    conn.returned_at = time.monotonic()


async def _check(conn: PooledConnection) -> None:
    """Test a connection before handing it out, as cheaply as it can be trusted.

    One in use a moment ago is only tested for what the server may have sent since (a
    restart closes its socket, which then reads as ready): a readable idle socket, or a
    connection idle for over RECENT_S, gets a round trip (HikariCP's "alive bypass window")."""
    if time.monotonic() - conn.returned_at < RECENT_S and not _readable(conn):
        return
    await AsyncConnectionPool.check_connection(conn)


def _readable(conn: AsyncConnection) -> bool:
    """Has the server sent anything to this idle connection (or has it no socket left)?"""
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True  # then the round trip decides


async def open_pool(database_url: str, *, min_size: int = 1, max_size: int = 10,
                    name: str = "semo") -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        database_url,
        connection_class=PooledConnection,
        min_size=min_size,
        max_size=max_size,
        name=name,
        timeout=10.0,
        open=False,
        # a connection that died with a Postgres restart is replaced, not handed out
        check=_check,
        reset=_returned,
        kwargs={"autocommit": True, "connect_timeout": 10,
                "application_name": f"semo-{name}",
                # no query or open transaction may hang a process forever
                "options": "-c statement_timeout=30s -c idle_in_transaction_session_timeout=60s"},
    )
    await pool.open(wait=True, timeout=30.0)
    return pool  # type: ignore[return-value]


async def ping(pool: AsyncConnectionPool, *, timeout_s: float) -> None:
    """One round trip on a pooled connection: raises when Postgres does not answer."""
    async with pool.connection(timeout=timeout_s) as conn:
        await conn.execute("select 1")
