"""The engine's floor: a bare update that runs one activity on another task queue.
(Its own module, so Temporal's workflow sandbox imports nothing heavy with it.)"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def bench_noop(x: int) -> int:
    return x


@workflow.defn(name="BenchFloor")
class BenchFloor:
    @workflow.init
    def __init__(self, queue: str) -> None:
        self.done = False
        self.queue = queue  # known before any update runs

    @workflow.run
    async def run(self, queue: str) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.update
    async def poke(self, x: int) -> int:
        return await workflow.execute_activity(bench_noop, x, task_queue=self.queue,
                                               start_to_close_timeout=timedelta(seconds=10))

    @workflow.signal
    def finish(self) -> None:
        self.done = True
