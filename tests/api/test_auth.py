"""Authentication and office isolation, on every route of the API (SPEC §4).

The routes are read from the app itself, so a route added later is covered without editing
this file. Each one must answer 401 problem+json to a missing, malformed, expired, wrongly
signed or wrong-audience token, and 404 to a valid token for another office, the same 404
a missing office gets (nothing tells a stranger that the office exists). Also: the API refuses
to start without a way to check tokens, and the JWKS path works against a loopback stand-in
for a JWKS endpoint (with a timeout on the fetch).
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import Principal, TokenVerifier, mint_token
from api.main import create_app
from dev.embedded import free_port
from semo.errors import Unauthorized, Unavailable
from semo.settings import Settings
from tests.support.tokens import JWT_SECRET, MACHINE_ID, token_for
from tests.support.waiting import wait_for

HEALTH = {"/healthz", "/readyz"}
STRANGER = "stranger"


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI schema but the health checks."""
    app = create_app(Settings(jwt_secret=JWT_SECRET))  # only for its schema: nothing starts
    return sorted((method.upper(), path) for path, item in app.openapi()["paths"].items()
                  if path not in HEALTH for method in item
                  if method in ("get", "post", "put", "patch", "delete"))


ROUTES = api_routes()

#: a valid body for each mutating route, so that a missing check would really act
BODIES = {
    ("POST", "/api/offices"): {"name": "intruder", "machine_id": MACHINE_ID, "warm_roles": []},
    ("POST", "/api/offices/{office_id}/sessions"): {"role": "BE"},
    ("POST", "/api/offices/{office_id}/sessions/{session_id}/prompt"): {"prompt": "echo pwned"},
    ("POST", "/api/offices/{office_id}/sessions/{session_id}/keys"): {"keys": ["ctrl+c"]},
    ("POST", "/api/offices/{office_id}/sessions/{session_id}/answer"): {"input_id": "in-x",
                                                                        "decision": "allow"},
    ("POST", "/api/offices/{office_id}/webhooks"): {"url": "http://93.184.216.34/in",
                                                    "events": ["job.done"]},
}


def claims(**over) -> dict:
    now = int(time.time())
    base = {"sub": "tester", "aud": "authenticated", "role": "authenticated", "iat": now,
            "exp": now + 600, "app_metadata": {"office_ids": ["*"]}}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict, secret: str = JWT_SECRET, **kw) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", **kw)


@functools.cache
def bad_authorizations() -> dict[str, str | None]:
    """Authorization header values that must all get a 401 (None: no header)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "no token": None,
        "empty header": "",
        "not a jwt": "Bearer not-a-jwt",
        "empty bearer": "Bearer",
        "basic auth": "Basic dXNlcjpwYXNz",
        "two tokens": f"Bearer {token_for(['*'])} {token_for(['*'])}",
        "truncated signature": f"Bearer {token_for(['*'])[:-6]}",
        "expired": f"Bearer {token_for(['*'], ttl_s=-120)}",
        "wrong secret": f"Bearer {mint_token('another-secret-' + 'y' * 32, 'tester', ['*'])}",
        "wrong audience": f"Bearer {token_for(['*'], audience='anon')}",
        "no audience": f"Bearer {hs(claims(aud=None))}",
        "no exp": f"Bearer {hs(claims(exp=None))}",
        "no sub (a Supabase anon key)": f"Bearer {hs(claims(sub=None, role='anon'))}",
        "alg none": "Bearer " + jwt.encode(claims(), None, algorithm="none"),
        "RS256 without a JWKS": "Bearer " + jwt.encode(claims(), rsa_key, algorithm="RS256"),
        "not yet valid": f"Bearer {hs(claims(nbf=int(time.time()) + 3600))}",
        "office_ids not a list": f"Bearer {hs(claims(app_metadata={'office_ids': '*'}))}",
        "app_metadata not an object": f"Bearer {hs(claims(app_metadata='*'))}",
    }


def fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no test value for a parameter of {path}: add it to `target`"
    return path


def assert_problem(r: httpx.Response, status: int, what: str) -> dict:
    assert r.status_code == status, (what, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), (what, r.headers)
    body = r.json()
    assert body["status"] == status and body["detail"], (what, body)
    return body


@pytest.fixture(scope="module")
async def target(api_url, pool):
    """An office of `tester` with a live session, a finished job and a command: real ids for
    every path parameter, so a missing check would find something to act on."""
    office = f"t-auth-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers={
            "Authorization": f"Bearer {token_for(['*'])}"}) as http:
        r = await http.post("/api/offices", json={"office_id": office, "name": "auth target",
                                                  "machine_id": MACHINE_ID, "agent": "shell",
                                                  "warm_roles": []})
        assert r.status_code == 201, r.text
        r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": "printf '[SEMO:%s]\\n' DONE"})
        assert r.status_code == 200, r.text
        sent = r.json()

        async def done():
            job = (await http.get(f"/api/offices/{office}/jobs/{sent['job_id']}")).json()
            return job["status"] == "done"

        await wait_for(done, what="the target's job to finish")
        # a webhook for an event the target never has (nothing is ever sent to it)
        r = await http.post(f"/api/offices/{office}/webhooks",
                            json={"url": "http://93.184.216.34/in", "events": ["job.timed_out"]})
        assert r.status_code == 201, r.text
        yield {"office_id": office, "session_id": sid, "job_id": sent["job_id"],
               "command_id": sent["command_id"], "webhook_id": r.json()["webhook_id"]}
        await http.delete(f"/api/offices/{office}")


async def _send(client: httpx.AsyncClient, method: str, path: str, auth: str | None,
                ids: dict[str, str]) -> httpx.Response:
    headers = {} if auth is None else {"Authorization": auth}
    body = BODIES.get((method, path))
    return await client.request(method, fill(path, ids), json=body, headers=headers)


def test_routes_are_found():
    paths = {p for _, p in ROUTES}
    for expected in ("/api/offices/{office_id}/sessions/{session_id}/output/stream",
                     "/api/offices/{office_id}/sessions/{session_id}/screen",
                     "/api/offices/{office_id}/jobs/{job_id}",
                     "/api/offices/{office_id}/commands/{command_id}"):
        assert expected in paths


@pytest.mark.parametrize("method,path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_bad_tokens_get_401(api_url, target, method, path):
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        for what, auth in bad_authorizations().items():
            r = await _send(client, method, path, auth, target)
            body = assert_problem(r, 401, f"{method} {path}: {what}")
            assert r.headers.get("www-authenticate") == "Bearer", what
            token = (auth or "").partition(" ")[2]
            if len(token) > 8:
                assert token not in r.text and token[-20:] not in r.text, "a token in an answer"
            assert "Bearer" not in body["detail"] or what in ("no token", "empty header",
                                                              "basic auth", "empty bearer",
                                                              "two tokens")


@pytest.mark.parametrize("method,path", [(m, p) for m, p in ROUTES if "{office_id}" in p],
                         ids=[f"{m} {p}" for m, p in ROUTES if "{office_id}" in p])
async def test_other_offices_token_gets_the_404_a_missing_office_gets(api_url, target, pool,
                                                                       method, path):
    strangers = {
        "token for another office": token_for(["another-office"], sub=STRANGER),
        "token for no office": token_for([], sub=STRANGER),
        "office id in another case": token_for([target["office_id"].upper()], sub=STRANGER),
        "office id prefix": token_for([target["office_id"][:-1]], sub=STRANGER),
    }
    missing = {**target, "office_id": "t-no-such-office"}
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        for what, token in strangers.items():
            auth = f"Bearer {token}"
            hidden = assert_problem(await _send(client, method, path, auth, target), 404,
                                    f"{method} {path}: {what}")
            absent = assert_problem(await _send(client, method, path, auth, missing), 404,
                                    f"{method} {path}: {what}, missing office")
            assert hidden["detail"].replace(target["office_id"], "X") == \
                absent["detail"].replace("t-no-such-office", "X"), (hidden, absent)
            assert {k: v for k, v in hidden.items() if k != "detail"} == \
                {k: v for k, v in absent.items() if k != "detail"}
            for secret_id in ("session_id", "job_id", "command_id", "webhook_id"):
                assert target[secret_id] not in hidden["detail"]
    async with pool.connection() as conn:
        n = (await (await conn.execute("select count(*) from agent_commands where created_by = %s",
                                       (STRANGER,))).fetchone())[0]
    assert n == 0, "a stranger's request was recorded as a command"


async def test_the_target_is_untouched_and_opens_to_its_members(api_url, target, pool):
    office, sid = target["office_id"], target["session_id"]
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        # `tester` created the office, so office_members opens it without any claim
        member = {"Authorization": f"Bearer {token_for([], sub='tester')}"}
        r = await client.get(f"/api/offices/{office}/sessions/{sid}", headers=member)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ready", "the stranger's prompt/delete must not have landed"
        r = await client.get(f"/api/offices/{office}/webhooks", headers=member)
        assert [h["webhook_id"] for h in r.json()["webhooks"]] == [target["webhook_id"]], \
            "the stranger's webhook create/delete must not have landed"
        listed = (await client.get("/api/offices", headers=member)).json()["offices"]
        assert office in [o["office_id"] for o in listed]
        claimed = {"Authorization": f"Bearer {token_for([office], sub=STRANGER)}"}
        assert (await client.get(f"/api/offices/{office}", headers=claimed)).status_code == 200

        other = {"Authorization": f"Bearer {token_for(['another-office'], sub=STRANGER)}"}
        listed = (await client.get("/api/offices", headers=other)).json()["offices"]
        assert office not in [o["office_id"] for o in listed]

        # creating an office under a taken id: a 409 that replays nothing, even with the
        # Idempotency-Key the owner used
        for key in (None, "office-create-1"):
            headers = {**other, **({"Idempotency-Key": key} if key else {})}
            r = await client.post("/api/offices", headers=headers, json={
                "office_id": office, "name": "take over", "machine_id": MACHINE_ID})
            body = assert_problem(r, 409, f"take-over with key {key}")
            assert "take over" not in r.text and "auth target" not in r.text, body
        owned = f"t-keyed-{uuid.uuid4().hex[:8]}"
        create = {"office_id": owned, "name": "keyed office", "machine_id": MACHINE_ID,
                  "warm_roles": [], "personas": {"BE": {"name": "Private", "role": "BE"}}}
        key = {"Idempotency-Key": f"create-{owned}"}
        r = await client.post("/api/offices", headers={**member, **key}, json=create)
        assert r.status_code == 201, r.text
        again = await client.post("/api/offices", headers={**member, **key}, json=create)
        assert again.status_code == 201 and again.json() == r.json(), "the owner's retry replays"
        r = await client.post("/api/offices", headers={**other, **key}, json=create)
        assert_problem(r, 409, "a stranger replaying the owner's Idempotency-Key")
        assert "Private" not in r.text
        await client.delete(f"/api/offices/{owned}", headers=member)
    async with pool.connection() as conn:
        name = (await (await conn.execute("select name from offices where id = %s",
                                          (office,))).fetchone())[0]
    assert name == "auth target"


async def test_sse_stream_is_refused_before_it_streams(api_url, target):
    path = "/api/offices/{office_id}/sessions/{session_id}/output/stream"
    async with httpx.AsyncClient(base_url=api_url, timeout=5) as client:
        async with client.stream("GET", fill(path, target)) as r:
            assert r.status_code == 401
            assert "event:" not in (await r.aread()).decode()
        stranger = {"Authorization": f"Bearer {token_for(['another-office'], sub=STRANGER)}"}
        async with client.stream("GET", fill(path, target), headers=stranger) as r:
            assert r.status_code == 404
            assert "event:" not in (await r.aread()).decode()
        # and the member does get the stream
        member = {"Authorization": f"Bearer {token_for([target['office_id']], sub=STRANGER)}"}
        async with client.stream("GET", fill(path, target), headers=member) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    break


# --- refusing to start --------------------------------------------------------------------


async def _semo_api(env_over: dict[str, str], tmp: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SUPABASE_JWT_SECRET", "SEMO_JWT_SECRET", "SEMO_JWKS_URL", "SEMO_DEV_MODE")}
    env.update({"SEMO_API_PORT": str(free_port()), "SEMO_HOME": str(tmp / ".semo"), **env_over})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "api", cwd=tmp, env=env,  # cwd: no .env to read
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("`semo api` started without a way to check tokens") from None
    return proc.returncode, (out + err).decode()


async def test_api_refuses_to_start_without_a_secret(tmp_path):
    cases = {
        "no secret": {},
        "dev mode, no secret": {"SEMO_DEV_MODE": "true"},
        "short secret": {"SUPABASE_JWT_SECRET": "short"},
        "JWKS URL not http(s)": {"SEMO_JWKS_URL": "file:///etc/passwd"},
    }
    results = await asyncio.gather(*(_semo_api(env, tmp_path) for env in cases.values()))
    for (what, _), (code, output) in zip(cases.items(), results, strict=False):
        assert code != 0, (what, output)
        assert "Traceback" not in output, (what, output)
        if what == "short secret":
            assert "shorter than 32 bytes" in output, output
        elif what.startswith("JWKS"):
            assert "SEMO_JWKS_URL" in output, output
        else:
            assert "SUPABASE_JWT_SECRET" in output and "semo dev" in output, (what, output)
            assert "SEMO_JWKS_URL" in output, output


# --- JWKS ---------------------------------------------------------------------------------


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    jwks: dict = {}
    delay_s: float = 0.0
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        body = json.dumps(self.jwks).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up

    def log_message(self, *args):
        pass


@contextmanager
def jwks_server(jwks: dict, delay_s: float = 0.0):
    """A stand-in JWKS endpoint on loopback."""
    handler = type("Handler", (_JwksHandler,), {"jwks": jwks, "delay_s": delay_s, "hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/auth/v1/.well-known/jwks.json", handler
    finally:
        server.shutdown()
        server.server_close()


def _rsa_jwk(key, kid: str) -> dict:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@pytest.fixture(scope="module")
def rsa_keys():
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def rs(payload: dict, key, kid: str = "k1") -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def test_jwks_verifier(settings, rsa_keys):
    key, other = rsa_keys
    with jwks_server({"keys": [_rsa_jwk(key, "k1")]}) as (url, handler):
        verifier = TokenVerifier(settings.model_copy(update={
            "jwt_secret": None, "jwks_url": url, "jwks_timeout_s": 2.0}))
        good = verifier.verify(f"Bearer {rs(claims(sub='rsa-user', app_metadata={'office_ids': ['a']}), key)}")
        assert good == Principal(sub="rsa-user", claimed_offices=frozenset({"a"}))
        public_pem = key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo)
        refused = {
            "another key, same kid": rs(claims(), other, "k1"),
            "unknown kid": rs(claims(), other, "k2"),
            "expired": rs(claims(exp=int(time.time()) - 60), key),
            "wrong audience": rs(claims(aud="anon"), key),
            "HS256 with no secret configured": hs(claims()),
            "HS256 keyed with the public key (alg confusion)": _hs_with_raw_key(claims(), public_pem),
        }
        for what, token in refused.items():
            with pytest.raises(Unauthorized):
                verifier.verify(f"Bearer {token}")
                pytest.fail(what)
        assert handler.hits <= 3, "the key set is cached, not fetched per token"


def _hs_with_raw_key(payload: dict, key: bytes) -> str:
    """HS256 keyed with arbitrary bytes (PyJWT refuses PEM keys for HMAC, so sign by hand)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_jwks_fetch_has_a_timeout(settings, rsa_keys):
    key, _ = rsa_keys
    with jwks_server({"keys": [_rsa_jwk(key, "k1")]}, delay_s=5) as (url, _):
        verifier = TokenVerifier(settings.model_copy(update={
            "jwt_secret": None, "jwks_url": url, "jwks_timeout_s": 0.5}))
        started = time.monotonic()
        with pytest.raises(Unavailable):
            verifier.verify(f"Bearer {rs(claims(), key)}")
        assert time.monotonic() - started < 3
    # nothing listening at all
    verifier = TokenVerifier(settings.model_copy(update={
        "jwt_secret": None, "jwks_url": f"http://127.0.0.1:{free_port()}/jwks", "jwks_timeout_s": 0.5}))
    with pytest.raises(Unavailable):
        verifier.verify(f"Bearer {rs(claims(), key)}")


@asynccontextmanager
async def running_api(settings: Settings):
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.api_port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        server.should_exit = True
        await task


async def test_api_with_jwks(settings, api_url, target, rsa_keys):
    """The whole API on the JWKS path; a hanging JWKS answers 503 and blocks nobody else."""
    key, _ = rsa_keys
    office = target["office_id"]
    with jwks_server({"keys": [_rsa_jwk(key, "k1")]}) as (url, _):
        jwks_settings = settings.model_copy(update={
            "jwt_secret": None, "jwks_url": url, "jwks_timeout_s": 1.0, "api_port": free_port()})
        async with running_api(jwks_settings) as base, httpx.AsyncClient(base_url=base, timeout=10) as c:
            mine = {"Authorization": f"Bearer {rs(claims(sub='rsa-user', app_metadata={'office_ids': [office]}), key)}"}
            assert (await c.get(f"/api/offices/{office}", headers=mine)).status_code == 200
            theirs = {"Authorization": f"Bearer {rs(claims(sub='rsa-user', app_metadata={'office_ids': ['x']}), key)}"}
            assert_problem(await c.get(f"/api/offices/{office}", headers=theirs), 404, "other office")
            hs_token = {"Authorization": f"Bearer {token_for(['*'])}"}
            assert_problem(await c.get(f"/api/offices/{office}", headers=hs_token), 401, "HS256")
    with jwks_server({"keys": [_rsa_jwk(key, "k1")]}, delay_s=4) as (url, _):
        slow = settings.model_copy(update={
            "jwt_secret": None, "jwks_url": url, "jwks_timeout_s": 1.0, "api_port": free_port()})
        async with running_api(slow) as base, httpx.AsyncClient(base_url=base, timeout=10) as c:
            mine = {"Authorization": f"Bearer {rs(claims(), key)}"}
            waiting = asyncio.create_task(c.get(f"/api/offices/{office}", headers=mine))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            assert (await c.get("/healthz")).status_code == 200
            assert time.monotonic() - started < 0.5, "the JWKS fetch blocked the event loop"
            assert_problem(await waiting, 503, "hanging JWKS")


# --- WebSocket routes (not in the OpenAPI schema) -------------------------------------------


def websocket_routes() -> list[str]:
    from fastapi.routing import APIWebSocketRoute

    from api.routes import attach, health, jobs, offices, sessions

    return sorted(r.path for module in (attach, health, jobs, offices, sessions)
                  for r in module.router.routes if isinstance(r, APIWebSocketRoute))


async def _ws_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status a WebSocket handshake is denied with (101: accepted, then closed)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(url, additional_headers=headers or {}, open_timeout=10):
            return 101
    except InvalidStatus as err:
        return err.response.status_code


@pytest.mark.parametrize("path", websocket_routes())
async def test_websocket_routes_refuse_bad_tokens_and_hide_other_offices(api_url, target, path):
    base = api_url.replace("http://", "ws://")
    url = base + fill(path, target)
    missing = base + fill(path, {**target, "office_id": "t-no-such-office"})
    for what, auth in bad_authorizations().items():
        headers = {} if auth is None else {"Authorization": auth}
        assert await _ws_status(url, headers) == 401, what
    assert await _ws_status(f"{url}?token=not-a-jwt") == 401
    assert await _ws_status(f"{url}?token={token_for(['*'], ttl_s=-60)}") == 401
    stranger = token_for(["another-office"], sub=STRANGER)
    assert await _ws_status(url, {"Authorization": f"Bearer {stranger}"}) == 404
    assert await _ws_status(f"{url}?token={stranger}") == 404
    assert await _ws_status(missing, {"Authorization": f"Bearer {stranger}"}) == 404
    member = token_for([target["office_id"]], sub=STRANGER)
    assert await _ws_status(f"{url}?token={member}&read_only=true") == 101


async def test_metrics_name_no_office_session_or_user(api_url, target):
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        r = await client.get("/metrics")
    if r.status_code == 404:
        pytest.skip("no /metrics route")
    assert r.status_code == 200
    for value in (*target.values(), "tester", STRANGER):
        assert value not in r.text, value
