"""What an agent changed, end to end with real git: an office whose repository has a bare
remote, a shell session that edits one file and adds another; `changes` shows both, a review
of two comments becomes one job quoting both, and `handoff` puts the work on the remote under
the session's branch. An office without a repository answers 409."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.api_calls import job_when, new_session, send_prompt, session_when
from tests.support.git import new_repo_office, run as git
from tests.support.intake import insert_rows, results_of, running_intake
from tests.support.waiting import wait_for


@pytest.fixture
async def repo_office(http, settings, tmp_path: Path):
    """The office, deleted after the test: its terminals end with it (a live one left behind
    restarts when later, synchronous tests hold the event loop past its heartbeat)."""
    made = await new_repo_office(http, settings, tmp_path)
    yield made
    r = await http.delete(f"/api/offices/{made[0]}")
    assert r.status_code == 200, r.text


async def test_changes_review_and_hand_off_with_real_git(http, repo_office) -> None:
    office, repo, remote = repo_office
    sid = (await new_session(http, office))["session_id"]
    base = git("rev-parse", "main", cwd=repo)
    job = await send_prompt(http, office, sid,
                            "printf 'changed\\n' >> README.md; printf 'one\\ntwo\\n' > notes.txt; "
                            "echo [SEMO:DONE]")
    await job_when(http, office, job, "done")

    r = await http.get(f"/api/offices/{office}/sessions/{sid}/changes")
    assert r.status_code == 200, r.text
    changes = r.json()
    assert changes["branch"].startswith(f"semo/{office}/BE-")
    assert changes["base"] == {"ref": "main", "commit": base}
    assert changes["head"] == base and changes["commits"] == [] and not changes["truncated"]
    files = {f["path"]: f for f in changes["files"]}
    assert set(files) == {"README.md", "notes.txt"}, "semo's own files are not the agent's work"
    assert files["README.md"] | {"old_path": None} == {
        "path": "README.md", "status": "modified", "old_path": None, "additions": 1,
        "deletions": 0, "binary": False}
    assert (files["notes.txt"]["status"], files["notes.txt"]["additions"]) == ("added", 2)
    assert "\n+changed\n" in changes["diff"] and "\n+one\n+two\n" in changes["diff"]
    assert " world\n" in changes["diff"], "context lines are in the diff"

    only = (await http.get(f"/api/offices/{office}/sessions/{sid}/changes",
                           params={"path": "notes.txt"})).json()
    assert [f["path"] for f in only["files"]] == ["notes.txt"] and "README" not in only["diff"]

    # a comment off the changes is a 422, and no job is made
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/review",
                        json={"comments": [{"path": "README.md", "line": 99, "text": "what"}]})
    assert r.status_code == 422 and "line 99 is not in its diff" in r.json()["detail"], r.text
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/review",
                        json={"comments": [{"path": "src/app.py", "line": 1, "text": "what"}]})
    assert r.status_code == 422 and "not among the session" in r.json()["detail"], r.text
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "ready"

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/review", json={
        "summary": "Nearly there.",
        "comments": [{"path": "README.md", "line": 3, "text": "Say what changed"},
                     {"path": "notes.txt", "line": 2, "text": "Two is too many"}]})
    assert r.status_code == 201, r.text
    review = r.json()
    assert review["status"] == "sent" and review["command_id"]
    prompt = (await http.get(f"/api/offices/{office}/jobs/{review['job_id']}")).json()["prompt"]
    assert "2 comments" in prompt and "Nearly there." in prompt
    assert "README.md:3\n   | changed\n   Say what changed" in prompt
    assert "notes.txt:2\n   | two\n   Two is too many" in prompt
    assert prompt.index("README.md:3") < prompt.index("notes.txt:2"), "in the order given"

    # the shell does not end that job: the session is busy, and a hand-off waits for it
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/handoff", json={})
    assert r.status_code == 409 and "busy" in r.json()["detail"], r.text
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
    assert r.status_code == 200, r.text
    await session_when(http, office, sid, "ready")

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/handoff",
                        json={"message": "Notes and a changed README"})
    assert r.status_code == 200, r.text
    handed = r.json()
    assert handed["branch"] == changes["branch"] and handed["pushed"] is True
    assert handed["remote"] == "origin" and "pull_request_url" not in handed
    on_remote = git("rev-parse", f"refs/heads/{handed['branch']}", cwd=remote)
    assert on_remote == handed["commit"]
    assert git("log", "-1", "--format=%s", handed["commit"], cwd=remote) == \
        "Notes and a changed README"
    assert git("show", f"{handed['commit']}:README.md", cwd=remote) == "hello\nworld\nchanged"
    assert git("show", f"{handed['commit']}:notes.txt", cwd=remote) == "one\ntwo"
    tree = git("ls-tree", "-r", "--name-only", handed["commit"], cwd=remote).split("\n")
    assert not [p for p in tree if p.startswith(".claude/")], "semo's files are not pushed"

    after = (await http.get(f"/api/offices/{office}/sessions/{sid}/changes")).json()
    assert [c["subject"] for c in after["commits"]] == ["Notes and a changed README"]
    assert {f["path"] for f in after["files"]} == {"README.md", "notes.txt"}, \
        "committed work is still the session's change"

    # the command is recorded once; nothing left to hand off is a 409
    cmd = (await http.get(f"/api/offices/{office}/commands/{handed['command_id']}")).json()
    assert cmd["type"] == "hand_off" and cmd["result"]["status"] == "ok", cmd


async def test_nothing_to_hand_off_is_a_conflict(http, repo_office) -> None:
    office, _, remote = repo_office
    sid = (await new_session(http, office))["session_id"]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/handoff")  # no body: defaults
    assert r.status_code == 409 and "nothing to hand off" in r.json()["detail"], r.text
    assert "semo/" not in git("branch", "--list", cwd=remote), "nothing was pushed"


async def test_a_session_without_a_repository_has_no_changes(http, office) -> None:
    sid = (await new_session(http, office))["session_id"]
    try:
        await _refused_without_a_repository(http, office, sid)
    finally:
        await http.delete(f"/api/offices/{office}")


async def _refused_without_a_repository(http, office: str, sid: str) -> None:
    base = f"/api/offices/{office}/sessions/{sid}"
    for method, path, body in (("GET", "/changes", None), ("POST", "/handoff", {}),
                               ("POST", "/review", {"comments": [
                                   {"path": "a.txt", "line": 1, "text": "x"}]})):
        r = await http.request(method, base + path, json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "has no repository" in r.json()["detail"]


async def test_a_hand_off_sends_session_handed_off(http, repo_office, receiver,
                                                   loopback) -> None:
    office, _, remote = repo_office
    r = await http.post(f"/api/offices/{office}/webhooks",
                        json={"url": receiver.url, "events": ["session.handed_off"]})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    sid = (await new_session(http, office))["session_id"]
    job = await send_prompt(http, office, sid, "echo data > out.txt; echo [SEMO:DONE]")
    await job_when(http, office, job, "done")
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/handoff", json={})
    assert r.status_code == 200, r.text
    handed = r.json()
    assert "echo data > out.txt" in git("log", "-1", "--format=%B", handed["commit"], cwd=remote), \
        "without a message, the commit's is made from the session's jobs"

    async def arrived():
        return receiver.of_type("session.handed_off") or None
    [got] = await wait_for(arrived, what="session.handed_off at the receiver")
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["session_id"] == sid and payload["data"]["branch"] == handed["branch"]
    assert payload["data"]["commit"] == handed["commit"] and payload["data"]["pushed"] is True


async def test_a_hand_off_row_inserted_by_anyone_is_carried_out_once(
        http, repo_office, settings, temporal_client, pool) -> None:
    """`hand_off` is a command like the others: a row in `agent_commands` (a dashboard, psql)
    is carried out by the intake and answered once; a malformed one is answered with why."""
    office, _, remote = repo_office
    sid = (await new_session(http, office))["session_id"]
    job = await send_prompt(http, office, sid, "echo row > row.txt; echo [SEMO:DONE]")
    await job_when(http, office, job, "done")
    async with running_intake(settings, temporal_client):
        ids = await insert_rows(pool, [
            {"office_id": office, "session_id": sid, "type": "hand_off",
             "payload": {"message": "From a row"}},
            {"office_id": office, "session_id": sid, "type": "hand_off",
             "payload": {"push": "sometimes"}}])

        async def both():
            got = await results_of(pool, ids)
            return got if len(got) == 2 else None
        got = await wait_for(both, timeout=60, what="both rows answered")
    ok, bad = got[ids[0]], got[ids[1]]
    assert ok["status"] == "ok", ok
    assert git("log", "-1", "--format=%s", ok["result"]["branch"], cwd=remote) == "From a row"
    assert bad["status"] == "error" and "push" in bad["error"], bad


async def test_a_machine_that_does_not_answer_is_a_503_in_time(workers, settings,
                                                               temporal_client, pool) -> None:
    """The read waits on the session's machine for `changes_timeout_s`, no longer."""
    import time

    from commands.executor import CommandExecutor
    from semo.errors import Unavailable

    quick = settings.model_copy(update={"changes_timeout_s": 1.5})
    executor = CommandExecutor(temporal_client, pool, quick)
    office = {"office_id": "o-ghost", "settings": {"repository": "/nowhere/repo"}}
    session = {"office_id": "o-ghost", "session_id": "be-ghost", "role": "BE",
               "machine_id": f"ghost-{uuid.uuid4().hex[:8]}", "working_dir": "/nowhere/wt"}
    started = time.monotonic()
    with pytest.raises(Unavailable, match="did not answer in time"):
        await executor.read_changes(office, session)
    assert time.monotonic() - started < 15


async def test_a_hand_off_run_again_is_the_same_hand_off(http, repo_office, temporal_client,
                                                          pool, settings) -> None:
    """Exactly once: the command carried out again (as after a crash before its result was
    written) answers with the first hand-off's commit, though the session is busy by now."""
    from psycopg.rows import dict_row

    from commands.executor import Command, CommandExecutor

    office, _, remote = repo_office
    sid = (await new_session(http, office))["session_id"]
    job = await send_prompt(http, office, sid, "echo once > once.txt; echo [SEMO:DONE]")
    await job_when(http, office, job, "done")
    first = (await http.post(f"/api/offices/{office}/sessions/{sid}/handoff", json={})).json()
    await send_prompt(http, office, sid, "sleep 30")
    await session_when(http, office, sid, "busy")

    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = await (await cur.execute("select * from agent_commands where id = %s",
                                       (first["command_id"],))).fetchone()
    again = await CommandExecutor(temporal_client, pool, settings).execute(Command.from_row(row))
    assert again[1]["commit"] == first["commit"] and again[1]["pushed"] is True
    assert git("rev-list", "--count", f"{first['branch']}", "^main", cwd=remote) == "1", \
        "one commit, pushed once"
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/handoff", json={})
    assert r.status_code == 409 and "busy" in r.json()["detail"], "a new hand-off waits"
    await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
