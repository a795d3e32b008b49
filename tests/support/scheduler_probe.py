"""A stand-in job scheduler workflow for tests: it collects the job notices it is sent.
(Its own module, so Temporal's workflow sandbox imports nothing heavy with it.)"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import JobNotice


@workflow.defn
class SchedulerProbe:
    def __init__(self) -> None:
        self.notices: list[JobNotice] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def job_finished(self, notice: JobNotice) -> None:
        self.notices.append(notice)

    @workflow.query
    def seen(self) -> list[JobNotice]:
        return self.notices
