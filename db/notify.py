"""Postgres NOTIFY channels the processes listen on. The triggers and statements that notify
are in the migrations and in db/; this is the one place that names what is listened to."""

from __future__ import annotations

from psycopg import AsyncConnection

#: the API says a session has a viewer (payload: its id) while one follows its output; the
#: client worker's output store saves that session's bytes ahead of the rest
SESSION_VIEWERS = "session_viewers"


async def connect(conninfo: str) -> AsyncConnection:
    """A connection of its own for LISTEN (held for as long as one listens; not a pool's)."""
    return await AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10)


async def listen(conn: AsyncConnection, *channels: str) -> None:
    """LISTEN on each channel (an autocommit connection: notifications arrive between
    transactions)."""
    for channel in channels:
        await conn.execute(f"listen {channel}")  # identifiers: our own constants, never input


async def announce_viewers(pool, session_ids: list[str]) -> None:
    """NOTIFY `session_viewers` once for each of `session_ids`."""
    async with pool.connection() as conn:
        await conn.execute("select pg_notify('session_viewers', x) from unnest(%s::text[]) as x",
                           (session_ids,))
