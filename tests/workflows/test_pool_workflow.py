"""OfficePoolWorkflow's timers on Temporal's time-skipping test server: idle reaping after
ten minutes and warm replacement, in seconds of real time.

Sessions are `FakeSessionWorkflow`, registered under the real name "SessionWorkflow": it
reports ready to its pool at once, can be told to fail, and ends when asked to terminate.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from dev.embedded import SEARCH_ATTRIBUTES, venv_bin
from workflows.contracts import (
    AcquireInput,
    OfficeConfig,
    PoolInput,
    ReleaseInput,
    SessionInput,
    SessionStatusSignal,
    SessionView,
    TerminateInput,
)
from workflows.pool import OfficePoolWorkflow


@workflow.defn(name="SessionWorkflow")
class FakeSessionWorkflow:
    """Stands in for a real session: no machine, no terminal."""

    def __init__(self) -> None:
        self.stop = False
        self.fail = False

    @workflow.run
    async def run(self, inp: SessionInput) -> None:
        pool = workflow.get_external_workflow_handle(inp.pool_workflow_id)

        def view(status: str) -> SessionView:
            return SessionView(session_id=inp.session_id, office_id=inp.office_id, role=inp.role,
                               agent=inp.agent, machine_id=inp.machine_id, working_dir="/fake",
                               status=status, current_job_id=None, restarts=0, circuit="closed",
                               source=inp.source, workflow_id=workflow.info().workflow_id)

        await pool.signal("session_status", SessionStatusSignal(session=view("ready")))
        await workflow.wait_condition(lambda: self.stop or self.fail)
        if self.fail:
            await pool.signal("session_status", SessionStatusSignal(session=view("failed"),
                                                                    error="agent crashed"))
            await workflow.wait_condition(lambda: self.stop)
        await pool.signal("session_status", SessionStatusSignal(session=view("terminated")))

    @workflow.signal
    def request_terminate(self, inp: TerminateInput) -> None:
        self.stop = True

    @workflow.signal
    def crash(self) -> None:
        self.fail = True


@pytest.fixture(scope="module")
async def env():
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(venv_bin("temporal-test-server")))
    await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=env.client.namespace,
        search_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in SEARCH_ATTRIBUTES}))
    yield env
    await env.shutdown()


async def start_pool(env, **office):
    office_id = f"o-{uuid.uuid4().hex[:6]}"
    cfg = OfficeConfig(office_id=office_id, machine_id="m", agent="shell", **office)
    return await env.client.start_workflow(OfficePoolWorkflow.run, PoolInput(office=cfg),
                                           id=f"pool/{office_id}", task_queue="semo-server")


async def until(env, handle, predicate, what, step=timedelta(seconds=1), steps=400):
    for _ in range(steps):
        view = await handle.query(OfficePoolWorkflow.view)
        if predicate(view):
            return view
        await env.sleep(step)
    raise AssertionError(f"pool never reached: {what}; last {view}")


async def test_idle_cold_sessions_are_reaped_and_warm_ones_kept(env):
    async with Worker(env.client, task_queue="semo-server",
                      workflows=[OfficePoolWorkflow, FakeSessionWorkflow]):
        pool = await start_pool(env, warm_roles=["BE"], idle_timeout_s=600, max_sessions=4)
        await until(env, pool, lambda v: [s.state for s in v.sessions] == ["idle"], "warm BE idle")
        warm = await pool.execute_update(OfficePoolWorkflow.acquire,
                                         AcquireInput(command_id="c1", role="BE"), id="c1")
        assert warm.source == "warm"
        cold = await pool.execute_update(OfficePoolWorkflow.acquire,
                                         AcquireInput(command_id="c2", role="BE"), id="c2")
        assert cold.source == "cold"
        for cid, sid in (("c3", warm.session.session_id), ("c4", cold.session.session_id)):
            await pool.execute_update(OfficePoolWorkflow.release,
                                      ReleaseInput(command_id=cid, session_id=sid), id=cid)
        await env.sleep(timedelta(minutes=5))
        assert (await pool.query(OfficePoolWorkflow.view)).live == 2  # not idle long enough yet
        view = await until(env, pool, lambda v: v.live == 1, "cold session reaped",
                           step=timedelta(seconds=30))
        assert view.sessions[0].session_id == warm.session.session_id and view.sessions[0].warm
        await env.sleep(timedelta(hours=3))
        assert (await pool.query(OfficePoolWorkflow.view)).live == 1  # the warm one stays


async def test_a_failed_warm_session_is_replaced(env):
    async with Worker(env.client, task_queue="semo-server",
                      workflows=[OfficePoolWorkflow, FakeSessionWorkflow]):
        pool = await start_pool(env, warm_roles=["FE", "QA"], max_sessions=6)
        view = await until(env, pool, lambda v: sorted(s.state for s in v.sessions) == ["idle", "idle"],
                           "two warm sessions idle")
        fe = next(s.session_id for s in view.sessions if s.role == "FE")
        await env.client.get_workflow_handle(f"session/{view.office_id}/{fe}").signal(
            FakeSessionWorkflow.crash)
        view = await until(env, pool, lambda v: fe not in {s.session_id for s in v.sessions}
                           and sorted((s.role, s.state) for s in v.sessions)
                           == [("FE", "idle"), ("QA", "idle")], "FE replaced")
        assert all(s.warm for s in view.sessions)
