"""Conversations outlive their agent (issue 25): every Claude Code session starts with its
own conversation id (`--session-id`), and a restart after its agent was killed resumes
exactly that conversation (`--resume`), so the model is sent the earlier turns again. A
profile can turn it off. The real `claude` CLI in a real PTY, against the scripted stand-in
for the Messages API, through a client worker of its own (machine `claude-resume`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import pytest

from activities.claude.conversation import conversation_id
from semo import procfs
from semo.settings import AgentProfile, StartupDialogs
from tests.claude_standin.claude_home import claude_env
from tests.claude_standin.install import ClaudeInstallError, claude_path
from tests.claude_standin.server import ScriptedAnthropicStandIn
from tests.support.api_calls import job_when, new_session, send_prompt
from tests.support.histories import replay_and_maybe_record
from tests.support.waiting import wait_for
from worker.client import client_runtime

MACHINE = "claude-resume"
MARKER = "[SEMO:DONE]"


@pytest.fixture(scope="module")
async def resume_machine(settings, temporal_client, pool, workers, tmp_root, standin):
    try:
        claude_bin = claude_path()
    except ClaudeInstallError as exc:
        pytest.fail(f"cannot install the Claude Code CLI: {exc}", pytrace=False)
    home = tmp_root / "resume-home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True,
                                                   "theme": "dark"}))
    root = (tmp_root / "resume-ws").resolve()
    root.mkdir()
    profile = AgentProfile(argv=[str(claude_bin)], env=claude_env(home, standin.base_url),
                           monitor="claude", hooks=True, input_mode="paste", ready_timeout_s=40,
                           dialogs=StartupDialogs(trust_folder="accept", api_key="accept"))
    fresh = profile.model_copy(update={"resume_conversation": False})
    machine_settings = settings.model_copy(update={
        "machine_id": MACHINE, "workspace_roots": [root],
        "agent_profiles": {"claude": profile, "claude-fresh": fresh},
        "home": tmp_root / "resume-worker"})
    async with client_runtime(machine_settings, temporal_client, pool):
        yield standin


async def office_of(http, agent: str) -> str:
    office_id = f"cr-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={
        "office_id": office_id, "name": "resume", "machine_id": MACHINE, "agent": agent,
        "warm_roles": []})
    assert r.status_code == 201, r.text
    return office_id


async def started_pid(pool, sid: str, restarts: int) -> int:
    """The agent's pid from the session's `started` events (one per start)."""
    async def probe():
        async with pool.connection() as conn:
            rows = await (await conn.execute(
                "select data from session_events where session_id = %s and kind = 'started'"
                " order by id", (sid,))).fetchall()
        return int(rows[restarts][0]["pid"]) if len(rows) > restarts else None
    return await wait_for(probe, timeout=60, what=f"start {restarts + 1} of {sid}")


def argv_of(pid: int) -> list[str]:
    return procfs.read(f"/proc/{pid}/cmdline").decode().split("\0")


async def kill_and_wait_ready(http, pool, office: str, sid: str, pid: int) -> int:
    os.kill(pid, signal.SIGKILL)

    async def ready_again():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s if s["restarts"] == 1 and s["status"] == "ready" else None
    await wait_for(ready_again, timeout=90, interval=0.1, what="the session restarted and ready")
    return await started_pid(pool, sid, 1)


def sent_to_model(standin: ScriptedAnthropicStandIn) -> str:
    """Everything the last main-turn request sent (the conversation so far)."""
    return json.dumps(standin.main_requests()[-1].messages)


async def test_a_killed_claude_code_comes_back_in_the_same_conversation(http, pool, resume_machine):
    standin = resume_machine
    office = await office_of(http, "claude")
    sid = (await new_session(http, office))["session_id"]
    cid = conversation_id(sid)
    pid = await started_pid(pool, sid, 0)
    argv = argv_of(pid)
    assert argv[argv.index("--session-id") + 1] == cid and "--resume" not in argv
    standin.reply_text(f"Noted: the word is kept.\n{MARKER}")
    job = await send_prompt(http, office, sid, "Remember the word PELICAN-7.")
    assert (await job_when(http, office, job, "done", "failed"))["status"] == "done"

    pid2 = await kill_and_wait_ready(http, pool, office, sid, pid)
    assert pid2 != pid
    argv = argv_of(pid2)
    assert argv[argv.index("--resume") + 1] == cid and "--session-id" not in argv
    standin.reply_text(f"The word was PELICAN-7.\n{MARKER}")
    job = await send_prompt(http, office, sid, "Which word did I ask you to remember?")
    assert (await job_when(http, office, job, "done", "failed"))["status"] == "done"
    # the model is sent the earlier turn: the conversation was resumed, not started afresh
    sent = sent_to_model(standin)
    assert "Remember the word PELICAN-7." in sent and "Which word did I ask" in sent
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_profile_can_start_each_restart_afresh(http, pool, resume_machine):
    standin = resume_machine
    office = await office_of(http, "claude-fresh")
    sid = (await new_session(http, office))["session_id"]
    pid = await started_pid(pool, sid, 0)
    assert "--session-id" not in argv_of(pid)
    standin.reply_text(f"Noted.\n{MARKER}")
    job = await send_prompt(http, office, sid, "Remember the word HERON-3.")
    assert (await job_when(http, office, job, "done", "failed"))["status"] == "done"

    pid2 = await kill_and_wait_ready(http, pool, office, sid, pid)
    assert "--resume" not in argv_of(pid2)
    standin.reply_text(f"I do not know.\n{MARKER}")
    job = await send_prompt(http, office, sid, "Which word?")
    assert (await job_when(http, office, job, "done", "failed"))["status"] == "done"
    sent = sent_to_model(standin)
    assert "Which word?" in sent and "HERON-3" not in sent
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


def statuses_published(history) -> list[str]:
    """The SessionStatus search attribute's values, in the order the workflow set them."""
    seen = []
    for event in history.events:
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes \
                .search_attributes.indexed_fields
            if "SessionStatus" in fields:
                seen.append(json.loads(fields["SessionStatus"].data))
    return seen


async def test_a_claude_code_killed_mid_job_never_reads_ready_before_it_restarts(
        http, pool, temporal_client, resume_machine):
    """The `ready then restarting` race: the job's failure (Claude Code exited) and the end
    of the agent's watch reach the session one after the other; in between it must not say
    `ready`, which a prompt would find refused. Twenty kills: ten sessions, each killed
    mid-job twice (a third failure within the breaker's window would open its circuit),
    four at a time."""
    standin = resume_machine
    office = await office_of(http, "claude")
    kills = 2
    at_once = asyncio.Semaphore(4)

    async def kill_mid_job() -> str:
        async with at_once:
            return await kill_in(await new_session(http, office))

    async def kill_in(session: dict) -> str:
        sid = session["session_id"]
        for k in range(kills):
            standin.reply_slow(60, "never seen")
            prompt = f"Take your time ({sid}, {k})."
            job = await send_prompt(http, office, sid, prompt)

            async def running(prompt=prompt):  # the model was asked: the turn runs
                return any(prompt in r.last_user_text() for r in standin.main_requests())
            await wait_for(running, timeout=60, what="the turn running")
            os.kill(await started_pid(pool, sid, k), signal.SIGKILL)
            assert (await job_when(http, office, job, "failed", "done"))["status"] == "failed"

            async def back(k=k):
                s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
                return s["restarts"] == k + 1 and s["status"] == "ready"
            await wait_for(back, timeout=120, what=f"restart {k + 1}")
        await http.delete(f"/api/offices/{office}/sessions/{sid}")
        return session["workflow_id"]

    workflow_ids = await asyncio.gather(*(kill_mid_job() for _ in range(10)))
    for workflow_id in workflow_ids:
        history = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
        published = statuses_published(history)
        assert published.count("restarting") >= kills, published
        pairs = list(zip(published, published[1:], strict=False))
        assert ("ready", "restarting") not in pairs, published
    await replay_and_maybe_record(temporal_client, workflow_ids[0],
                                  "session_agent_exit_not_ready")
