"""The console's login codes and browser sessions (table rows keyed by a SHA-256 hash of
the secret: the secret itself is only ever in the link or the cookie)."""

from __future__ import annotations

from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from db.reads import _one


async def add_login_code(pool: AsyncConnectionPool, code_hash: str, sub: str,
                         office_ids: list[str], ttl_s: float) -> datetime:
    """Store a code; returns when it expires. Codes long past are swept on the way."""
    async with pool.connection() as conn:
        await conn.execute(
            "delete from console_login_codes where expires_at < now() - interval '1 day'")
        row = await (await conn.execute(
            """insert into console_login_codes (code_hash, sub, office_ids, expires_at)
               values (%s, %s, %s, now() + make_interval(secs => %s)) returning expires_at""",
            (code_hash, sub, office_ids, ttl_s))).fetchone()
    return row[0]


async def take_login_code(pool: AsyncConnectionPool, code_hash: str) -> dict | None:
    """The code's grant, once: the update that marks it used is the check, so two browsers
    racing with one link cannot both win."""
    return await _one(pool, """update console_login_codes set used_at = now()
        where code_hash = %s and used_at is null and expires_at > now()
        returning sub, office_ids""", (code_hash,))


async def add_session(pool: AsyncConnectionPool, id_hash: str, sub: str, office_ids: list[str],
                      expires_at: datetime) -> None:
    async with pool.connection() as conn:
        await conn.execute("delete from console_sessions where expires_at < now()")
        await conn.execute("""insert into console_sessions (id_hash, sub, office_ids, expires_at)
            values (%s, %s, %s, %s)""", (id_hash, sub, office_ids, expires_at))


async def get_session(pool: AsyncConnectionPool, id_hash: str) -> dict | None:
    return await _one(pool, """select sub, office_ids, expires_at from console_sessions
        where id_hash = %s and expires_at > now()""", (id_hash,))


async def delete_session(pool: AsyncConnectionPool, id_hash: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("delete from console_sessions where id_hash = %s", (id_hash,))
