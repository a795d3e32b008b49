"""SessionWorkflow: one interactive agent terminal, from start to terminate.

The PTY lives on a client machine. This workflow drives it through activities on that
machine's task queue (`semo-machine-{machine_id}`):

- `start_agent` spawns the agent (or finds the one already running for this generation,
  which is how a continued-as-new run takes over) and returns once it is ready;
- `watch_agent` is long-running and heartbeating: it returns when the agent's process is
  gone, and times out on its heartbeat when the client worker dies;
- `send_input` types a prompt or keys; `stop_agent` kills the process group.

The client worker reports what its OutputMonitor sees as `monitor` signals. Prompts, keys,
cancel and terminate are updates whose update id is the command id. Postgres rows are
written by local activities (`record`) carrying a version, so an older write never wins;
a prompt hands its rows back in its result instead, for the command executor to write with
the command's result (db/writes.py, the same statements).

Restarts are a circuit breaker: a failure (agent exited, worker lost, machine offline) is
recorded; `max_failures` within `window_s` opens the circuit (status `failed`, prompts
refused) until a probe after `cooldown_s` succeeds.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import admission, breaker, failures
    from workflows.applied import remember
    from workflows.contracts import (
        NAMED_KEYS,
        AnswerInput,
        CommandAck,
        EventRecord,
        JobNotice,
        JobRecord,
        JobState,
        KeysInput,
        MonitorSignal,
        PendingInput,
        PromptInput,
        PromptResult,
        ReattachAgentInput,
        ReattachAgentResult,
        RecordBatch,
        ResizeInput,
        ResizeResult,
        ResizeTerminalInput,
        SendAnswer,
        SendInput,
        SessionInput,
        SessionRecord,
        SessionState,
        SessionStatus,
        SessionStatusSignal,
        SessionView,
        StartAgentInput,
        StartAgentResult,
        StopAgentInput,
        TerminateInput,
        WaitReadyInput,
        WatchAgentInput,
        WatchAgentResult,
    )
    from workflows.failures import ErrorType
    from workflows.limits import MAX_KEYS, MAX_PROMPT_BYTES, size_problem, too_large
    from workflows.machine import DB_RETRY, NO_RETRY, machine_queue
    from workflows.pending_input import answer_problem, pending_input
    from workflows.search_attributes import SESSION_STATUS

#: patch: a prompt's job and session rows are written by whoever answers the update
ANSWER_WRITES_ROWS = "prompt-rows-written-by-answer"
#: patch: a job interrupted by a failure ends with the session restarting, not ready
NOT_READY_WHILE_FAILING = "not-ready-while-failing"
#: patch: a prompt the terminal refused untyped (a dialog is open) leaves no failed job
REFUSED_PROMPT_NO_JOB = "refused-prompt-leaves-no-job"
#: patch: a lost client worker first re-attaches to the same agent (the keeper kept it)
REATTACH_LOST_WORKER = "reattach-lost-worker"
#: patch: a job failed because its agent is exiting leaves the session restarting, not ready
AGENT_EXIT_NOT_READY = "agent-exit-not-ready"


@workflow.defn(name="SessionWorkflow")
class SessionWorkflow:
    @workflow.init
    def __init__(self, inp: SessionInput) -> None:
        self.inp = inp
        self.s: SessionState = inp.state or SessionState(working_dir=inp.working_dir)
        self.events: deque[MonitorSignal] = deque()
        self.terminate_req: TerminateInput | None = None
        self.terminated = False
        self.start_error: ApplicationError | None = None
        self.last_error: str | None = None
        #: why the last start failed, when it can be tried again
        self.start_failure: failures.Failure | None = None
        self.rows: int | None = None
        self.cols: int | None = None
        self._row_dirty = True
        self._recorded_version = -1
        #: a status the office pool has not been told yet
        self._pool_notice: SessionStatus | None = None
        #: set when the main loop must re-read its deadlines (a job started or ended)
        self._replan = False
        #: the SessionStatus search attribute as last upserted (a continued run inherits it)
        self._published_status: SessionStatus = self.s.status

    # --- entry point ----------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: SessionInput) -> SessionView:
        while not self.terminate_req:
            if self.s.circuit == "open":
                await self._cool_down()
                continue
            started = await self._start_agent()
            if not started:
                if self.start_error and self.start_error.non_retryable:
                    break  # bad input (working dir, agent): nothing a restart can fix
                await self._after_failure(self.start_failure or failures.START_FAILED)
                continue
            gone = await self._supervise()
            while gone is not None and gone.kind is failures.FailureKind.WORKER_LOST \
                    and self.terminate_req is None and workflow.patched(REATTACH_LOST_WORKER) \
                    and await self._reattach(gone):
                gone = await self._supervise()  # the same agent, the same job: not a restart
            if gone is None:  # continue-as-new
                return await self._continue_as_new()
            if self.terminate_req:
                break
            await self._after_failure(gone)
        await self._finish()
        return self._view()

    # --- queries, signals, updates --------------------------------------------------------

    @workflow.query
    def view(self) -> SessionView:
        return self._view()

    @workflow.signal
    def monitor(self, ev: MonitorSignal) -> None:
        if ev.generation == self.s.generation:
            self.events.append(ev)

    @workflow.signal
    def request_terminate(self, inp: TerminateInput) -> None:
        """Terminate without waiting (how the office pool reaps idle sessions)."""
        if self.terminate_req is None:
            self.terminate_req = inp

    @workflow.update
    async def wait_ready(self, inp: WaitReadyInput) -> SessionView:
        # answered once the row says so too, so that a read right after sees the session
        await workflow.wait_condition(
            lambda: (self.s.status not in ("starting", "restarting")
                     and self._recorded_version >= self.s.version)
            or self.start_error is not None or self.terminated
        )
        if self.start_error is not None and self.s.status in ("failed", "terminated"):
            raise self.start_error
        return self._view()

    @wait_ready.validator
    def _validate_wait_ready(self, inp: WaitReadyInput) -> None:
        pass

    @workflow.update
    async def prompt(self, inp: PromptInput) -> PromptResult:
        if inp.command_id in self.s.applied:
            return PromptResult.model_validate(self.s.applied[inp.command_id])
        self._check_accepts_prompt()  # re-checked: validators of one batch all run first
        job = JobState(
            job_id=inp.job_id or f"job-{workflow.uuid4().hex[:20]}",
            command_id=inp.command_id,
            prompt_preview=inp.prompt[:200],
            started_at=workflow.now(),
            timeout_s=inp.timeout_s or self.inp.config.default_job_timeout_s,
            notify_workflow_id=inp.notify_workflow_id,
        )
        self.s.job = job
        self._replan = True
        # Rows written by whoever answers (see PromptResult.rows): a local activity here
        # would hold this workflow task, and the prompt with it, for a Postgres round trip.
        # The search attribute follows once the prompt is typed, off the prompt's path.
        answer_writes = workflow.patched(ANSWER_WRITES_ROWS)
        self._set_status("busy", search_attribute=not answer_writes)
        job_row = JobRecord(
            job_id=job.job_id, office_id=self.inp.office_id, session_id=self.inp.session_id,
            status="running", prompt=inp.prompt, timeout_s=job.timeout_s, command_id=inp.command_id,
        )
        # (the prompt is left out of these: the update's input has it, history need not twice)
        rows = (
            RecordBatch(
                session=self._session_record(), job=job_row.model_copy(update={"prompt": None})
            )
            if answer_writes
            else None
        )
        typed = SendInput(session_id=self.inp.session_id, generation=self.s.generation,
                          job_id=job.job_id, prompt=inp.prompt)
        if answer_writes:
            results = await asyncio.gather(self._send(typed), return_exceptions=True)
        else:
            results = await asyncio.gather(self._record(job=job_row), self._send(typed),  # type: ignore[assignment]
                                           return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        refused = failures.cause_type(failure) == ErrorType.DIALOG_OPEN
        if refused and answer_writes and workflow.patched(REFUSED_PROMPT_NO_JOB):
            # nothing was typed and no row written: as if the prompt never came
            if self.s.job and self.s.job.job_id == job.job_id:
                self.s.job = None
                self._replan = True
                if self.s.status == "busy":
                    self._set_status("ready", search_attribute=False)
            raise ApplicationError(failures.reason_of(failure), type=ErrorType.DIALOG_OPEN,
                                   non_retryable=True)
        if failure is not None:
            if self.s.job and self.s.job.job_id == job.job_id:
                await self._end_job(
                    "failed", error=f"prompt could not be typed: {failures.reason_of(failure)}"
                )
            raise ApplicationError(
                f"the prompt could not be delivered to the terminal: {failures.reason_of(failure)}",
                type=ErrorType.UNAVAILABLE, non_retryable=True,
            )
        self._publish_status()
        result = PromptResult(command_id=inp.command_id, job_id=job.job_id)
        self._remember(inp.command_id, result.model_dump(exclude={"rows"}))
        return result.model_copy(update={"rows": rows})

    @prompt.validator
    def _validate_prompt(self, inp: PromptInput) -> None:
        if inp.command_id in self.s.applied:
            return
        if not inp.prompt.strip():
            raise ApplicationError("prompt is empty", type=ErrorType.INVALID_INPUT)
        if too_large(inp.prompt):
            raise ApplicationError(
                f"prompt exceeds {MAX_PROMPT_BYTES} bytes", type=ErrorType.INVALID_INPUT
            )
        self._check_accepts_prompt()

    @workflow.update
    async def keys(self, inp: KeysInput) -> CommandAck:
        if inp.command_id in self.s.applied:
            return CommandAck.model_validate(self.s.applied[inp.command_id])
        self._check_alive()
        await self._send(SendInput(
            session_id=self.inp.session_id, generation=self.s.generation,
            job_id=self.s.job.job_id if self.s.job else None, keys=inp.keys, text=inp.text,
        ))
        if self.s.status == "waiting_input":
            self.s.pending = None  # answered on the terminal
            self._set_status("busy" if self.s.job else "ready")
            await self._record(event=self._event("input_answered", {"keys": inp.keys}))
        ack = CommandAck(command_id=inp.command_id, session_id=self.inp.session_id,
                         status=self.s.status, job_id=self.s.job.job_id if self.s.job else None)
        self._remember(inp.command_id, ack.model_dump())
        return ack

    @keys.validator
    def _validate_keys(self, inp: KeysInput) -> None:
        if inp.command_id in self.s.applied:
            return
        unknown = [k for k in inp.keys if k.lower() not in NAMED_KEYS]
        if unknown:
            raise ApplicationError(
                f"unknown key names: {', '.join(unknown)}", type=ErrorType.INVALID_INPUT
            )
        if not inp.keys and not inp.text:
            raise ApplicationError(
                "nothing to send: give keys or text", type=ErrorType.INVALID_INPUT
            )
        if len(inp.keys) > MAX_KEYS or too_large(inp.text):
            raise ApplicationError("too many keys or too much text", type=ErrorType.INVALID_INPUT)
        self._check_alive()

    @workflow.update
    async def answer(self, inp: AnswerInput) -> CommandAck:
        """Answer the pending input (POST .../answer): on the machine, through the agent's
        hook when it still waits, else its dialog."""
        if inp.command_id in self.s.applied:
            return CommandAck.model_validate(self.s.applied[inp.command_id])
        pending = self._check_answer(inp)  # re-checked: validators of one batch all run first
        await self._on_machine(  # not retried: an answer is given once
            "answer_input",
            SendAnswer(session_id=self.inp.session_id, generation=self.s.generation,
                       input_id=pending.input_id, kind=pending.kind, decision=inp.decision,
                       option=inp.option, text=inp.text, remember=inp.remember),
            summary=f"answer {pending.kind}",
        )
        answer = {k: v for k, v in (("decision", inp.decision), ("option", inp.option),
                                    ("text", inp.text)) if v is not None}
        await self._input_answered(pending, {**answer, "remember": inp.remember,
                                             "by": "answer", "command_id": inp.command_id})
        ack = CommandAck(command_id=inp.command_id, session_id=self.inp.session_id,
                         status=self.s.status, job_id=self.s.job.job_id if self.s.job else None)
        self._remember(inp.command_id, ack.model_dump())
        return ack

    @answer.validator
    def _validate_answer(self, inp: AnswerInput) -> None:
        if inp.command_id not in self.s.applied:
            self._check_answer(inp)

    def _check_answer(self, inp: AnswerInput) -> PendingInput:
        self._check_alive()
        pending = self.s.pending
        if pending is None or pending.input_id != inp.input_id:
            raise ApplicationError(
                f"input {inp.input_id!r} is not what the session waits for "
                f"({'nothing' if pending is None else repr(pending.input_id)}): answered "
                "already, or gone", type=ErrorType.INPUT_STALE)
        problem = answer_problem(pending, inp)
        if problem:
            raise ApplicationError(problem, type=ErrorType.INVALID_INPUT)
        return pending

    async def _input_answered(self, pending: PendingInput, data: dict) -> None:
        self.s.pending = None
        self._replan = True
        if self.s.status == "waiting_input":
            self._set_status("busy" if self.s.job else "ready")
        await self._record(event=self._event("input_answered", {
            "input_id": pending.input_id, "kind": pending.kind, **data}, self.s.job))

    async def _input_timed_out(self) -> None:
        """The office's input_timeout_s ran out: the pending input is answered `deny`."""
        pending = self.s.pending
        if pending is None:
            return
        decision = "deny" if pending.kind in ("permission", "plan") else None
        text = None if decision else "No answer came in time; go on without it."
        try:
            await self._on_machine(
                "answer_input",
                SendAnswer(session_id=self.inp.session_id, generation=self.s.generation,
                           input_id=pending.input_id, kind=pending.kind, decision=decision,  # type: ignore[arg-type]
                           text=text),
                summary=f"deny {pending.kind} (timed out)")
            sent = True
        except ActivityError:
            sent = False
        await self._input_answered(pending, {"decision": "deny", "by": "timeout", "sent": sent})

    @workflow.update
    async def cancel(self, inp: KeysInput) -> CommandAck:
        if inp.command_id in self.s.applied:
            return CommandAck.model_validate(self.s.applied[inp.command_id])
        self._check_alive()
        job_id = self.s.job.job_id if self.s.job else None
        await self._send(SendInput(
            session_id=self.inp.session_id, generation=self.s.generation, job_id=job_id,
            keys=["ctrl+c"],
        ))
        if self.s.job and self.s.job.job_id == job_id:
            await self._end_job("cancelled", error="cancelled by request")
        ack = CommandAck(command_id=inp.command_id, session_id=self.inp.session_id,
                         status=self.s.status, job_id=job_id)
        self._remember(inp.command_id, ack.model_dump())
        return ack

    @cancel.validator
    def _validate_cancel(self, inp: KeysInput) -> None:
        if inp.command_id not in self.s.applied:
            self._check_alive()

    @workflow.update
    async def terminate(self, inp: TerminateInput) -> CommandAck:
        if self.terminate_req is None:
            self.terminate_req = inp
        await workflow.wait_condition(lambda: self.terminated)
        return CommandAck(command_id=inp.command_id, session_id=self.inp.session_id,
                          status="terminated")

    @workflow.update
    async def resize(self, inp: ResizeInput) -> ResizeResult:
        """An attached terminal's size for the PTY (`semo session attach`). The row keeps it,
        so that `/screen` renders at that size; a restarted agent starts at the default."""
        self._check_alive()
        await self._on_machine(
            "resize_terminal",
            ResizeTerminalInput(session_id=self.inp.session_id, generation=self.s.generation,
                                rows=inp.rows, cols=inp.cols),
            start_to_close_s=10,
            retry_policy=RetryPolicy(maximum_attempts=2),  # setting a size twice is harmless
            summary=f"resize terminal to {inp.rows}x{inp.cols}",
        )
        if (self.rows, self.cols) != (inp.rows, inp.cols):
            self.rows, self.cols = inp.rows, inp.cols
            self.s.version += 1
            self._row_dirty = True
            await self._record()
        return ResizeResult(session_id=self.inp.session_id, rows=inp.rows, cols=inp.cols)

    @resize.validator
    def _validate_resize(self, inp: ResizeInput) -> None:
        problem = size_problem(inp.rows, inp.cols)
        if problem:
            raise ApplicationError(problem, type=ErrorType.INVALID_INPUT)
        self._check_alive()

    # --- the supervision loop -------------------------------------------------------------

    async def _start_agent(self) -> bool:
        self.start_error = None
        self.start_failure = None
        try:
            res: StartAgentResult = await self._on_machine(
                "start_agent",
                StartAgentInput(
                    office_id=self.inp.office_id, session_id=self.inp.session_id,
                    workflow_id=workflow.info().workflow_id, agent=self.inp.agent,
                    working_dir=self.s.working_dir, generation=self.s.generation,
                    persona=self.inp.persona, role=self.inp.role,
                    repository=self.inp.repository,
                ),
                result_type=StartAgentResult,
                schedule_to_start_s=self.inp.config.start_timeout_s, start_to_close_s=90,
                summary=f"start {self.inp.agent} for {self.inp.role}",
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                self.start_error = cause
                self.last_error = cause.message
                self._set_status("failed")
                await self._record(event=self._event("start_failed", {"reason": cause.message}))
                return False
            self.start_failure = failures.failure_of(err, starting=True)
            self.last_error = self.start_failure.reason
            return False
        if res.working_dir != self.s.working_dir and workflow.patched("memo-working-dir"):
            # the pool's memo has the directory it asked for (or none): show where it runs
            workflow.upsert_memo({"working_dir": res.working_dir})
        self.s.working_dir = res.working_dir
        self.rows, self.cols = res.rows, res.cols
        if self.s.circuit == "half_open":
            self.s.circuit = "closed"
            self.s.failures.clear()
        if self.s.status in ("starting", "restarting", "failed"):
            self._set_status("busy" if self.s.job else "ready")
        else:
            self._set_status(self.s.status)  # continued-as-new: write the row as it is
        await self._record(event=self._event("started", {
            "generation": self.s.generation, "pid": res.pid, "working_dir": res.working_dir}))
        return True

    async def _reattach(self, lost: failures.Failure) -> bool:
        """The watch on the agent was lost (its worker died, or the server was away longer
        than the heartbeat timeout): ask the machine for the same generation of the agent
        before restarting anything. True: it runs and is watched again."""
        job = self.s.job
        await self._record(event=self._event("worker_lost", {"reason": lost.reason}, job))
        try:
            res: ReattachAgentResult = await workflow.execute_activity(
                "reattach_agent",
                ReattachAgentInput(session_id=self.inp.session_id, generation=self.s.generation,
                                   workflow_id=workflow.info().workflow_id,
                                   job_id=job.job_id if job else None),
                result_type=ReattachAgentResult,
                task_queue=machine_queue(self.inp.machine_id),
                schedule_to_start_timeout=timedelta(seconds=self.inp.config.start_timeout_s),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NO_RETRY,
                summary="re-attach to the agent",
            )
        except ActivityError:
            return False
        if not res.attached:
            return False
        await self._record(event=self._event(
            "reattached", {"generation": self.s.generation, "pid": res.pid}, self.s.job))
        return True

    async def _supervise(self) -> failures.Failure | None:
        """Run until the agent is gone (returns why), or None to continue-as-new."""
        watch = workflow.start_activity(
            "watch_agent",
            WatchAgentInput(session_id=self.inp.session_id, generation=self.s.generation),
            result_type=WatchAgentResult,
            task_queue=machine_queue(self.inp.machine_id),
            schedule_to_start_timeout=timedelta(seconds=self.inp.config.start_timeout_s),
            start_to_close_timeout=timedelta(days=3650),
            heartbeat_timeout=timedelta(seconds=self.inp.config.heartbeat_timeout_s),
            retry_policy=NO_RETRY,
            cancellation_type=workflow.ActivityCancellationType.ABANDON,
            summary=f"{self.inp.agent} terminal",
        )
        while True:
            timeout = self._until_job_deadline()
            input_left = self._until_input_deadline()
            if input_left is not None:
                timeout = input_left if timeout is None else min(timeout, input_left)
            self._replan = False
            try:
                await workflow.wait_condition(
                    lambda: bool(self.events) or watch.done() or self.terminate_req is not None
                    or self._replan or self._should_continue_as_new(),
                    timeout=timeout,
                )
            except builtins.TimeoutError:
                if input_left is not None and timeout == input_left:
                    await self._input_timed_out()
                else:
                    await self._job_timed_out()
                continue
            while self.events:
                await self._on_event(self.events.popleft())
            if self.terminate_req is not None:
                await self._stop_agent()
                try:
                    await watch
                except ActivityError:
                    pass
                return failures.TERMINATED
            if watch.done():
                try:
                    res = watch.result()
                except ActivityError as err:
                    return failures.failure_of(err, starting=False)
                if res.reason == "drained":
                    return failures.DRAINED
                return failures.exited(res.exit_code, res.signal)
                
            if self._should_continue_as_new():
                watch.cancel()
                return None

    async def _on_event(self, ev: MonitorSignal) -> None:
        job = self.s.job
        for_job = job is not None and ev.job_id == job.job_id
        if ev.kind == "completion" and for_job:
            await self._end_job("done", completion={**ev.data, "offset": ev.offset})
        elif ev.kind == "error" and for_job:
            # the agent said it is exiting (Claude Code's SessionEnd, or its process gone):
            # its watch ends next and the session restarts; `ready` in between would be a lie
            exiting = ev.data.get("kind") == "exit" and workflow.patched(AGENT_EXIT_NOT_READY)
            await self._end_job("failed", error=str(ev.data.get("reason") or "agent error"),
                                event=("error", ev.data),
                                after="restarting" if exiting else "ready")
        elif ev.kind == "waiting_input" and self.s.status in ("ready", "busy"):
            self.s.pending = pending_input(ev, workflow.now())
            self._replan = True  # its deadline, if the office has one
            self._set_status("waiting_input")
            await self._record(event=self._event("waiting_input", ev.data, job))
        else:
            await self._record(event=self._event(ev.kind, ev.data, job if for_job else None))

    async def _end_job(self, status: str, *, completion: dict | None = None,
                       error: str | None = None, event: tuple[str, dict] | None = None,
                       after: SessionStatus = "ready") -> None:
        job = self.s.job
        if job is None:
            return
        self.s.job = None
        self.s.pending = None
        self._replan = True
        if self.s.status in ("busy", "waiting_input"):
            self._set_status(after)
        kind, data = event or (f"job_{status}", completion or ({"reason": error} if error else {}))
        self._count("semo_jobs_finished_total", "jobs that ended, by outcome", outcome=status)
        await self._record(job=JobRecord(
            job_id=job.job_id, office_id=self.inp.office_id, session_id=self.inp.session_id,
            status=status, completion=completion, error=error, final=True,  # type: ignore[arg-type]
            event_kind=kind, event_data=data,
        ))
        if job.notify_workflow_id:
            notice = JobNotice(job_id=job.job_id, session_id=self.inp.session_id,
                               office_id=self.inp.office_id, status=status,  # type: ignore[arg-type]
                               completion=completion, error=error)
            try:
                await workflow.get_external_workflow_handle(job.notify_workflow_id).signal(
                    "job_finished", notice)
            except Exception as err:  # the scheduler may be gone; the job row still says it
                workflow.logger.warning("could not notify %s: %s", job.notify_workflow_id, err)

    async def _job_timed_out(self) -> None:
        job = self.s.job
        if job is None:
            return
        try:
            await self._send(SendInput(session_id=self.inp.session_id, generation=self.s.generation,
                                       job_id=job.job_id, keys=["ctrl+c"]))
            sent = True
        except ActivityError:
            sent = False
        await self._end_job("timed_out", error=f"no completion within {job.timeout_s:g}s",
                            event=("timeout", {"timeout_s": job.timeout_s, "ctrl_c_sent": sent}))

    async def _after_failure(self, failure: failures.Failure) -> None:
        """Record a failure, fail an interrupted job, and back off or open the circuit."""
        reason = self.last_error = failure.reason
        self.s.pending = None  # the agent that asked is gone
        if self.s.job is not None:
            if workflow.patched(NOT_READY_WHILE_FAILING):
                self._set_status("restarting")  # its agent is gone: not `ready` in between
            await self._end_job("failed", error="interrupted",
                                event=("interrupted", {"reason": reason}))
        if failure.drained:
            # the machine's worker stopped on purpose: restart when it is back, no strike
            self.s.generation += 1
            self.s.restarts += 1
            self._count("semo_session_restarts_total", "session restarts, by cause",
                        cause=failure.kind.value)
            self._set_status("restarting")
            await self._record(event=self._event("restarting", {"reason": reason,
                                                                 "restarts": self.s.restarts}))
            return
        verdict = breaker.strike(self.s.failures, workflow.now(), self.inp.config.breaker,
                                 self.s.circuit)
        self.s.failures = verdict.failures
        self.s.generation += 1
        if verdict.opens:
            self.s.circuit = "open"
            self._count("semo_circuit_opens_total", "circuits opened by repeated failures")
            self._set_status("failed")
            await self._record(
                event=self._event(
                    "circuit_open", {"reason": reason, "failures": len(self.s.failures)}
                )
            )
            return
        self.s.restarts += 1
        self._count("semo_session_restarts_total", "session restarts, by cause",
                    cause=failure.kind.value)
        self._set_status("restarting")
        await self._record(event=self._event("restarting", {"reason": reason,
                                                             "restarts": self.s.restarts}))
        await self._sleep_unless_terminated(verdict.backoff_s)

    async def _cool_down(self) -> None:
        await self._sleep_unless_terminated(self.inp.config.breaker.cooldown_s)
        if not self.terminate_req:
            self.s.circuit = "half_open"
            self.s.restarts += 1
            self._set_status("restarting")
            await self._record(event=self._event("circuit_half_open", {}))

    async def _sleep_unless_terminated(self, seconds: float) -> None:
        try:
            await workflow.wait_condition(lambda: self.terminate_req is not None, timeout=seconds)
        except builtins.TimeoutError:
            pass

    async def _stop_agent(self) -> None:
        try:
            await self._on_machine(
                "stop_agent",
                StopAgentInput(session_id=self.inp.session_id, reason=self.terminate_req.reason),
                schedule_to_start_s=15, retry_policy=RetryPolicy(maximum_attempts=3),
                summary="stop terminal",
            )
        except ActivityError as err:
            # the machine is unreachable: its worker kills unsupervised terminals by itself
            failure = failures.failure_of(err, starting=False)
            self.last_error = f"stop not confirmed: {failure.reason}"

    async def _finish(self) -> None:
        if self.s.job is not None:
            await self._end_job("cancelled", error="session terminated")
        if self.start_error is None or self.terminate_req is not None:
            self._set_status("terminated")
            await self._record(event=self._event("terminated", {
                "reason": self.terminate_req.reason if self.terminate_req else self.last_error}))
        self.terminated = True
        await workflow.wait_condition(workflow.all_handlers_finished)

    # --- continue-as-new ------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            and self.s.job is None
            and self.s.status == "ready"
            and not self.events
            and workflow.all_handlers_finished()
        )

    async def _continue_as_new(self) -> SessionView:
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.inp.model_copy(update={"state": self.s}))

    # --- helpers --------------------------------------------------------------------------

    def _check_alive(self) -> None:
        admission.check_alive(self.s, terminating=self.terminate_req is not None)

    def _check_accepts_prompt(self) -> None:
        admission.check_accepts_prompt(self.s, terminating=self.terminate_req is not None)

    def _until_job_deadline(self) -> timedelta | None:
        job = self.s.job
        if job is None:
            return None
        left = job.started_at + timedelta(seconds=job.timeout_s) - workflow.now()
        return max(left, timedelta(milliseconds=1))

    def _until_input_deadline(self) -> timedelta | None:
        pending = self.s.pending
        if pending is None or pending.deadline is None:
            return None
        return max(pending.deadline - workflow.now(), timedelta(milliseconds=1))

    def _remember(self, command_id: str, result: dict) -> None:
        remember(self.s.applied, command_id, result)

    def _set_status(self, status: SessionStatus, *, search_attribute: bool = True) -> None:
        """Change status: search attribute now (unless told it will be published later),
        Postgres row with the next `_record`."""
        if status != self.s.status:
            if self.inp.pool_workflow_id and (
                status in ("failed", "terminated")
                or (status == "ready" and self.s.status in ("starting", "restarting", "failed"))
            ):
                self._pool_notice = status
        self.s.status = status
        self.s.version += 1
        self._row_dirty = True
        if search_attribute:
            self._publish_status()
        workflow.set_current_details(self._details())

    def _publish_status(self) -> None:
        """The SessionStatus search attribute, if it is not the status already."""
        if self.s.status != self._published_status:
            workflow.upsert_search_attributes([SearchAttributePair(SESSION_STATUS, self.s.status)])  # type: ignore[list-item]
            self._published_status = self.s.status

    def _details(self) -> str:
        """What the Temporal UI shows as the session's current details (markdown)."""
        job = self.s.job
        lines = [f"**{self.s.status}** · {self.inp.role} · `{self.inp.agent}` on "
                 f"`{self.inp.machine_id}`", f"working dir: `{self.s.working_dir or '-'}`"]
        if job is not None:
            preview = " ".join(job.prompt_preview.split())[:120]
            lines.append(f"job `{job.job_id}` since {job.started_at:%H:%M:%S} UTC: {preview}")
        if self.s.restarts or self.s.circuit != "closed":
            lines.append(f"restarts: {self.s.restarts} · circuit: {self.s.circuit}")
        if self.last_error and self.s.status in ("restarting", "failed"):
            lines.append(f"last error: {self.last_error[:200]}")
        return "\n\n".join(lines)

    def _count(self, name: str, description: str, **attrs: str) -> None:
        """A counter on the worker's metrics; the SDK does not record it while replaying."""
        workflow.metric_meter().create_counter(name, description).add(1, attrs)

    def _event(self, kind: str, data: dict, job: JobState | None = None) -> EventRecord:
        return EventRecord(office_id=self.inp.office_id, session_id=self.inp.session_id,
                           job_id=job.job_id if job else None, kind=kind, data=data)

    def _session_record(self) -> SessionRecord:
        return SessionRecord(
            session_id=self.inp.session_id, office_id=self.inp.office_id, role=self.inp.role,
            agent=self.inp.agent, machine_id=self.inp.machine_id,
            workflow_id=workflow.info().workflow_id, source=self.inp.source,
            status=self.s.status, version=self.s.version, working_dir=self.s.working_dir,
            current_job_id=self.s.job.job_id if self.s.job else None, restarts=self.s.restarts,
            circuit=self.s.circuit, last_error=self.last_error, rows=self.rows, cols=self.cols,
            pending_input=self.s.pending.public() if self.s.pending else None,
        )

    async def _record(
        self, *, job: JobRecord | None = None, event: EventRecord | None = None
    ) -> None:
        """Write the session row (if it changed), a job row and/or an event in one transaction."""
        session = self._session_record() if self._row_dirty else None
        self._row_dirty = False
        await workflow.execute_local_activity(
            "record",
            RecordBatch(session=session, job=job, event=event),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=DB_RETRY,
            summary="record",
        )
        if session is not None:
            self._recorded_version = max(self._recorded_version, session.version)
        if self._pool_notice is not None and self.inp.pool_workflow_id:
            self._pool_notice = None
            try:
                await workflow.get_external_workflow_handle(self.inp.pool_workflow_id).signal(
                    "session_status",
                    SessionStatusSignal(session=self._view(), error=self.last_error,
                                        error_type=self.start_error.type
                                        if self.start_error is not None else None),
                )
            except Exception as err:  # the pool is gone (office deleted): nothing to tell
                workflow.logger.info("pool %s not told: %s", self.inp.pool_workflow_id, err)

    async def _on_machine(self, activity: str, arg: Any, *, summary: str,
                          result_type: type | None = None, schedule_to_start_s: float = 10,
                          start_to_close_s: float = 30,
                          retry_policy: RetryPolicy = NO_RETRY) -> Any:
        """An activity on the session's machine (its own task queue): short, and not retried
        unless said so, since typing or answering twice is worse than failing once. A machine
        that does not pick it up in `schedule_to_start_s` is offline."""
        return await workflow.execute_activity(
            activity, arg, result_type=result_type,
            task_queue=machine_queue(self.inp.machine_id),
            schedule_to_start_timeout=timedelta(seconds=schedule_to_start_s),
            start_to_close_timeout=timedelta(seconds=start_to_close_s),
            retry_policy=retry_policy, summary=summary)

    async def _send(self, inp: SendInput) -> None:
        await self._on_machine(  # not retried: a prompt is never typed twice
            "send_input", inp, summary="type prompt" if inp.prompt else "send keys")

    def _view(self) -> SessionView:
        return SessionView(
            session_id=self.inp.session_id, office_id=self.inp.office_id, role=self.inp.role,
            agent=self.inp.agent, machine_id=self.inp.machine_id, working_dir=self.s.working_dir,
            status=self.s.status, current_job_id=self.s.job.job_id if self.s.job else None,
            restarts=self.s.restarts, circuit=self.s.circuit, source=self.inp.source,
            workflow_id=workflow.info().workflow_id, last_error=self.last_error,
            pending_input=self.s.pending.public() if self.s.pending else None,
        )

