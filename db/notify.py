"""Postgres NOTIFY channels the processes listen on. The triggers and statements that notify
are in the migrations and in db/; this is the one place that names what is listened to."""

from __future__ import annotations

from psycopg import AsyncConnection


async def listen(conn: AsyncConnection, *channels: str) -> None:
    """LISTEN on each channel (an autocommit connection: notifications arrive between
    transactions)."""
    for channel in channels:
        await conn.execute(f"listen {channel}")  # identifiers: our own constants, never input
