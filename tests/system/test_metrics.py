"""Observability and the Temporal UI: the API's /metrics, the workers' Prometheus endpoint
(Temporal SDK metrics plus semo's, counted once, not again on replay), /readyz naming the
dependency that is down, structured logs with bound ids, and what an operator sees in
Temporal: search attributes (`temporal workflow list --query ...` works), the memo, activity
summaries and the session's current details."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import uuid

import httpx
import pytest
import structlog
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Replayer

from activities.records import RecordActivities
from api.auth import TokenVerifier
from api.deps import AppState
from api.main import create_app
from commands.executor import CommandExecutor
from db import reads
from dev.embedded import free_port, venv_bin
from semo.observability import configure_logging, ids_from_path, ids_from_workflow_id
from semo.payloads import OfficeCreate, PromptBody, SessionCreate
from semo.settings import Settings
from tests.support.metrics import samples, total
from tests.support.waiting import wait_for
from worker.client import client_runtime
from worker.server import WORKFLOWS, build_server_worker

MARKER = "printf '[SEMO:%s]\\n' DONE"


# --- the API -------------------------------------------------------------------------------------


async def test_api_metrics_are_counts_without_ids(api_url, http, office):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    sid = r.json()["session_id"]
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).status_code == 200
    assert (await http.get(f"/api/offices/{office}/sessions/nope")).status_code == 404
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as anon:  # no token needed
        r = await anon.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    route = "/api/offices/{office_id}/sessions/{session_id}"
    assert total(text, "semo_http_requests_total", method="GET", route=route, status="200") >= 1
    assert total(text, "semo_http_requests_total", method="GET", route=route, status="404") >= 1
    assert total(text, "semo_http_requests_total", method="POST",
                 route="/api/offices/{office_id}/sessions", status="201") >= 1
    assert samples(text, "semo_http_request_duration_seconds_count")
    assert total(text, "semo_sessions", status="ready") >= 1
    assert samples(text, "semo_jobs_running") and samples(text, "semo_commands_open")
    assert office not in text and sid not in text, "metrics carry no ids"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


# --- /readyz ------------------------------------------------------------------------------------


async def _ready(settings: Settings, pool, client) -> httpx.Response:
    """/readyz of an app wired to the given pool and Temporal client (no lifespan)."""
    app = create_app(settings)
    app.state.semo = AppState(settings=settings, pool=pool,
                              executor=CommandExecutor(client, pool, settings),
                              verifier=TokenVerifier(settings), live=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api", timeout=30) as c:
        return await c.get("/readyz")


async def test_readyz_names_the_dependency_that_is_down(api_url, settings, pool, temporal_client):
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as c:
        r = await c.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ok",
                                                 "checks": {"postgres": "ok", "temporal": "ok"}}

    closed = free_port()
    nowhere = settings.model_copy(update={"temporal_address": f"127.0.0.1:{closed}",
                                          "database_url": f"postgresql://x@127.0.0.1:{closed}/x"})
    dead_temporal = await Client.connect(f"127.0.0.1:{closed}", lazy=True)

    r = await _ready(nowhere, pool, dead_temporal)  # Temporal down, Postgres up
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert r.json()["status"] == "unavailable"
    assert checks["postgres"] == "ok" and checks["temporal"].startswith("down:")

    dead_pg = AsyncConnectionPool(nowhere.database_url, min_size=1, max_size=1, open=False,
                                  kwargs={"connect_timeout": 2})
    await dead_pg.open(wait=False)
    try:
        r = await _ready(nowhere, dead_pg, temporal_client)  # Postgres down, Temporal up
        assert r.status_code == 503, r.text
        checks = r.json()["checks"]
        assert checks["temporal"] == "ok" and checks["postgres"].startswith("down:")
    finally:
        await dead_pg.close()


# --- the workers --------------------------------------------------------------------------------


async def test_worker_metrics_count_once_and_not_on_replay(settings, pool, tmp_path):
    """A server worker and a client worker whose Temporal runtime serves Prometheus, on task
    queues of their own: jobs by outcome, restarts, a circuit opening, output bytes and live
    terminals are counted, next to the SDK's own metrics, and replaying the history counts
    nothing again."""
    tag = uuid.uuid4().hex[:6]
    port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"), global_tags={"component": "t"}))
    mine = settings.model_copy(update={
        "server_task_queue": f"semo-server-metrics-{tag}", "machine_id": f"metrics-{tag}",
        "home": tmp_path / "home", "workspace_roots": [tmp_path / "ws"],
        "breaker_max_failures": 2, "breaker_cooldown_s": 3600})
    client = await Client.connect(settings.effective_temporal_address(),
                                  data_converter=pydantic_data_converter, runtime=runtime)

    async def scrape() -> str:
        async with httpx.AsyncClient(timeout=10) as c:
            return (await c.get(f"http://127.0.0.1:{port}/metrics")).text

    office = f"t-metrics-{tag}"
    async with build_server_worker(client, mine, RecordActivities(pool)), \
            client_runtime(mine, client, pool):
        executor = CommandExecutor(client, pool, mine)
        try:
            body = OfficeCreate(office_id=office, name="metrics", machine_id=mine.machine_id,
                                agent="shell", warm_roles=[])
            out = await executor.submit(office_id=office, type="create_office", payload=body)
            assert out.ok, out.body
            out = await executor.submit(office_id=office, type="create_session",
                                        payload=SessionCreate(role="BE"))
            assert out.ok, out.body
            sid = out.body["session_id"]
            out = await executor.submit(office_id=office, session_id=sid, type="send_prompt",
                                        payload=PromptBody(prompt=MARKER))
            assert out.ok, out.body
            job_id = out.body["job_id"]

            async def job_done():
                job = await reads.get_job(pool, office, job_id)
                return job["status"] == "done"

            await wait_for(job_done, what="the job")
            text = await wait_for(
                lambda: _scraped_with(scrape, "semo_terminals_live", 1), what="live terminals")
            assert total(text, "semo_jobs_finished_total", outcome="done") == 1
            assert total(text, "semo_output_bytes_total") > 0

            # the agent exits twice: one restart, then the circuit opens (max 2 failures)
            for expected in ("ready", "failed"):
                out = await executor.submit(office_id=office, session_id=sid, type="send_keys",
                                            payload={"text": "exit\r"})
                assert out.ok, out.body

                async def status_is(want=expected):
                    s = await reads.get_session(pool, office, sid)
                    return s if s["status"] == want and (want != "ready" or s["restarts"]) else None

                await wait_for(status_is, what=f"session {expected}")

            text = await wait_for(lambda: _scraped_with(scrape, "semo_circuit_opens_total", 1),
                                  what="the circuit-open counter")
            assert total(text, "semo_session_restarts_total", cause="agent_exited") == 1
            assert total(text, "semo_jobs_finished_total") == 1
            # the Temporal SDK's own metrics, from the same endpoint
            assert samples(text, "temporal_request")
            assert samples(text, "temporal_workflow_task_execution_latency_count")
            assert all(labels.get("component") == "t"
                       for labels, _ in samples(text, "semo_circuit_opens_total"))

            # replaying the session's history (what another worker does after a cache
            # eviction or a restart) counts nothing again
            history = await client.get_workflow_handle(f"session/{office}/{sid}").fetch_history()
            await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                           runtime=runtime).replay_workflow(history)
            again = await scrape()
            for name in ("semo_jobs_finished_total", "semo_session_restarts_total",
                         "semo_circuit_opens_total"):
                assert total(again, name) == total(text, name), name
        finally:
            await executor.submit(office_id=office, type="delete_office", payload={})
            await executor.claimant.close()


async def _scraped_with(scrape, name: str, at_least: float) -> str | None:
    text = await scrape()
    return text if total(text, name) >= at_least else None


# --- the Temporal UI ----------------------------------------------------------------------------


def temporal_cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv_bin("temporal")), *args, "--address", address, "-o", "json"],
                          capture_output=True, text=True, timeout=30)


async def test_temporal_ui_search_attributes_memo_summaries_details(http, office, settings,
                                                                    temporal_client):
    persona = {"name": "Bea", "role": "BE", "scope_patterns": ["api/**"], "core_skills": ["sql"]}
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE", "persona": persona})
    assert r.status_code == 201, r.text
    created = r.json()
    sid, wid = created["session_id"], created["workflow_id"]
    assert wid == f"session/{office}/{sid}"
    sent = (await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": "sleep 30"})).json()
    address = settings.effective_temporal_address()

    async def listed(query: str) -> list[str]:
        r = await asyncio.to_thread(temporal_cli, address, "workflow", "list", "--query", query)
        assert r.returncode == 0, r.stderr
        out = r.stdout.strip()  # a JSON array, or one object a line (CLI versions differ)
        rows = json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.splitlines()]
        return [row["execution"]["workflowId"] for row in rows]

    busy = f'OfficeId="{office}" and SessionStatus="busy"'
    await wait_for(lambda: _has(listed(busy), wid), what="the busy session in the list")
    machine = created["machine_id"]
    assert wid in await listed(f'OfficeId="{office}" and Role="BE" and MachineId="{machine}"')
    pools = await listed(f'OfficeId="{office}" and WorkflowType="OfficePoolWorkflow"')
    assert f"pool/{office}" in pools

    # what the session is doing, as the UI's "current details" shows it
    r = await asyncio.to_thread(temporal_cli, address, "workflow", "metadata", "--workflow-id", wid)
    assert r.returncode == 0, r.stderr
    details = json.loads(r.stdout)["queryResult"][0]["currentDetails"]
    assert "**busy**" in details and sent["job_id"] in details and "sleep 30" in details

    # the memo: persona and the working dir the client resolved (known only after the start)
    desc = await temporal_client.get_workflow_handle(wid).describe()
    memo = await desc.memo()
    assert memo["persona"]["name"] == "Bea" and memo["agent"] == "shell"
    assert memo["working_dir"] == created["working_dir"]
    assert "BE shell session (cold)" in (await desc.static_summary() or "")

    # the status is kept current: cancelled, the session is ready again
    await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
    ready = f'OfficeId="{office}" and SessionStatus="ready"'
    await wait_for(lambda: _has(listed(ready), wid), what="the ready session in the list")
    assert wid not in await listed(busy)

    # every activity says what it does
    history = await temporal_client.get_workflow_handle(wid).fetch_history()
    summaries = set()
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            summaries.add(json.loads(event.user_metadata.summary.data))
    assert "start shell for BE" in summaries and "type prompt" in summaries
    assert "send keys" in summaries and "shell terminal" in summaries
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def _has(coro, item) -> bool:
    return item in await coro


# --- structured logs ----------------------------------------------------------------------------


def test_logs_are_json_with_bound_ids():
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("api", json=True, stream=buf)
        with structlog.contextvars.bound_contextvars(
                **ids_from_path("/api/offices/demo/sessions/be-1/prompt"), command_id="c-1"):
            logging.getLogger("commands.executor").warning("command %s failed", "c-1")
            structlog.get_logger("semo.x").info("typed", bytes=3)
        lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
        structlog.reset_defaults()
    assert lines[0]["event"] == "command c-1 failed" and lines[0]["level"] == "warning"
    for line in lines:
        assert line["office_id"] == "demo" and line["session_id"] == "be-1"
        assert line["command_id"] == "c-1" and line["component"] == "api" and line["timestamp"]
    assert lines[1]["bytes"] == 3
    assert ids_from_workflow_id("session/demo/be-1") == {"office_id": "demo", "session_id": "be-1"}
    assert ids_from_path("/api/offices/demo/jobs/j-1") == {"office_id": "demo", "job_id": "j-1"}


@pytest.fixture(autouse=True)
def _no_leaked_context():
    yield
    structlog.contextvars.clear_contextvars()


