"""A long-lived session continues as new when Temporal suggests it (the test server suggests
it at 400 events), carrying its state and the ids of commands already applied."""

from __future__ import annotations

from tests.support.histories import replay_and_maybe_record
from tests.support.waiting import wait_for
from workflows.contracts import PromptInput
from workflows.session import SessionWorkflow

PROMPTS = 45


async def test_session_continues_as_new_and_keeps_dedup(http, office, temporal_client):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    sid, wid = r.json()["session_id"], r.json()["workflow_id"]
    handle = temporal_client.get_workflow_handle(wid)
    first_run = (await handle.describe()).run_id
    first = None
    for i in range(PROMPTS):
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": f"echo can-{i}-$((i=1)) && printf '[SEMO:%s]\\n' DONE"})
        assert r.status_code == 200, r.text
        first = first or r.json()
        job_id = r.json()["job_id"]

        async def done():
            job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
            return job["status"] == "done"

        await wait_for(done, what=f"job {i}")
    desc = await handle.describe()
    assert desc.run_id != first_run, "the session should have continued as new"
    assert desc.status.name == "RUNNING"

    # a command applied in an earlier run is still recognised: same answer, nothing typed
    again = await handle.execute_update(
        SessionWorkflow.prompt,
        PromptInput(command_id=first["command_id"], prompt="echo can-0-$((i=1)) should-not-run"),
        id=first["command_id"])
    assert again.job_id == first["job_id"]

    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["status"] == "ready" and session["restarts"] == 0
    out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output",
                          params={"limit": 1_000_000})).json()["data"]
    assert "should-not-run" not in out
    for i in range(PROMPTS):
        assert out.count(f"can-{i}-1") == 1, i
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo still-here"})
    assert r.status_code == 200
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
    await replay_and_maybe_record(temporal_client, wid, "session_continued_as_new")
