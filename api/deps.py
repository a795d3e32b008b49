"""Dependencies, as `Annotated` aliases so a handler's signature says what it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from api import console_auth
from api.auth import Principal, TokenVerifier
from api.live import LiveNotifier
from commands.executor import CommandExecutor
from db import reads
from semo.errors import NotFound
from semo.settings import Settings
from workflows.ids import ID_ANCHORED


@dataclass
class AppState:
    settings: Settings
    pool: AsyncConnectionPool
    executor: CommandExecutor
    verifier: TokenVerifier
    live: LiveNotifier


async def _state(request: Request) -> AppState:
    return request.app.state.semo


State = Annotated[AppState, Depends(_state)]


#: declares the bearer scheme in the OpenAPI schema; the header itself is checked by the verifier
_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT",
                     description="A Supabase-style JWT (`semo token` mints one)")


async def _principal(
    state: State,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The bearer token's user, or (with no Authorization header) the console cookie's."""
    header = request.headers.get("authorization")
    if header is None and console_auth.COOKIE in request.cookies:
        return await console_auth.cookie_principal(state.pool, request, request.method)
    return await state.verifier.verify_async(header)


CurrentUser = Annotated[Principal, Depends(_principal)]

OfficeIdPath = Annotated[str, Path(pattern=ID_ANCHORED)]
SessionIdPath = Annotated[str, Path(pattern=ID_ANCHORED)]


async def can_open(state: AppState, user: Principal, office_id: str) -> bool:
    if user.all_offices or office_id in user.claimed_offices:
        return True
    return office_id in await reads.member_office_ids(state.pool, user.sub)


async def opened_office_ids(state: AppState, user: Principal) -> list[str] | None:
    """The offices the user opens (None: every office)."""
    if user.all_offices:
        return None
    members = await reads.member_office_ids(state.pool, user.sub)
    return sorted(set(user.claimed_offices) | set(members))


def office_not_found(office_id: str) -> NotFound:
    """What a missing office, a deleted one and one the token does not open all answer."""
    return NotFound(f"office {office_id!r} not found")


async def check_access(state: AppState, user: Principal, office_id: str) -> None:
    if not await can_open(state, user, office_id):
        raise office_not_found(office_id)


async def _office(state: State, user: CurrentUser, office_id: OfficeIdPath) -> dict:
    """The office, or 404 alike for one that does not exist and one the token does not open.

    Access is decided first, from the token and `office_members` alone, so that a stranger's
    request takes the same path whether the office exists or not."""
    office = await reads.get_office(state.pool, office_id) \
        if await can_open(state, user, office_id) else None
    if office is None or office["status"] == "deleted":
        raise office_not_found(office_id)
    return office


OfficeRow = Annotated[dict, Depends(_office)]


async def _session(state: State, user: CurrentUser, office_id: OfficeIdPath,
                   session_id: SessionIdPath) -> dict:
    """The session of a live office the token opens: one round trip when it exists (the
    office is looked up alone only to tell which of the two is missing)."""
    session = await reads.get_live_office_session(state.pool, office_id, session_id) \
        if await can_open(state, user, office_id) else None
    if session is None:
        await _office(state, user, office_id)  # an office that is missing says so
        raise NotFound(f"session {session_id!r} not found in office {office_id!r}")
    return session


SessionRow = Annotated[dict, Depends(_session)]

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]

#: the same load-or-404 rules for a caller that has its user already (the console's pages)
load_office, load_session = _office, _session
