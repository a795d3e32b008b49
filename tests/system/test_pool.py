"""The office pool on the real stack: warm hits, the cap under concurrency, release and
waiting for room, deleting an office, and bad input."""

from __future__ import annotations

import asyncio
import uuid

from tests.support.histories import replay_and_maybe_record
from tests.support.processes import live_pids_with_env
from tests.support.tokens import MACHINE_ID
from tests.support.waiting import wait_for


async def make_office(http, **fields) -> str:
    office_id = f"p-{uuid.uuid4().hex[:10]}"
    body = {"office_id": office_id, "name": "pool test", "machine_id": MACHINE_ID,
            "agent": "shell", **fields}
    r = await http.post("/api/offices", json=body)
    assert r.status_code == 201, r.text
    return office_id


async def pool_of(http, office_id):
    r = await http.get(f"/api/offices/{office_id}")
    assert r.status_code == 200, r.text
    return r.json()["pool"]


async def test_warm_sessions_are_handed_out_then_cold_ones_made(http, temporal_client):
    office = await make_office(http, warm_roles=["BE", "QA"], max_sessions=4)

    async def warm_ready():
        pool = await pool_of(http, office)
        states = sorted((s["role"], s["pool_state"], s["status"]) for s in pool["sessions"])
        return pool if states == [("BE", "idle", "ready"), ("QA", "idle", "ready")] else None

    pool = await wait_for(warm_ready, timeout=60, what="two warm sessions")
    assert pool["capacity"] == 4 and pool["in_use"] == 0
    warm_be = next(s["session_id"] for s in pool["sessions"] if s["role"] == "BE")

    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["source"] == "warm" and first["session_id"] == warm_be
    assert first["status"] == "ready"
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    second = r.json()
    assert r.status_code == 201 and second["source"] == "cold", r.text
    pool = await pool_of(http, office)
    assert pool["in_use"] == 2 and pool["live"] == 3

    # a released session is handed out again, warm
    r = await http.post(f"/api/offices/{office}/sessions/{second['session_id']}/release")
    assert r.status_code == 200, r.text
    assert r.json()["pool_state"] == "idle"
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.json()["source"] == "warm" and r.json()["session_id"] == second["session_id"]

    r = await http.delete(f"/api/offices/{office}")
    assert r.status_code == 200, r.text
    assert sorted(r.json()["terminated_sessions"]) == sorted(s["session_id"] for s in pool["sessions"])
    assert (await http.get(f"/api/offices/{office}")).status_code == 404
    for s in pool["sessions"]:
        await wait_for(lambda sid=s["session_id"]: _gone(sid), timeout=15, what="agents stopped")
    await replay_and_maybe_record(temporal_client, f"pool/{office}", "pool_lifecycle")
    await replay_and_maybe_record(temporal_client, f"session/{office}/{warm_be}", "session_warm")


async def _gone(session_id):
    return not live_pids_with_env("SEMO_SESSION_ID", session_id)


async def test_the_cap_holds_under_twenty_concurrent_acquires(http):
    office = await make_office(http, warm_roles=[], max_sessions=6)
    answers = await asyncio.gather(*(
        http.post(f"/api/offices/{office}/sessions", json={"role": "FE"}) for _ in range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 6 + [429] * 14, codes
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "cap of 6" in refused.json()["detail"]
    pool = await pool_of(http, office)
    assert pool["live"] == 6 and pool["in_use"] == 6
    assert len({r.json()["session_id"] for r in answers if r.status_code == 201}) == 6
    await http.delete(f"/api/offices/{office}")


async def test_wait_s_waits_for_a_release(http, pool):
    office = await make_office(http, warm_roles=[], max_sessions=1)
    held = (await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})).json()
    waiting = asyncio.create_task(
        http.post(f"/api/offices/{office}/sessions", json={"role": "BE", "wait_s": 30}))
    await wait_for(lambda: _waiting_acquires(pool, office), timeout=10, what="the waiting acquire")
    r = await http.post(f"/api/offices/{office}/sessions/{held['session_id']}/release")
    assert r.status_code == 200
    r = await waiting
    assert r.status_code == 201, r.text
    assert r.json()["session_id"] == held["session_id"] and r.json()["source"] == "warm"
    await http.delete(f"/api/offices/{office}")


async def _waiting_acquires(pool, office) -> int:
    """How many create_session commands of the office are still running (waiting for room)."""
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "select count(*) from agent_commands where office_id = %s and type = 'create_session'"
            " and status = 'running'", (office,))).fetchone()
    return row[0]


async def test_pool_bad_input_is_a_clear_4xx(http):
    base = {"name": "bad", "machine_id": MACHINE_ID, "agent": "shell"}
    for body, needle in (
        ({**base, "max_sessions": -1}, "max_sessions"),
        ({**base, "max_sessions": 2, "warm_roles": ["FE", "BE", "QA"]}, "max_sessions"),
        ({**base, "idle_timeout_s": 0}, "idle_timeout_s"),
        ({**base, "roles": ["FE"], "warm_roles": ["BE"]}, "warm_roles"),
    ):
        r = await http.post("/api/offices", json=body)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.json()["detail"]
    office = await make_office(http, roles=["FE", "BE"], warm_roles=[])
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "QA"})
    assert r.status_code == 422 and "not one of" in r.json()["detail"]
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE", "wait_s": -5})
    assert r.status_code == 422
    assert (await pool_of(http, office))["live"] == 0
    await http.delete(f"/api/offices/{office}")
