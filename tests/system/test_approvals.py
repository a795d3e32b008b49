"""Approvals and questions as API objects: `pending_input` and POST .../answer, answered
through Claude Code's hooks (the real CLI against the stand-in, on every supported version:
the `machine` fixture of test_claude_versions), and the shell agent's dialogs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.support.api_calls import event_of, job_when, new_session, send_prompt
from tests.support.waiting import wait_for
from tests.support.webhooks import arrived, subscribe

MARKER = "[SEMO:DONE]"
QUESTION = {"questions": [{"question": "Which colour should the button be?", "header": "Colour",
                           "multiSelect": False,
                           "options": [{"label": "Red", "description": "warm"},
                                       {"label": "Blue", "description": "cool"}]}]}


async def claude_office(http, machine, **policy) -> str:  # noqa: F811
    machine.standin.clear()
    office_id = f"a-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={
        "office_id": office_id, "name": "approvals", "machine_id": machine.machine_id,
        "agent": "claude", "warm_roles": [], **policy})
    assert r.status_code == 201, r.text
    return office_id


async def pending_of(http, office: str, sid: str) -> dict:
    async def probe():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s["pending_input"] if s["status"] == "waiting_input" and s["pending_input"] else None
    return await wait_for(probe, timeout=60, interval=0.1, what="a pending input")


async def answer(http, office: str, sid: str, **body):
    return await http.post(f"/api/offices/{office}/sessions/{sid}/answer", json=body)


def bash(standin, command: str) -> None:
    standin.reply_tool_use("Bash", {"command": command, "description": "Run it"})


async def test_a_permission_is_pending_input_and_allow_runs_the_tool(http, machine):  # noqa: F811
    office = await claude_office(http, machine)
    bash(machine.standin, "touch allowed.txt")
    machine.standin.reply_text(f"Created it.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create allowed.txt")

    pending = await pending_of(http, office, sid)
    assert pending["kind"] == "permission" and pending["tool"] == "Bash"
    assert pending["input"]["command"] == "touch allowed.txt" and pending["since"]
    listed = (await http.get(f"/api/offices/{office}/sessions")).json()["sessions"]
    assert [s["pending_input"] for s in listed if s["session_id"] == sid] == [pending]
    assert not (wd / "allowed.txt").exists()

    r = await answer(http, office, sid, input_id=pending["input_id"], decision="allow")
    assert r.status_code == 200, r.text
    assert r.json()["input_id"] == pending["input_id"] and r.json()["command_id"]
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert (wd / "allowed.txt").exists(), "the allowed command ran"
    after = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert after["pending_input"] is None and after["status"] == "ready"
    answered = next(e for e in job["events"] if e["kind"] == "input_answered")
    assert answered["data"]["decision"] == "allow" and answered["data"]["by"] == "answer"

    # answered already: the same input_id is stale
    r = await answer(http, office, sid, input_id=pending["input_id"], decision="allow")
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_deny_keeps_the_tool_from_running(http, machine):  # noqa: F811
    office = await claude_office(http, machine)
    bash(machine.standin, "touch denied.txt")
    machine.standin.reply_text(f"Understood, I will not.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create denied.txt")
    pending = await pending_of(http, office, sid)

    r = await answer(http, office, sid, input_id=pending["input_id"], decision="deny",
                     text="Not in this repository.")
    assert r.status_code == 200, r.text
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert not (wd / "denied.txt").exists(), "a denied command does not run"
    result = machine.standin.main_requests()[-1].tool_results()[0]
    assert result["is_error"] and "Not in this repository." in json.dumps(result)
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_question_shows_its_options_and_the_option_reaches_the_model(http, machine):  # noqa: F811
    office = await claude_office(http, machine)
    machine.standin.reply_tool_use("AskUserQuestion", QUESTION)
    machine.standin.reply_text(f"Blue it is.\n{MARKER}")
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid, "Style the button")
    pending = await pending_of(http, office, sid)
    assert pending["kind"] == "question" and pending["tool"] == "AskUserQuestion"
    assert pending["question"] == "Which colour should the button be?"
    assert pending["options"] == ["Red", "Blue"]

    r = await answer(http, office, sid, input_id=pending["input_id"], decision="allow")
    assert r.status_code == 422, "a decision does not answer a question"
    r = await answer(http, office, sid, input_id=pending["input_id"], option="Green")
    assert r.status_code == 422, "not one of its options"
    r = await answer(http, office, sid, input_id=pending["input_id"], option="Blue")
    assert r.status_code == 200, r.text
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    result = json.dumps(machine.standin.main_requests()[-1].tool_results())
    assert '\\"Which colour should the button be?\\"=\\"Blue\\"' in result, result
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_an_office_rule_answers_at_once_and_deny_wins(http, machine):  # noqa: F811
    office = await claude_office(http, machine, permission_rules={
        "allow": ["Bash(touch:*)"], "deny": ["Bash(touch secret:*)"]})
    office_row = (await http.get(f"/api/offices/{office}")).json()
    assert office_row["permission_rules"]["allow"] == ["Bash(touch:*)"]
    bash(machine.standin, "touch ruled.txt")
    bash(machine.standin, "touch secret.txt")
    machine.standin.reply_text(f"One of two.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create two files")
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert (wd / "ruled.txt").exists() and not (wd / "secret.txt").exists()
    auto = [e["data"] for e in job["events"] if e["kind"] == "permission_auto"]
    assert [(a["decision"], a["rule"]) for a in auto] == [
        ("allow", "Bash(touch:*)"), ("deny", "Bash(touch secret:*)")]
    assert not any(e["kind"] == "waiting_input" for e in job["events"]), "nobody was asked"

    # rules change while the office runs: the next request is asked again
    r = await http.patch(f"/api/offices/{office}", json={"permission_rules": {"allow": []}})
    assert r.status_code == 200 and r.json()["permission_rules"]["allow"] == [], r.text
    bash(machine.standin, "touch later.txt")
    job_id = await send_prompt(http, office, sid, "One more")
    pending = await pending_of(http, office, sid)
    assert pending["input"]["command"] == "touch later.txt"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_question_nobody_answers_is_denied_after_the_office_timeout(http, machine):  # noqa: F811
    office = await claude_office(http, machine, input_timeout_s=2)
    bash(machine.standin, "touch unanswered.txt")
    machine.standin.reply_text(f"No answer, moving on.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create unanswered.txt")
    await pending_of(http, office, sid)
    answered = await event_of(http, office, job_id, "input_answered", timeout=60)
    assert answered["data"]["by"] == "timeout" and answered["data"]["decision"] == "deny"
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done" and not (wd / "unanswered.txt").exists(), job
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_bad_rules_and_bad_answers_are_refused_before_anything_runs(http, machine):  # noqa: F811
    r = await http.post("/api/offices", json={
        "name": "bad", "machine_id": machine.machine_id, "warm_roles": [],
        "permission_rules": {"allow": ["Bash(unclosed"]}})
    assert r.status_code == 422 and "not a rule" in r.text, r.text
    office = await claude_office(http, machine)
    sid = (await new_session(http, office))["session_id"]
    r = await answer(http, office, sid, input_id="in-nothing", decision="allow")
    assert r.status_code == 409 and "nothing" in r.json()["detail"], r.text
    r = await answer(http, office, sid, input_id="in-nothing")
    assert r.status_code == 422, r.text
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_shell_dialog_is_pending_input_answered_with_text(http, office):
    """The shell agent: what the monitor sees as a question is a `dialog`, answered as typed."""
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    sid = r.json()["session_id"]
    prompt = "read -p 'Overwrite the file? [y/N] ' a; echo got-$a; echo [SEMO:DONE]"
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": prompt})
    job_id = r.json()["job_id"]
    pending = await pending_of(http, office, sid)
    assert pending["kind"] == "dialog" and "Overwrite the file?" in pending["question"]
    r = await answer(http, office, sid, input_id=pending["input_id"], decision="allow")
    assert r.status_code == 422, r.text
    r = await answer(http, office, sid, input_id=pending["input_id"], text="y")
    assert r.status_code == 200, r.text
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output?format=text")).json()
    assert "got-y" in out["data"]
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_permission_is_a_signed_waiting_input_webhook_naming_the_tool(
        http, machine, receiver, loopback):  # noqa: F811
    from standardwebhooks.webhooks import Webhook

    office = await claude_office(http, machine)
    hook = await subscribe(http, office, receiver.url, ["session.waiting_input"])
    bash(machine.standin, "touch hooked.txt")
    machine.standin.reply_text(f"Done.\n{MARKER}")
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid, "Create hooked.txt")
    [got] = await wait_for(arrived(receiver, "session.waiting_input"), timeout=60,
                           what="the webhook")
    payload = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert payload["session_id"] == sid and payload["job_id"] == job_id
    pending = payload["data"]["pending_input"]
    assert pending["kind"] == "permission" and pending["tool"] == "Bash"
    assert pending["input"]["command"] == "touch hooked.txt"
    r = await answer(http, office, sid, input_id=pending["input_id"], decision="allow")
    assert r.status_code == 200, r.text
    await job_when(http, office, job_id, "done")
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
