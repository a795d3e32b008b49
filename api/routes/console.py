"""The web console: `/console/...` pages, the login that gives a browser its cookie, and the
static files they load.

The pages are server-rendered shells (api/console/templates) that say which office or session
they show; everything on them comes from the REST routes and streams, called by
api/console/static/console.js with the console cookie, so the console can do nothing the API
does not allow. A page is only rendered to a logged-in browser (else: to the login page), and
only for an office the user opens (else: 404, as the REST routes answer).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

import httpx
import jwt
from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from api import console_auth
from api.auth import Principal
from api.deps import CurrentUser, OfficeIdPath, SessionIdPath, State, load_office, load_session
from semo.errors import Forbidden, NotFound, SemoError

HERE = Path(__file__).resolve().parent.parent / "console"
STATIC = HERE / "static"
VENDOR = HERE / "build" / "vendor"
templates = Jinja2Templates(directory=HERE / "templates")

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/console", tags=["console"])

#: where `next` may point: a path of the console, nothing else (no open redirect)
_CONSOLE_ROOT = "/console/"
SUPABASE_TIMEOUT_S = 10.0


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.include_router(api_router)
    app.mount("/console/static", CachedStatic(directory=STATIC), name="console-static")
    app.mount("/console/vendor", CachedStatic(directory=VENDOR, check_dir=False),
              name="console-vendor")


class CachedStatic(StaticFiles):
    """Static files asked for by their content hash (`?v=`), so they may be kept a year."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


@lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def asset(name: str) -> str:
    """The URL of a console file (`console.js`) or a vendor one (`vendor/xterm.js`), with its
    content hash: a new build is a new URL, so caches never serve an old one."""
    folder, rel = (VENDOR, name.removeprefix("vendor/")) if name.startswith("vendor/") \
        else (STATIC, name)
    path = folder / rel
    try:
        version = _digest(path, path.stat().st_mtime_ns)
    except OSError:
        version = "missing"  # not built: `make console`
    prefix = "/console/vendor/" if folder is VENDOR else "/console/static/"
    return f"{prefix}{rel}?v={version}"


templates.env.globals["asset"] = asset


def safe_next(value: str | None) -> str:
    """`next` when it is a console path, else the office list."""
    if not value or not value.startswith(_CONSOLE_ROOT) or "//" in value or "\\" in value \
            or any(ord(c) < 0x20 for c in value):
        return _CONSOLE_ROOT
    return value


def _page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    # not "no-referrer": Chromium then sends `Origin: null` with a form, which the check refuses
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    return response


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303)


def _set_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(console_auth.COOKIE, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


async def _user(state, request: Request) -> Principal | None:
    return await console_auth.session_user(state.pool, request.cookies.get(console_auth.COOKIE))


# --- login --------------------------------------------------------------------------------


def _login_page(request: Request, state, next_: str, error: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    return _page(request, "login.html", status_code, next=next_, error=error,
                 supabase=bool(state.settings.supabase_url and state.settings.supabase_key),
                 user=None)


def _logged_in(request: Request, value: str, max_age: int, next_: str) -> HTMLResponse:
    """The cookie, and on to `next` by a page of our own rather than a redirect: a
    SameSite=Strict cookie is not sent on a redirect that a link on another site started,
    but it is on the navigation this page starts."""
    response = _page(request, "continue.html", next=next_, user=None)
    _set_cookie(response, request, value, max_age)
    return response


@router.get("/favicon.ico")
async def favicon():
    """What every browser asks for first; the console's icon."""
    return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/console")
async def console_root():
    return RedirectResponse(_CONSOLE_ROOT, status_code=307)


@router.get("/console/login")
async def login_page(request: Request, state: State, code: str | None = None,
                     next: Annotated[str | None, Query(max_length=2000)] = None):
    next_ = safe_next(next)
    if code is None:
        return _login_page(request, state, next_)
    user = await console_auth.take_login_code(state.pool, code)
    if user is None:
        return _login_page(request, state, next_, status_code=401,
                           error="This login link has expired or has been used already. "
                                 "Run `semo console` (or restart `semo dev`) for a new one, "
                                 "or paste a token below.")
    value, max_age = await console_auth.start_session(state.pool, user)
    return _logged_in(request, value, max_age, next_)


def _form_origin_ok(request: Request) -> bool:
    return console_auth.same_origin(request, required=False)


@router.post("/console/login")
async def login_with_token(request: Request, state: State,
                           token: Annotated[str, Form(max_length=20000)],
                           next: Annotated[str | None, Form(max_length=2000)] = None):
    next_ = safe_next(next)
    if not _form_origin_ok(request):
        return _login_page(request, state, next_, "Log in from this console's own page.", 403)
    return await _token_login(request, state, token.strip(), next_)


async def _token_login(request: Request, state, token: str, next_: str) -> HTMLResponse:
    try:
        user = await state.verifier.verify_async(f"Bearer {token}")
    except SemoError as err:
        return _login_page(request, state, next_, f"That token was refused: {err.detail}.",
                           err.status)
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    not_after = datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None
    value, max_age = await console_auth.start_session(state.pool, user, not_after)
    return _logged_in(request, value, max_age, next_)


@router.post("/console/login/supabase")
async def login_with_supabase(request: Request, state: State,
                              email: Annotated[str, Form(max_length=320)],
                              password: Annotated[str, Form(max_length=1000)],
                              next: Annotated[str | None, Form(max_length=2000)] = None):
    """Email and password, checked by the Supabase project's auth server; the access token
    it answers is then taken like a pasted one (and stays on the server)."""
    next_ = safe_next(next)
    settings = state.settings
    if not (settings.supabase_url and settings.supabase_key):
        return _login_page(request, state, next_, "No Supabase project is configured.", 404)
    if not _form_origin_ok(request):
        return _login_page(request, state, next_, "Log in from this console's own page.", 403)
    key = settings.supabase_key.get_secret_value()
    try:
        async with httpx.AsyncClient(timeout=SUPABASE_TIMEOUT_S) as client:
            r = await client.post(f"{settings.supabase_url.rstrip('/')}/auth/v1/token",
                                  params={"grant_type": "password"},
                                  headers={"apikey": key, "Authorization": f"Bearer {key}"},
                                  json={"email": email, "password": password})
    except httpx.HTTPError:
        return _login_page(request, state, next_, "The Supabase project did not answer; try "
                                                  "again.", 503)
    token = r.json().get("access_token") if r.status_code == 200 else None
    if not isinstance(token, str):
        return _login_page(request, state, next_, "Supabase refused that email and password.", 401)
    return await _token_login(request, state, token, next_)


@router.post("/console/logout")
async def logout(request: Request, state: State):
    if not _form_origin_ok(request):
        raise Forbidden("log out from the console's own page")
    await console_auth.end_session(state.pool, request.cookies.get(console_auth.COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(console_auth.COOKIE, path="/")
    return response


class LoginCodeCreate(BaseModel):
    next: str = Field(default=_CONSOLE_ROOT, max_length=2000,
                      description="the console page the link opens (a path under /console/)")


class LoginCode(BaseModel):
    code: str
    url: str
    expires_at: datetime


@api_router.post("/login-codes", status_code=201, response_model=LoginCode)
async def create_login_code(request: Request, state: State, user: CurrentUser,
                            body: LoginCodeCreate | None = None):
    """A one-time link that logs a browser in to the console as this token's user (the same
    offices), once, within ten minutes."""
    code, expires_at = await console_auth.mint_login_code(state.pool, user)
    next_ = safe_next((body or LoginCodeCreate()).next)
    base = str(request.base_url).rstrip("/")
    return {"code": code, "expires_at": expires_at,
            "url": f"{base}/console/login?{urlencode({'code': code, 'next': next_})}"}


# --- pages --------------------------------------------------------------------------------


@router.get("/console/")
async def offices_page(request: Request, state: State):
    user = await _user(state, request)
    if user is None:
        return _to_login(request)
    return _page(request, "offices.html", user=user, page="offices",
                 machine_id=state.settings.machine_id)


@router.get("/console/offices/{office_id}")
async def office_page(request: Request, state: State, office_id: OfficeIdPath):
    user = await _user(state, request)
    if user is None:
        return _to_login(request)
    try:
        office = await load_office(state, user, office_id)
    except NotFound as err:
        return _page(request, "not_found.html", 404, user=user, detail=err.detail)
    return _page(request, "office.html", user=user, page="office", office=office)


@router.get("/console/offices/{office_id}/sessions/{session_id}")
async def session_page(request: Request, state: State, office_id: OfficeIdPath,
                       session_id: SessionIdPath):
    user = await _user(state, request)
    if user is None:
        return _to_login(request)
    try:
        session = await load_session(state, user, office_id, session_id)
        office = await load_office(state, user, office_id)
    except NotFound as err:
        return _page(request, "not_found.html", 404, user=user, detail=err.detail)
    return _page(request, "session.html", user=user, page="session", session=session,
                 office=office, office_url=f"/console/offices/{quote(office_id)}")
