"""Secrets never enter workflow history, command payloads or logs.

A session lifecycle runs on a machine whose agent profile carries a (fake) API key in its
environment, with the JWT secret configured, and the worker's own environment holding the
secret too. Afterwards every recorded workflow history (payloads decoded), the command
tables, the session's stored output and transcript, and everything logged during the run
(every logger at DEBUG) are searched for the key, the secret and the bearer tokens used.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid

import httpx
import pytest

from semo.settings import AgentProfile
from tests.support.processes import live_pids_with_env
from tests.support.tokens import JWT_SECRET, token_for
from tests.support.waiting import wait_for
from worker.client import client_runtime

FAKE_KEY = "sk-ant-api03-FAKE-" + uuid.uuid4().hex
LOGGERS = ["", "uvicorn", "uvicorn.access", "uvicorn.error", "temporalio", "httpx", "httpcore",
           "psycopg", "api", "semo", "activities", "worker", "workflows", "db"]
_B64 = re.compile(r"^[A-Za-z0-9+/]{8,}={0,2}$")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._seen: set[int] = set()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def handle(self, record: logging.LogRecord) -> bool:
        if id(record) in self._seen:  # the same record, met again on a parent logger
            return False
        self._seen.add(id(record))
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception as err:  # a record that cannot format is still looked at
            self.lines.append(f"{record.name} {record.msg!r} {record.args!r} ({err})")


@pytest.fixture
def captured_logs():
    handler = _Capture()
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    # on each logger, as some (uvicorn's) do not propagate to the root
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for name, level in levels.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(level)


def strings_of(value) -> list[str]:
    """Every string in a JSON value, and the decoded form of those that are base64 (history
    payloads are stored that way)."""
    found: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
            stack.extend(k for k in v if isinstance(k, str))
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            found.append(v)
            if _B64.match(v) and len(v) % 4 == 0:
                try:
                    found.append(base64.b64decode(v).decode("utf-8", "replace"))
                except (binascii.Error, ValueError):
                    pass
    return found


async def test_secrets_stay_out_of_history_payloads_and_logs(settings, temporal_client, pool,
                                                             api_url, workers, tmp_path,
                                                             monkeypatch, captured_logs):
    # the worker's environment holds the secret, as under `semo dev`: agents must not inherit it
    monkeypatch.setenv("SEMO_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
    machine = f"secrets-{uuid.uuid4().hex[:6]}"
    keyed = AgentProfile(argv=["bash", "--noprofile", "--norc"],
                         env={"PS1": "$ ", "ANTHROPIC_API_KEY": FAKE_KEY})
    machine_settings = settings.model_copy(update={
        "machine_id": machine, "workspace_roots": [tmp_path / "ws"], "home": tmp_path / "home",
        "agent_profiles": {"keyed": keyed}})
    token = token_for(["*"])
    bad_token = token_for(["*"])[:-4] + "AAAA"
    office = f"t-secrets-{uuid.uuid4().hex[:6]}"
    workflow_ids: list[str] = []

    async with client_runtime(machine_settings, temporal_client, pool), \
            httpx.AsyncClient(base_url=api_url, timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as http:
        r = await http.post("/api/offices", json={"office_id": office, "name": "secrets",
                                                  "machine_id": machine, "agent": "keyed",
                                                  "warm_roles": []})
        assert r.status_code == 201, r.text
        r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
        assert r.status_code == 201, r.text
        created = r.json()
        sid = created["session_id"]
        workflow_ids.append(created["workflow_id"])
        # the profile's key did reach the agent (so not finding it below means something)
        assert live_pids_with_env("ANTHROPIC_API_KEY", FAKE_KEY)
        assert live_pids_with_env("SEMO_SESSION_ID", sid)
        for pid in live_pids_with_env("SEMO_SESSION_ID", sid):
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert JWT_SECRET.encode() not in f.read(), "the agent inherited the JWT secret"

        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": "printf '[SEMO:%s]\\n' DONE"})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]

        async def done():
            job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
            return job["status"] == "done"

        await wait_for(done, what="the job to finish")
        assert (await http.post(f"/api/offices/{office}/sessions/{sid}/keys",
                                json={"keys": ["enter"], "text": "true"})).status_code == 200
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": "sleep 20"})
        assert r.status_code == 200, r.text
        assert (await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")).status_code == 200
        # a terminal attached with its token in the query (as browsers must): the request
        # line is logged, the token is not
        from websockets.asyncio.client import connect
        ws_url = api_url.replace("http://", "ws://") + \
            f"/api/offices/{office}/sessions/{sid}/attach?read_only=true&token={token}"
        async with connect(ws_url, open_timeout=10):
            pass
        # refused requests are logged (if at all) without their token
        for auth in (f"Bearer {bad_token}", f"Token {token}", f"Bearer {token} extra"):
            r = await http.get(f"/api/offices/{office}", headers={"Authorization": auth})
            assert r.status_code == 401
        assert (await http.delete(f"/api/offices/{office}/sessions/{sid}")).status_code == 200
        assert (await http.delete(f"/api/offices/{office}")).status_code == 200

    needles = {"API key": FAKE_KEY, "JWT secret": JWT_SECRET, "bearer token": token,
               "bad token": bad_token, "token signature": token.rsplit(".", 1)[1]}

    # 1. every workflow history recorded so far, this session's and all others
    histories = 0
    async for wf in temporal_client.list_workflows():
        history = await temporal_client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        text = "\n".join(strings_of(history.to_json_dict()))
        histories += 1
        for what, needle in needles.items():
            assert needle not in text, f"{what} in the history of {wf.id}"
        if wf.id in workflow_ids:
            assert "[SEMO:DONE]" in text  # decoding worked: the prompt is in there
    assert histories >= 1

    # 2. the command tables, and what was stored for the session
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "select c.payload::text, coalesce(r.result::text, ''), coalesce(r.error, '')"
            " from agent_commands c left join agent_command_results r on r.command_id = c.id"
        )).fetchall()
        stored = await (await conn.execute(
            "select coalesce(string_agg(convert_from(data, 'UTF8'), ''), '') from session_output"
            " where session_id = %s", (sid,))).fetchone()
        other = await (await conn.execute(
            "select coalesce(string_agg(t, E'\\n'), '') from ("
            " select data::text as t from session_events where office_id = %(o)s"
            " union all select coalesce(completion::text, '') || coalesce(error, '') from jobs"
            "  where office_id = %(o)s"
            " union all select row_to_json(m)::text from client_machines m) x",
            {"o": office})).fetchone()
    assert rows, "the run recorded commands"
    tables = "\n".join("\n".join(r) for r in rows) + stored[0] + other[0]
    for what, needle in needles.items():
        assert needle not in tables, f"{what} in the database"
    transcript = machine_settings.home.resolve() / "transcripts" / f"{sid}.log"
    if transcript.exists():
        assert FAKE_KEY.encode() not in transcript.read_bytes()

    # 3. everything logged meanwhile
    logged = "\n".join(captured_logs.lines)
    assert "attach?read_only=true&token=[redacted]" in logged
    for name in ("uvicorn.access", "httpcore", "temporalio.worker._activity"):
        assert f"\n{name}" in f"\n{logged}", f"the capture saw nothing from {name}"
    for what, needle in needles.items():
        assert needle not in logged, f"{what} was logged"
    assert "authorization" not in logged.lower() or "Bearer" not in logged
