"""Faults with real processes: `semo dev` runs the stack, and the tests kill its parts with
SIGKILL — the client worker mid-job, the agent again and again, the Temporal server, and
Postgres — and check that sessions say truthfully what happened and carry on."""

from __future__ import annotations

import json
import os
import signal
import uuid

import httpx
import psycopg
import pytest

from tests.support.devstack import DevStack, replay_and_maybe_record, wait
from tests.support.processes import live_pids_with_env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = DevStack(tmp_path_factory.mktemp("faults"), heartbeat_timeout_s=5,
                     breaker_cooldown_s=6, breaker_window_s=600, breaker_max_failures=3)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def api(stack):
    with stack.api() as client:
        yield client


def new_session(api, stack) -> tuple[str, str]:
    office = f"f-{uuid.uuid4().hex[:8]}"
    r = api.post("/api/offices", json={"office_id": office, "name": "faults", "agent": "shell",
                                       "machine_id": stack.machine_id, "warm_roles": []})
    assert r.status_code == 201, r.text
    r = api.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    return office, r.json()["session_id"]


def session(api, office, sid) -> dict:
    return api.get(f"/api/offices/{office}/sessions/{sid}").json()


def output(api, office, sid) -> str:
    return api.get(f"/api/offices/{office}/sessions/{sid}/output",
                   params={"limit": 1_000_000}).json()["data"]


def test_an_agent_killed_again_and_again_opens_the_circuit_and_a_probe_closes_it(stack, api):
    office, sid = new_session(api, stack)
    for strike in range(3):
        # each strike hits a fresh agent: the one the previous restart brought up
        s = wait(lambda: (s := session(api, office, sid))["status"] == "ready"
                 and s["restarts"] == strike and s, 60, f"ready before strike {strike + 1}")
        agents = live_pids_with_env("SEMO_SESSION_ID", sid)
        assert agents
        for pid in agents:
            os.kill(pid, signal.SIGKILL)
    s = wait(lambda: (s := session(api, office, sid))["circuit"] == "open" and s, 60, "open circuit")
    assert s["status"] == "failed" and "signal 9" in s["last_error"]
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo no"})
    assert r.status_code == 503, r.text
    assert "circuit" in r.json()["detail"]
    s = wait(lambda: (s := session(api, office, sid))["circuit"] == "closed"
             and s["status"] == "ready" and s, 60, "the probe to close the circuit")
    assert s["restarts"] >= 3
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo yes"})
    assert r.status_code == 200, r.text
    replay_and_maybe_record(stack, f"session/{office}/{sid}", "session_circuit_open_and_probe")


def test_temporal_killed_comes_back_and_sessions_continue(stack, api):
    office, sid = new_session(api, stack)
    info = stack.running_info()
    os.kill(info["pids"]["temporal"], signal.SIGKILL)
    stack.restarted("temporal", info["pids"]["temporal"])

    def prompt_goes_through():
        r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                     json={"prompt": "echo after-temporal-$((2*21))"},
                     headers={"Idempotency-Key": f"after-temporal-{sid}"})
        return r.status_code == 200 and r.json()

    wait(prompt_goes_through, 60, "a prompt after Temporal came back", interval=0.5)
    wait(lambda: "after-temporal-42" in output(api, office, sid), 30, "the prompt's output")
    assert stack.running_info()["pids"]["api"] == info["pids"]["api"], "the API was not restarted"
    assert session(api, office, sid)["restarts"] == 0


def test_postgres_restarted_loses_no_command(stack, api):
    office, sid = new_session(api, stack)
    info = stack.running_info()
    os.kill(info["pids"]["postgres"], signal.SIGKILL)
    stack.restarted("postgres", info["pids"]["postgres"])
    url = info["database_url"]

    def insert_row():
        try:
            with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
                return conn.execute(
                    "insert into agent_commands (office_id, session_id, type, payload)"
                    " values (%s, %s, 'send_prompt', %s) returning id",
                    (office, sid, json.dumps({"prompt": "echo via-table-$((5*5)); "
                                                        "printf '[SEMO:%s]\\n' DONE"}))).fetchone()[0]
        except psycopg.OperationalError:
            return None

    command_id = wait(insert_row, 60, "Postgres to take an insert", interval=0.5)

    def result():
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            return conn.execute("select status, result from agent_command_results"
                                " where command_id = %s", (command_id,)).fetchone()

    status, body = wait(result, 60, "the intake to answer the row", interval=0.3)
    assert status == "ok", body
    wait(lambda: "via-table-25" in output(api, office, sid), 30, "the command's effect")
    job_id = body["job_id"]
    wait(lambda: api.get(f"/api/offices/{office}/jobs/{job_id}").json()["status"] == "done", 30,
         "the table's job to complete")
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo api-ok"})
    assert r.status_code == 200, r.text


def test_a_pending_input_survives_the_api_and_the_server_worker_being_killed(stack, api):
    """The question is held by the session workflow: killing the API and the server worker
    between the question and the answer loses neither."""
    office, sid = new_session(api, stack)
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={
        "prompt": "read -p 'Ship it? [y/N] ' a; echo shipped-$a; echo [SEMO:DONE]"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    pending = wait(lambda: session(api, office, sid)["pending_input"], 30, "the question")
    pids = stack.running_info()["pids"]
    for component in ("api", "server_worker"):
        os.kill(pids[component], signal.SIGKILL)
    for component in ("api", "server_worker"):
        stack.restarted(component, pids[component])
    with stack.api() as again:
        def answered():  # the new API may not listen yet, or still be connecting
            try:
                r = again.post(f"/api/offices/{office}/sessions/{sid}/answer",
                               json={"input_id": pending["input_id"], "text": "y"})
            except httpx.TransportError:
                return None
            return r if r.status_code != 503 else None
        r = wait(answered, 60, "the answer to be taken")
        assert r.status_code == 200, r.text
        job = wait(lambda: (j := again.get(f"/api/offices/{office}/jobs/{job_id}").json())["status"]
                   != "running" and j, 60, "the job to end")
        assert job["status"] == "done", job
        assert "shipped-y" in output(again, office, sid)
        assert session(again, office, sid)["pending_input"] is None
