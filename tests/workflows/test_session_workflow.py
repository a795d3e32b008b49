"""SessionWorkflow's timer logic, with the client machine replaced by `FakeMachine`, whose
activities are registered under the real names (the workflow cannot tell).

The circuit breaker's ten-minute windows and cool-downs run on Temporal's time-skipping test
server. The job timeout is driven through updates that run activities, which that server
hangs on (temporalio/samples-dotnet#72), so it runs on the real dev server with a short timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from dev.embedded import SEARCH_ATTRIBUTES, venv_bin
from tests.support.histories import replay_and_maybe_record
from workflows.contracts import (
    BreakerPolicy,
    PromptInput,
    RecordBatch,
    SendInput,
    SessionConfig,
    SessionInput,
    StartAgentInput,
    StartAgentResult,
    StopAgentInput,
    TerminateInput,
    WaitReadyInput,
    WatchAgentInput,
    WatchAgentResult,
)
from workflows.session import SessionWorkflow


class FakeMachine:
    """Stands in for a client worker: records what it is asked, agents 'crash' on demand."""

    def __init__(self) -> None:
        self.starts = 0
        self.sent: list[SendInput] = []
        self.records: list[RecordBatch] = []
        self.crash_next = 0
        self.stopped = asyncio.Event()

    @activity.defn(name="start_agent")
    async def start_agent(self, inp: StartAgentInput) -> StartAgentResult:
        self.starts += 1
        return StartAgentResult(working_dir="/fake", pid=1, rows=40, cols=120)

    @activity.defn(name="watch_agent")
    async def watch_agent(self, inp: WatchAgentInput) -> WatchAgentResult:
        if self.crash_next > 0:
            self.crash_next -= 1
            return WatchAgentResult(exit_code=1, signal=None, reason="exited")
        await self.stopped.wait()
        return WatchAgentResult(exit_code=0, signal=None, reason="terminated")

    @activity.defn(name="send_input")
    async def send_input(self, inp: SendInput) -> None:
        self.sent.append(inp)

    @activity.defn(name="stop_agent")
    async def stop_agent(self, inp: StopAgentInput) -> None:
        self.stopped.set()

    @activity.defn(name="record")
    async def record(self, batch: RecordBatch) -> None:
        self.records.append(batch)

    def job_statuses(self) -> list[str]:
        return [b.job.status for b in self.records if b.job is not None]

    def events(self) -> list[str]:
        return [b.event.kind for b in self.records if b.event is not None] + \
               [b.job.event_kind for b in self.records if b.job is not None and b.job.event_kind]


@pytest.fixture(scope="module")
async def env():
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(venv_bin("temporal-test-server")),
    )
    await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=env.client.namespace,
        search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                           for name in SEARCH_ATTRIBUTES}))
    yield env
    await env.shutdown()


def session_input(**config) -> SessionInput:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    # skipped time jumps past any heartbeat timeout, so the fake does not heartbeat
    return SessionInput(office_id="o1", session_id=sid, role="BE", agent="shell",
                        machine_id="fake",
                        config=SessionConfig(heartbeat_timeout_s=30 * 24 * 3600, **config))


async def run_with(env, machine: FakeMachine, inp: SessionInput):
    worker = Worker(env.client, task_queue="semo-server", workflows=[SessionWorkflow],
                    activities=[machine.record])
    machine_worker = Worker(env.client, task_queue="semo-machine-fake",
                            activities=[machine.start_agent, machine.watch_agent,
                                        machine.send_input, machine.stop_agent])
    return worker, machine_worker


async def test_job_timeout_sends_ctrl_c_and_ends_timed_out(temporal_client):
    machine = FakeMachine()
    inp = session_input()
    queue = f"semo-server-{uuid.uuid4().hex[:6]}"
    worker = Worker(temporal_client, task_queue=queue, workflows=[SessionWorkflow],
                    activities=[machine.record])
    inp.machine_id = f"fake-{uuid.uuid4().hex[:6]}"
    machine_worker = Worker(temporal_client, task_queue=f"semo-machine-{inp.machine_id}",
                            activities=[machine.start_agent, machine.watch_agent,
                                        machine.send_input, machine.stop_agent])
    async with worker, machine_worker:
        handle = await temporal_client.start_workflow(SessionWorkflow.run, inp,
                                                      id=f"session/o1/{inp.session_id}",
                                                      task_queue=queue)
        view = await handle.execute_update(SessionWorkflow.wait_ready, WaitReadyInput(command_id="c0"))
        assert view.status == "ready"
        res = await handle.execute_update(SessionWorkflow.prompt, PromptInput(
            command_id="c1", prompt="work forever", timeout_s=1))
        for _ in range(200):
            if "timed_out" in machine.job_statuses():
                break
            await asyncio.sleep(0.05)
        view = await handle.query(SessionWorkflow.view)
        assert view.status == "ready" and view.current_job_id is None
        assert "timed_out" in machine.job_statuses()
        assert [s.keys for s in machine.sent if s.keys] == [["ctrl+c"]]
        assert machine.sent[0].prompt == "work forever" and machine.sent[0].job_id == res.job_id
        await handle.execute_update(SessionWorkflow.terminate, TerminateInput(command_id="c2"))
        assert (await handle.result()).status == "terminated"
    await replay_and_maybe_record(temporal_client, handle.id, "session_job_timeout")


async def test_repeated_crashes_open_the_circuit_and_a_probe_closes_it(env):
    machine = FakeMachine()
    machine.crash_next = 3
    inp = session_input(breaker=BreakerPolicy(max_failures=3, window_s=600, cooldown_s=300))
    worker, machine_worker = await run_with(env, machine, inp)
    async with worker, machine_worker:
        handle = await env.client.start_workflow(SessionWorkflow.run, inp,
                                                 id=f"session/o1/{inp.session_id}",
                                                 task_queue="semo-server")

        async def view():
            return await handle.query(SessionWorkflow.view)

        for _ in range(100):
            v = await view()
            if v.circuit == "open":
                break
            await env.sleep(timedelta(seconds=5))
        assert v.circuit == "open" and v.status == "failed"
        assert "circuit_open" in machine.events()
        # past the cool-down a probe starts the agent. Small steps: once the probe's (fake)
        # agent runs, the test server stops skipping time and a step takes real seconds.
        for _ in range(200):
            v = await view()
            if v.circuit == "closed" and v.status == "ready":
                break
            await env.sleep(timedelta(seconds=5))
        assert v.circuit == "closed" and v.status == "ready"
        assert machine.starts == 4
        assert v.restarts >= 3
        await handle.terminate("test over")
