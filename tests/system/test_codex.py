"""Codex CLI as users run it, on every CLI version semo supports (the `codex_machine`
fixture: the pinned and the oldest supported; SEMO_CODEX_TEST_VERSIONS picks others,
`make test-codex-latest` npm's newest). The real CLI in a real PTY, against the scripted
Responses API stand-in; a profile of only `argv` and `env`, the user's config.toml naming
the model provider, each session in a folder Codex has never trusted."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from activities.codex.versions import OLDEST_SUPPORTED
from tests.support.api_calls import event_of, job_when, new_session, send_prompt
from tests.support.codex import MODEL, CodexMachine
from tests.support.waiting import wait_for

MARKER = "[SEMO:DONE]"


async def codex_office(http, codex_machine: CodexMachine, **policy) -> str:
    codex_machine.standin.clear()
    office_id = f"cx-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={
        "office_id": office_id, "name": "codex office", "machine_id": codex_machine.machine_id,
        "agent": "codex", "warm_roles": [], **policy})
    assert r.status_code == 201, r.text
    return office_id


@pytest.fixture
async def office(http, codex_machine: CodexMachine) -> str:
    return await codex_office(http, codex_machine)


async def pending_of(http, office: str, sid: str) -> dict:
    async def probe():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s["pending_input"] if s["status"] == "waiting_input" and s["pending_input"] else None
    return await wait_for(probe, timeout=60, interval=0.1, what="a pending input")


async def test_a_plain_reply_with_the_marker_is_done_in_a_folder_never_trusted(
        http, office, codex_machine, pool):
    codex_machine.standin.reply_text(f"Hello from the stand-in.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    config = (codex_machine.codex_home / "config.toml").read_text()
    assert "trust_level = \"trusted\"" in config, "the trust screen was answered by policy"
    assert 'model_provider = "standin"' in config, "the user's settings are kept"
    assert "[SEMO:DONE]" in (wd / "AGENTS.md").read_text(), "the completion protocol"

    job = await job_when(http, office, await send_prompt(http, office, sid, "Say hello"),
                         "done", "failed", "timed_out")
    assert job["status"] == "done" and job["completion"]["source"] == "hook", job
    main = codex_machine.standin.main_requests()
    assert main and "Say hello" in str(main[-1].body["input"])

    async with pool.connection() as conn:
        row = await (await conn.execute("select agent_versions from client_machines where id = %s",
                                        (codex_machine.machine_id,))).fetchone()
    found = row[0]["codex"]
    assert {k: found[k] for k in ("version", "supported", "note", "runs")} == {
        "version": codex_machine.version, "supported": True, "note": None, "runs": True}, found
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_jobs_usage_is_what_the_model_reported(http, office, codex_machine):
    # Responses API counts: input INCLUDES cached; semo's input_tokens excludes them
    codex_machine.standin.reply_command("true", input_tokens=1500, cached_tokens=1200,
                                        output_tokens=40)
    codex_machine.standin.reply_text(f"Ran it.\n{MARKER}", input_tokens=1700,
                                     cached_tokens=1500, output_tokens=25)
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid, "Run true")
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    usage = job["usage"]
    assert {k: usage[k] for k in ("input_tokens", "cache_read_input_tokens", "output_tokens",
                                  "cache_creation_input_tokens", "responses", "model")} == {
        "input_tokens": (1500 - 1200) + (1700 - 1500), "cache_read_input_tokens": 1200 + 1500,
        "output_tokens": 40 + 25, "cache_creation_input_tokens": 0, "responses": 2,
        "model": MODEL}, usage
    assert usage["cost_usd"] == pytest.approx((500 * 1.25 + 2700 * 0.125 + 65 * 10) / 1e6)
    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["usage"]["output_tokens"] >= 65, session["usage"]
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_the_marker_quoted_in_the_prompt_is_not_done(http, office, codex_machine):
    codex_machine.standin.reply_text("Before I start: which database should it use?")
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid,
                               f"Build it. When you are done, print\n{MARKER}\non a line of its own.")
    turn = await event_of(http, office, job_id, "turn_end")
    assert "which database" in turn["data"]["message"]
    job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
    assert job["status"] == "running", job
    assert (await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")).status_code == 200
    assert (await job_when(http, office, job_id, "cancelled"))["status"] == "cancelled"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_command_asking_approval_is_pending_input_and_allow_runs_it(
        http, office, codex_machine):
    codex_machine.standin.reply_command("touch allowed.txt", escalated=True)
    codex_machine.standin.reply_text(f"Created it.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create allowed.txt")

    pending = await pending_of(http, office, sid)
    assert pending["kind"] == "permission" and pending["tool"] == "Bash", pending
    assert pending["input"]["command"] == "touch allowed.txt", pending
    assert not (wd / "allowed.txt").exists()

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/answer",
                        json={"input_id": pending["input_id"], "decision": "allow"})
    assert r.status_code == 200, r.text
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert (wd / "allowed.txt").exists(), "the allowed command ran"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_deny_keeps_the_command_from_running(http, office, codex_machine):
    codex_machine.standin.reply_command("touch denied.txt", escalated=True)
    codex_machine.standin.reply_text(f"Understood, I left it.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create denied.txt")
    pending = await pending_of(http, office, sid)
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/answer",
                        json={"input_id": pending["input_id"], "decision": "deny"})
    assert r.status_code == 200, r.text
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert not (wd / "denied.txt").exists(), "the denied command did not run"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_office_bash_rules_answer_codexs_commands(http, codex_machine):
    office = await codex_office(http, codex_machine, permission_rules={
        "allow": ["Bash(touch:*)"], "deny": ["Bash(touch secret:*)"]})
    codex_machine.standin.reply_command("touch ruled.txt", escalated=True)
    codex_machine.standin.reply_command("touch secret.txt", escalated=True)
    codex_machine.standin.reply_text(f"One of two.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job = await job_when(http, office, await send_prompt(http, office, sid, "Create two files"),
                         "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert (wd / "ruled.txt").exists() and not (wd / "secret.txt").exists()
    auto = [e["data"] for e in job["events"] if e["kind"] == "permission_auto"]
    assert [(a["decision"], a["rule"]) for a in auto] == [
        ("allow", "Bash(touch:*)"), ("deny", "Bash(touch secret:*)")]
    assert not any(e["kind"] == "waiting_input" for e in job["events"]), "nobody was asked"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_restarted_agent_resumes_its_conversation(http, office, codex_machine, pool):
    codex_machine.standin.reply_text(f"Noted: kumquat.\n{MARKER}")
    codex_machine.standin.reply_text(f"The word was kumquat.\n{MARKER}")
    sid = (await new_session(http, office))["session_id"]
    job = await job_when(http, office, await send_prompt(http, office, sid,
                                                         "Remember the word kumquat."),
                         "done", "failed", "timed_out")
    assert job["status"] == "done", job
    async with pool.connection() as conn:  # the agent this session's start reported
        row = await (await conn.execute(
            "select data from session_events where session_id = %s and kind = 'started'"
            " order by id desc limit 1", (sid,))).fetchone()
    os.kill(int(row[0]["pid"]), signal.SIGKILL)

    async def restarted():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s if s["status"] == "ready" and s["restarts"] == 1 else None
    await wait_for(restarted, timeout=90, interval=0.2, what="the session restarted")
    job = await job_when(http, office, await send_prompt(http, office, sid,
                                                         "Which word did I ask you to remember?"),
                         "done", "failed", "timed_out")
    assert job["status"] == "done", job
    last = str(codex_machine.standin.main_requests()[-1].body["input"])
    assert "Remember the word kumquat." in last and "Noted: kumquat." in last, \
        "the restarted agent sent the earlier conversation: it resumed it"
    kept = list(codex_machine.worker_home.glob(f"codex/{sid}.*"))
    assert kept, "the conversation id is kept while the session lives"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")

    async def forgotten():
        return not any(path.exists() for path in kept)
    await wait_for(forgotten, what="the conversation id forgotten with the session")


async def test_an_api_error_fails_the_job_with_the_reason(http, office, codex_machine):
    codex_machine.standin.reply_error(400, "Invalid request: the scripted model refuses it")
    sid = (await new_session(http, office))["session_id"]
    job = await job_when(http, office, await send_prompt(http, office, sid, "Summarise the repo"),
                         "done", "failed", "timed_out")
    assert job["status"] == "failed", job
    assert "the scripted model refuses it" in job["error"], job
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_trust_screen_the_policy_does_not_answer_fails_the_start(http, office):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "QA",
                                                                 "agent": "codex-strict"})
    assert r.status_code >= 400, r.text
    detail = r.json()["detail"]
    assert "Trust this folder?" in detail and "dialogs.trust_folder" in detail, detail


async def test_a_codex_that_is_not_installed_is_a_422_saying_how_to_install_it(http, office):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "QA",
                                                                 "agent": "codex-missing"})
    assert r.status_code == 422, r.text
    assert "npm install -g @openai/codex" in r.json()["detail"], r.text


async def test_a_cli_outside_the_supported_range_says_so(http, office, codex_machine, pool):
    session = await new_session(http, office, agent="codex-old")
    async with pool.connection() as conn:
        row = await (await conn.execute("select agent_versions from client_machines where id = %s",
                                        (codex_machine.machine_id,))).fetchone()
        assert row[0]["codex-old"]["supported"] is False
        assert OLDEST_SUPPORTED in row[0]["codex-old"]["note"]

        async def event():
            return await (await conn.execute(
                "select data from session_events where session_id = %s and kind = 'agent_version'",
                (session["session_id"],))).fetchone()
        found = await wait_for(event, what="an agent_version event")
    assert found[0]["version"] == "0.100.0" and found[0]["supported"] is False
    await http.delete(f"/api/offices/{office}/sessions/{session['session_id']}")

