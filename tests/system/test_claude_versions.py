"""Claude Code as users run it, on every CLI version semo supports.

A user sets up a Claude Code machine as the README says: a profile of only `argv` and `env`
in SEMO_AGENT_PROFILES, sessions in fresh folders Claude Code has never trusted, no dialog
answered in advance (the scratch HOME has only finished onboarding, which needs the
network), and credentials in the environment (`ANTHROPIC_AUTH_TOKEN`, as for a gateway).

Every test runs against the pinned CLI and the oldest supported one (2.1.197: numbered
menus, `Yes` first); SEMO_CLAUDE_TEST_VERSIONS (comma-separated, `latest` asks npm) picks
others: `make test-claude-latest`. A CLI that cannot be installed fails; it never skips.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from activities.claude.versions import OLDEST_SUPPORTED
from tests.support.api_calls import event_of, job_when, new_session, send_prompt, session_when
from tests.support.claude import Machine
from tests.support.waiting import wait_for

MARKER = "[SEMO:DONE]"


@pytest.fixture
async def office(http, machine: Machine) -> str:
    machine.standin.clear()
    office_id = f"v-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={
        "office_id": office_id, "name": "claude office", "machine_id": machine.machine_id,
        "agent": "claude", "warm_roles": []})
    assert r.status_code == 201, r.text
    return office_id


async def test_a_plain_reply_completes_the_job_in_a_folder_never_trusted(http, office, machine, pool):
    machine.standin.reply_text(f"Hello from the stand-in.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], session["working_dir"]
    trusted = json.loads((machine.home / ".claude.json").read_text())["projects"]
    assert trusted[wd]["hasTrustDialogAccepted"] is True, "the trust dialog answered by policy"

    job = await job_when(http, office, await send_prompt(http, office, sid, "Say hello"),
                         "done", "failed", "timed_out")
    assert job["status"] == "done" and job["completion"]["source"] == "hook", job
    assert "Say hello" in machine.standin.main_requests()[-1].last_user_text()

    async with pool.connection() as conn:
        row = await (await conn.execute("select agent_versions from client_machines where id = %s",
                                        (machine.machine_id,))).fetchone()
    found = row[0]["claude"]
    assert "claude" in found.pop("program"), row
    assert found == {"runs": True, "version": machine.version, "supported": True, "note": None}
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_marker_quoted_in_the_prompt_does_not_complete_the_job(http, office, machine):
    machine.standin.reply_text("Before I start: which database should it use?")
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


async def test_a_bash_permission_waits_then_enter_runs_it(http, office, machine):
    machine.standin.reply_tool_use("Bash", {"command": "touch approved.txt",
                                            "description": "Create approved.txt"})
    machine.standin.reply_text(f"Created it.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create approved.txt")

    await session_when(http, office, sid, "waiting_input")
    asked = await event_of(http, office, job_id, "waiting_input")
    assert asked["data"]["tool"] == "Bash" and asked["data"]["kind"] == "permission"
    assert asked["data"]["input"]["command"] == "touch approved.txt"
    assert not (wd / "approved.txt").exists()

    async def prompt_refused():  # a dialog is open: a prompt is refused, not typed into it
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "y"})
        return r if r.status_code == 409 else None
    assert "waiting" in (await wait_for(prompt_refused, what="a 409")).json()["detail"]

    # the dialog's keys may be dropped while it is being drawn: press until it is gone
    async def answered():
        job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
        if job["status"] != "running":
            return job
        if (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "waiting_input":
            await http.post(f"/api/offices/{office}/sessions/{sid}/keys", json={"keys": ["enter"]})
        return None
    job = await wait_for(answered, timeout=60, interval=2.0, what="the job to end")
    assert job["status"] == "done", job
    assert (wd / "approved.txt").exists(), "the approved command ran"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_an_http_400_fails_the_job_with_the_reason(http, office, machine):
    # a request the API refuses every time (the CLI retries a 400 with other betas first)
    machine.standin.reply_error(400, "Invalid request: the scripted model refuses it", times=20)
    sid = (await new_session(http, office))["session_id"]
    job = await job_when(http, office, await send_prompt(http, office, sid, "Summarise the repo"),
                         "done", "failed", "timed_out")
    assert job["status"] == "failed", job
    assert "the scripted model refuses it" in job["error"], job
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_cli_outside_the_supported_range_says_so(http, office, machine, pool):
    session = await new_session(http, office, agent="claude-old")
    async with pool.connection() as conn:
        row = await (await conn.execute("select agent_versions from client_machines where id = %s",
                                        (machine.machine_id,))).fetchone()
        assert row[0]["claude-old"]["supported"] is False
        assert OLDEST_SUPPORTED in row[0]["claude-old"]["note"]

        async def event():
            return await (await conn.execute(
                "select data from session_events where session_id = %s and kind = 'agent_version'",
                (session["session_id"],))).fetchone()
        found = await wait_for(event, what="an agent_version event")
    assert found[0]["version"] == "2.1.100" and found[0]["supported"] is False
    await http.delete(f"/api/offices/{office}/sessions/{session['session_id']}")
