"""One real terminal session driven end to end through HTTP only (the spine's proof)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from api.live import LiveNotifier
from commands.executor import CommandExecutor, Outcome
from tests.support.histories import replay_and_maybe_record
from tests.support.processes import live_pids_with_env
from tests.support.waiting import wait_for

MARKER_PROMPT = "printf '[SEMO:%s]\\n' DONE"


async def job_status(http, office, job_id):
    r = await http.get(f"/api/offices/{office}/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def test_create_prompt_complete_terminate(http, office, temporal_client):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["session_id"]
    assert created["status"] == "ready"
    assert created["source"] == "cold"
    assert created["workflow_id"] == f"session/{office}/{sid}"
    assert Path(created["working_dir"]).is_dir()
    assert live_pids_with_env("SEMO_SESSION_ID", sid), "the agent process should be running"

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": MARKER_PROMPT})
    assert r.status_code == 200, r.text
    sent = r.json()
    assert sent["status"] == "sent" and sent["job_id"] and sent["command_id"]

    job = await wait_for(lambda: _done(http, office, sent["job_id"]), what="job done")
    assert job["completion"]["kind"] == "marker"
    assert job["prompt"] == MARKER_PROMPT
    assert job["finished_at"] is not None

    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["status"] == "ready" and session["current_job_id"] is None

    out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output")).json()
    assert "[SEMO:DONE]" in out["data"].splitlines()
    assert out["next_offset"] > 0 and out["format"] == "text"
    raw = (await http.get(f"/api/offices/{office}/sessions/{sid}/output",
                          params={"format": "raw", "since": 0, "limit": 1_000_000})).json()
    assert raw["next_offset"] >= out["next_offset"]  # the shell may have printed its prompt since
    assert "[SEMO:DONE]" in raw["data"]

    screen = (await http.get(f"/api/offices/{office}/sessions/{sid}/screen")).json()
    assert screen["rows"] == 40 and screen["cols"] == 120
    assert any(line.strip() == "[SEMO:DONE]" for line in screen["lines"])

    cmd = (await http.get(f"/api/offices/{office}/commands/{sent['command_id']}")).json()
    assert cmd["type"] == "send_prompt" and cmd["status"] == "done"
    assert cmd["result"]["status"] == "ok" and cmd["result"]["result"]["job_id"] == sent["job_id"]

    r = await http.delete(f"/api/offices/{office}/sessions/{sid}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "terminated"
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "terminated"
    await wait_for(lambda: _no_agent(sid), timeout=10, what="agent processes gone")
    await replay_and_maybe_record(temporal_client, created["workflow_id"], "session_lifecycle")


async def _done(http, office, job_id):
    job = await job_status(http, office, job_id)
    return job if job["status"] == "done" else None


async def _no_agent(sid):
    return not live_pids_with_env("SEMO_SESSION_ID", sid)


async def test_error_marker_fails_job_with_reason(http, office, temporal_client):
    sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "QA"})).json()["session_id"]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                        json={"prompt": "printf '[SEMO:%s] %s\\n' ERROR 'tests are red'"})
    job_id = r.json()["job_id"]

    async def failed():
        job = await job_status(http, office, job_id)
        return job if job["status"] == "failed" else None

    job = await wait_for(failed, what="job failed")
    assert job["error"] == "tests are red"
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "ready"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
    await replay_and_maybe_record(temporal_client, f"session/{office}/{sid}", "session_job_error")


async def test_busy_session_answers_409_and_keys_cancel(http, office, temporal_client):
    sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "FE"})).json()["session_id"]
    first = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": "sleep 30"})
    assert first.status_code == 200, first.text
    second = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                             json={"prompt": "echo again"})
    assert second.status_code == 409
    assert second.headers["content-type"].startswith("application/problem+json")
    assert "busy" in second.json()["detail"]

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
    assert r.status_code == 200, r.text
    job = await job_status(http, office, first.json()["job_id"])
    assert job["status"] == "cancelled"
    # the shell took the Ctrl+C: it answers a new prompt
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": MARKER_PROMPT})
    assert r.status_code == 200, r.text
    await wait_for(lambda: _done(http, office, r.json()["job_id"]), what="job after cancel")
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
    await replay_and_maybe_record(temporal_client, f"session/{office}/{sid}", "session_cancel")


async def test_an_answered_prompt_can_be_read_back_at_once(http, office, pool):
    """The answer to a prompt comes after its job and the session's busy state are in
    Postgres (written with the command's result): a client reading right after sees them."""
    sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})).json()["session_id"]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                        json={"prompt": "sleep 30", "timeout_s": 120})
    assert r.status_code == 200, r.text
    sent = r.json()
    assert set(sent) == {"command_id", "job_id", "status"}, sent
    job = await job_status(http, office, sent["job_id"])  # no waiting: it must be there
    assert job["status"] == "running" and job["prompt"] == "sleep 30"
    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["status"] == "busy" and session["current_job_id"] == sent["job_id"]
    async with pool.connection() as conn:
        timeout_s, command_id = await (await conn.execute(
            "select timeout_s, command_id::text from jobs where id = %s", (sent["job_id"],))).fetchone()
    assert timeout_s == 120 and command_id == sent["command_id"]

    await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
    assert (await job_status(http, office, sent["job_id"]))["status"] == "cancelled"
    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["status"] == "ready" and session["current_job_id"] is None
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_idempotency_key_returns_first_result(http, office):
    sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})).json()["session_id"]
    headers = {"Idempotency-Key": "prompt-once"}
    body = {"prompt": "echo once-$((40+2))"}
    a = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json=body, headers=headers)
    b = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json=body, headers=headers)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()

    async def typed_once():
        out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output")).json()["data"]
        return out if "once-42" in out else None

    out = await wait_for(typed_once, what="prompt output")
    assert out.count("once-42") == 1, "the prompt must have been typed exactly once"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_retry_while_the_first_request_runs_gets_its_result(http, office, pool):
    """Two requests with one Idempotency-Key at once (a client retrying on a slow network):
    one session is created, and both answers name it."""
    headers = {"Idempotency-Key": "create-once"}
    a, b = await asyncio.gather(*(
        http.post(f"/api/offices/{office}/sessions", json={"role": "QA"}, headers=headers)
        for _ in range(2)))
    assert a.status_code == b.status_code == 201, (a.text, b.text)
    assert a.json()["session_id"] == b.json()["session_id"]
    async with pool.connection() as conn:
        created = (await (await conn.execute(
            "select count(*) from agent_sessions where office_id = %s and role = 'QA'",
            (office,))).fetchone())[0]
    assert created == 1
    await http.delete(f"/api/offices/{office}/sessions/{a.json()['session_id']}")


async def test_a_recorded_result_wakes_its_waiters(settings, pool, temporal_client):
    """What lets a retry in flight wait without polling: recording a command's result
    NOTIFYs its id, and the API's LiveNotifier wakes whoever listens for it."""
    executor = CommandExecutor(temporal_client, pool, settings)
    live = LiveNotifier(settings.effective_database_url())
    live.start()
    try:
        # LISTEN is up once a first (re)connect has woken what waited before it
        await asyncio.wait_for(live.listen("before-listening").wait(), 30)
        cmd, _ = await executor._insert("no-such-office", None, "create_office", {}, None, "t")
        woken = live.listen(str(cmd.id))
        await executor.record(cmd, Outcome(cmd.id, 200, {"ok": True}))
        await asyncio.wait_for(woken.wait(), 30)
        assert (await executor.wait_result(cmd.id, 1)).body == {"ok": True}
    finally:
        await live.close()
        await executor.claimant.close()


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(http, office, pool, settings):
    base = f"/api/offices/{office}"

    async def count(table):
        async with pool.connection() as conn:
            return (await (await conn.execute(f"select count(*) from {table}")).fetchone())[0]

    before = (await count("agent_sessions"), await count("agent_commands"))
    cases = [
        ("get", "/api/offices/no-such-office", None, 404),
        ("get", f"{base}/sessions/no-such-session", None, 404),
        ("post", f"{base}/sessions/no-such-session/prompt", {"prompt": "x"}, 404),
        ("post", f"{base}/sessions", {"role": "BE", "working_dir": "/etc"}, 422),
        ("post", f"{base}/sessions", {"role": "BE", "working_dir": "../../.."}, 422),
        ("post", f"{base}/sessions", {"role": "BE", "agent": "rm-rf"}, 422),
        ("post", f"{base}/sessions", {"role": ""}, 422),
        ("post", f"{base}/sessions", {"role": "BE", "unexpected": 1}, 422),
        ("post", "/api/offices", {"name": "x"}, 422),
    ]
    for method, url, body, expected in cases:
        r = await http.request(method, url, json=body)
        assert r.status_code == expected, (url, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), r.headers
        problem = r.json()
        assert problem["status"] == expected and problem["detail"], problem
    r = await http.post(f"{base}/sessions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert (await count("agent_sessions"), await count("agent_commands")) == before


async def test_workspace_symlink_escape_is_refused_by_the_client(http, office, settings):
    root = settings.resolved_workspace_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    link = root / f"escape-{office}"
    link.symlink_to("/etc")
    r = await http.post(f"/api/offices/{office}/sessions",
                        json={"role": "BE", "working_dir": str(link)})
    assert r.status_code == 422, r.text
    assert "outside" in r.json()["detail"]


async def test_requests_without_a_valid_token_are_refused(api_url, office):
    import httpx

    from tests.support.tokens import token_for
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as anon:
        assert (await anon.get(f"/api/offices/{office}")).status_code == 401
        bad = {"Authorization": "Bearer not-a-jwt"}
        assert (await anon.get(f"/api/offices/{office}", headers=bad)).status_code == 401
        other = {"Authorization": f"Bearer {token_for(['another-office'], sub='stranger')}"}
        assert (await anon.get(f"/api/offices/{office}", headers=other)).status_code == 404
        mine = {"Authorization": f"Bearer {token_for([office], sub='stranger')}"}
        assert (await anon.get(f"/api/offices/{office}", headers=mine)).status_code == 200
        assert (await anon.get("/healthz")).status_code == 200


async def test_nul_characters_are_refused_not_a_500(http, office):
    sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})).json()["session_id"]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo \u0000"})
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/keys", json={"text": "a\u0000b"})
    assert r.status_code == 422 and "ctrl+space" in r.json()["detail"]
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_output_stream_pushes_output_and_status_live(http, office):
    import json as _json
    sid = (await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})).json()["session_id"]
    seen: list[tuple[str, dict]] = []

    async def follow():
        async with http.stream("GET", f"/api/offices/{office}/sessions/{sid}/output/stream",
                               params={"format": "text"}) as r:
            assert r.status_code == 200
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    seen.append((event, _json.loads(line.split(":", 1)[1])))
                    if event == "status" and seen[-1][1]["status"] == "terminated":
                        return

    import asyncio
    reader = asyncio.create_task(follow())
    await wait_for(lambda: _has(seen, "status"), what="the first status event")
    await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo streamed-$((3*3))"})
    await wait_for(lambda: _has(seen, "output", "streamed-9"), what="the output event")
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
    await asyncio.wait_for(reader, 20)  # the terminated status ends the stream
    assert seen[-1] == ("status", {"status": "terminated", "current_job_id": None,
                                    "pending_input": None})


async def _has(seen, kind, text=None):
    return any(k == kind and (text is None or text in d.get("data", "")) for k, d in seen)
