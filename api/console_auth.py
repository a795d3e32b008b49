"""How a browser logs in to the console, and how its cookie stands in for a bearer token.

A one-time login code (in the link `semo dev` prints) or a pasted token is exchanged for a
console session: a random id in an HttpOnly, SameSite=Strict cookie, whose SHA-256 is a row in
`console_sessions` with the grant it carries (the `sub` and office ids of the token that made
it). The cookie then authenticates the REST routes, the SSE streams and the attach WebSocket
with exactly the bearer token's rules (`api/deps.py` turns it into the same `Principal`), so
office isolation is the REST routes' own. Tokens never reach the page.

CSRF: the cookie is SameSite=Strict, and a cookie-authenticated request that changes
something must also carry the `X-Semo-Console` header (a custom header no other site can make
a browser send here without a CORS preflight, which this API never grants) and, when the
browser says where it comes from, an `Origin` that is this API's own. A WebSocket cannot carry
custom headers, so an attach authenticated by the cookie must come from this origin.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool
from starlette.requests import HTTPConnection

from api.auth import Principal
from db import console as rows
from semo.errors import Forbidden, Unauthorized

COOKIE = "semo_console"
CSRF_HEADER = "x-semo-console"
#: a login link works once, for this long
CODE_TTL_S = 600
#: a console session lasts this long (a pasted token's session no longer than the token)
SESSION_TTL_S = 12 * 3600
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def office_ids(user: Principal) -> list[str]:
    return ["*"] if user.all_offices else sorted(user.claimed_offices)


def _principal(row: dict) -> Principal:
    ids = row["office_ids"]
    return Principal(sub=row["sub"], claimed_offices=None if "*" in ids else frozenset(ids))


async def mint_login_code(pool: AsyncConnectionPool, user: Principal) -> tuple[str, datetime]:
    """A code that logs a browser in as `user` once, within CODE_TTL_S."""
    code = secrets.token_urlsafe(32)
    expires_at = await rows.add_login_code(pool, _hash(code), user.sub, office_ids(user),
                                           CODE_TTL_S)
    return code, expires_at


async def take_login_code(pool: AsyncConnectionPool, code: str) -> Principal | None:
    """The code's user, or None for an unknown, used or expired code."""
    if not code or len(code) > 200:
        return None
    row = await rows.take_login_code(pool, _hash(code))
    return None if row is None else _principal(row)


async def start_session(pool: AsyncConnectionPool, user: Principal,
                        not_after: datetime | None = None) -> tuple[str, int]:
    """A new console session for `user`: (cookie value, max age in seconds)."""
    expires_at = datetime.now(UTC) + timedelta(seconds=SESSION_TTL_S)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    value = secrets.token_urlsafe(32)
    await rows.add_session(pool, _hash(value), user.sub, office_ids(user), expires_at)
    return value, max(1, int((expires_at - datetime.now(UTC)).total_seconds()))


async def end_session(pool: AsyncConnectionPool, value: str | None) -> None:
    if value:
        await rows.delete_session(pool, _hash(value))


async def session_user(pool: AsyncConnectionPool, value: str | None) -> Principal | None:
    """The user of a console cookie, or None (no cookie, unknown or expired)."""
    if not value or len(value) > 200:
        return None
    row = await rows.get_session(pool, _hash(value))
    return None if row is None else _principal(row)


def own_origin(conn: HTTPConnection) -> str:
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    return f"{scheme}://{conn.headers.get('host', '')}"


def same_origin(conn: HTTPConnection, *, required: bool) -> bool:
    origin = conn.headers.get("origin")
    if origin is None:
        return not required
    return origin == own_origin(conn)


async def cookie_principal(pool: AsyncConnectionPool, conn: HTTPConnection,
                           method: str | None) -> Principal:
    """The principal of a request that brought a console cookie and no Authorization header.

    `method` is the HTTP method (None for a WebSocket, which must come from this origin)."""
    user = await session_user(pool, conn.cookies.get(COOKIE))
    if user is None:
        raise Unauthorized("the console session has expired or was ended: log in again at "
                           "/console/login")
    if method is None:
        if not same_origin(conn, required=True):
            raise Forbidden("a console cookie opens a WebSocket only from the console's own origin")
    elif method not in _SAFE_METHODS:
        if conn.headers.get(CSRF_HEADER) != "1" or not same_origin(conn, required=False):
            raise Forbidden("a request authenticated by the console cookie must come from the "
                            "console (X-Semo-Console: 1, from this origin)")
    return user
