"""What tests do through the REST API again and again: make a session, send a prompt, wait
for a job, a session status or a job event. A module of its own, so that test modules do
not import these from each other (three had their own `new_session`)."""

from __future__ import annotations

from tests.support.waiting import wait_for


async def new_session(http, office: str, *, role: str = "BE", agent: str | None = None) -> dict:
    """A cold session of the office (its agent, unless `agent` names another), ready."""
    body = {"role": role, **({"agent": agent} if agent else {})}
    r = await http.post(f"/api/offices/{office}/sessions", json=body)
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["status"] == "ready", session
    return session


async def send_prompt(http, office: str, sid: str, prompt: str, **kw) -> str:
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": prompt, **kw})
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


async def job_when(http, office: str, job_id: str, *statuses: str, timeout: float = 60) -> dict:
    async def probe():
        job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
        return job if job["status"] in statuses else None
    return await wait_for(probe, timeout=timeout, interval=0.1, what=f"job {job_id} {statuses}")


async def session_when(http, office: str, sid: str, status: str, timeout: float = 30) -> dict:
    async def probe():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s if s["status"] == status else None
    return await wait_for(probe, timeout=timeout, interval=0.1, what=f"session {status}")


async def event_of(http, office: str, job_id: str, kind: str, timeout: float = 60) -> dict:
    async def probe():
        job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
        return next((e for e in job["events"] if e["kind"] == kind), None)
    return await wait_for(probe, timeout=timeout, interval=0.1, what=f"a {kind} event")
