"""Reading a session's changes and handing its branch off: one activity each on the session's
client machine (git runs there, with its own credentials), each behind a short workflow of its
own so the session workflow's history and code paths stay as they are.

ReadChangesWorkflow is a read: a fresh id per request, one attempt, bounded by a timeout (an
offline machine is a 503, not a wait). HandOffWorkflow's id is its command's id, so running the
command again attaches to the same hand-off instead of committing and pushing twice; its
activity is safe to retry (a retry finds the work committed and pushes it again, a no-op).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.change_contracts import ChangesResult, HandOffResult, HandOffRun, ReadChangesRun
    from workflows.failures import ErrorType
    from workflows.machine import NO_RETRY, machine_queue

#: a hand-off that failed on a passing cause (a network blip) is tried again; one refused for
#: a reason (nothing to hand off, a rejected push) is not
_HAND_OFF_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3,
                              non_retryable_error_types=[ErrorType.NOTHING_TO_HAND_OFF,
                                                         ErrorType.GIT_FAILED,
                                                         ErrorType.INVALID_WORKING_DIR,
                                                         ErrorType.INVALID_INPUT])


def changes_workflow_id(office_id: str, session_id: str, request_id: str) -> str:
    return f"changes/{office_id}/{session_id}/{request_id}"


def hand_off_workflow_id(office_id: str, session_id: str, command_id: str) -> str:
    return f"handoff/{office_id}/{session_id}/{command_id}"


@workflow.defn(name="ReadChanges")
class ReadChangesWorkflow:
    @workflow.run
    async def run(self, inp: ReadChangesRun) -> ChangesResult:
        return await workflow.execute_activity(
            "read_changes", inp.changes, result_type=ChangesResult,
            task_queue=machine_queue(inp.machine_id),
            schedule_to_close_timeout=timedelta(seconds=inp.timeout_s), retry_policy=NO_RETRY,
            summary=f"read the changes of {inp.changes.worktree.session_id}")


@workflow.defn(name="HandOff")
class HandOffWorkflow:
    @workflow.run
    async def run(self, inp: HandOffRun) -> HandOffResult:
        return await workflow.execute_activity(
            "hand_off", inp.hand_off, result_type=HandOffResult,
            task_queue=machine_queue(inp.machine_id),
            schedule_to_close_timeout=timedelta(seconds=inp.timeout_s),
            retry_policy=_HAND_OFF_RETRY,
            summary=f"hand off the branch of {inp.hand_off.worktree.session_id}")
