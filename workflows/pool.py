"""OfficePoolWorkflow: the seed's SessionPoolManager as an entity workflow, `pool/{office_id}`.

It keeps one warm session per role in `warm_roles` (replacing one that fails), hands an idle
session of the asked role over at once (`warm`), or starts a cold one while the office has
fewer than `max_sessions` live sessions, warm or cold, on any machine. At the cap the answer
is `CapacityExceeded` (or, with `wait_s`, a wait for room). Released cold sessions idle
longer than `idle_timeout_s` are terminated by a durable timer.

The cap holds under any concurrency: every acquire runs in this one workflow and reserves
its slot (an entry) before its first await. Sessions are child workflows that outlive the
pool's runs (ParentClosePolicy.ABANDON) and report back with a `session_status` signal.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import session_id_for, session_workflow_id
    from workflows.applied import remember
    from workflows.contracts import (
        AcquireInput,
        AcquireResult,
        PoolEntry,
        PoolInput,
        PoolSessionView,
        PoolState,
        PoolView,
        ReleaseInput,
        SessionInput,
        SessionStatusSignal,
        ShutdownInput,
        ShutdownResult,
        TerminateInput,
    )
    from workflows.failures import ErrorType
    from workflows.search_attributes import MACHINE_ID, OFFICE_ID, ROLE, SESSION_STATUS
    from workflows.session import SessionWorkflow

#: consecutive failures of a warm role after which the pool stops replacing it
WARM_GIVE_UP = 3
SHUTDOWN_WAIT = timedelta(seconds=60)



def pool_workflow_id(office_id: str) -> str:
    return f"pool/{office_id}"


@workflow.defn(name="OfficePoolWorkflow")
class OfficePoolWorkflow:
    @workflow.init
    def __init__(self, inp: PoolInput) -> None:
        self.office = inp.office
        self.s: PoolState = inp.state or PoolState()
        self.warm_failures: dict[str, int] = {}
        #: sessions asked to terminate (by reaping, replacement or shutdown)
        self.terminated: list[str] = []
        #: terminate signals not sent yet: (session id, reason)
        self.outbox: list[tuple[str, str]] = []
        #: an idle deadline changed: the main loop must recompute its timer
        self.replan = False

    @workflow.run
    async def run(self, inp: PoolInput) -> ShutdownResult:
        while True:
            await self._send_terminations()
            if self.s.closing:
                break
            for role in self._missing_warm_roles():
                entry = self._reserve(role, warm=True, seed=str(workflow.uuid4()))
                await self._start_child(entry, None)
            self.replan = False
            try:
                await workflow.wait_condition(
                    lambda: self.s.closing or bool(self.outbox) or bool(self._missing_warm_roles())
                    or self.replan or self._should_continue(),
                    timeout=self._until_next_reap(),
                )
            except TimeoutError:
                self._reap_idle()
                continue
            if self._should_continue() and not self.s.closing and not self.outbox:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(PoolInput(office=self.office, state=self.s))
        try:
            await workflow.wait_condition(lambda: not self.s.entries, timeout=SHUTDOWN_WAIT)
        except TimeoutError:
            workflow.logger.warning("sessions still live at shutdown: %s", list(self.s.entries))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ShutdownResult(terminated_sessions=sorted(self.terminated))

    # --- queries, signals, updates --------------------------------------------------------

    @workflow.query
    def view(self) -> PoolView:
        entries = list(self.s.entries.values())
        return PoolView(
            office_id=self.office.office_id, capacity=self.office.max_sessions,
            in_use=sum(1 for e in entries if e.state == "in_use"), live=len(entries),
            closing=self.s.closing, sessions=[_entry_view(e) for e in entries])

    @workflow.signal
    def session_status(self, sig: SessionStatusSignal) -> None:
        view = sig.session
        entry = self.s.entries.get(view.session_id)
        if entry is None:
            return
        entry.view = view
        if view.status == "ready" and entry.state in ("starting", "failed"):
            self.warm_failures.pop(entry.role, None)
            entry.state = "in_use" if entry.acquired_by else "idle"
            entry.idle_since = None if entry.acquired_by else workflow.now()
        elif view.status == "terminated":
            self.s.entries.pop(view.session_id, None)
        elif view.status == "failed":
            entry.error = sig.error or "session failed"
            entry.error_type = sig.error_type
            if entry.warm:
                # a failed warm session makes room for a fresh one
                self.warm_failures[entry.role] = self.warm_failures.get(entry.role, 0) + 1
                self._drop(entry, "replaced after failure")
            elif entry.state == "starting":
                self._drop(entry, "start failed")
            # a cold session in use that failed stays the user's to look at and delete

    @workflow.update
    async def acquire(self, inp: AcquireInput) -> AcquireResult:
        if inp.command_id in self.s.applied:
            return AcquireResult.model_validate(self.s.applied[inp.command_id])
        entry = self._take_idle(inp)
        if entry is None and not self._has_room():
            if not inp.wait_s:
                raise self._at_capacity()
            try:
                await workflow.wait_condition(
                    lambda: self.s.closing or self._has_room() or self._idle_for(inp) is not None,
                    timeout=timedelta(seconds=inp.wait_s))
            except TimeoutError:
                raise self._at_capacity() from None
            self._refuse_if_closing()
            entry = self._take_idle(inp)
        if entry is not None:
            return self._remember(inp.command_id, AcquireResult(session=entry.view, source="warm"))
        entry = self._reserve(inp.role, warm=False, seed=inp.command_id)
        entry.acquired_by = inp.command_id
        await self._start_child(entry, inp)
        await workflow.wait_condition(lambda: entry.state != "starting")
        if entry.state == "failed" or entry.view is None:
            raise ApplicationError(entry.error or "the session failed to start",
                                   type=entry.error_type or _start_error_type(entry.error))
        return self._remember(inp.command_id, AcquireResult(session=entry.view, source="cold"))

    @acquire.validator
    def _validate_acquire(self, inp: AcquireInput) -> None:
        if inp.command_id not in self.s.applied:
            self._refuse_if_closing()

    @workflow.update
    async def release(self, inp: ReleaseInput) -> PoolSessionView:
        entry = self.s.entries.get(inp.session_id)
        if entry is None:
            raise ApplicationError(f"session {inp.session_id} is not live in this office's pool",
                                   type=ErrorType.SESSION_GONE)
        if entry.state == "in_use":
            entry.state = "idle"
            entry.idle_since = workflow.now()
            entry.acquired_by = None
            self.replan = True
        return _entry_view(entry)

    @workflow.update
    async def shutdown(self, inp: ShutdownInput) -> ShutdownResult:
        self.s.closing = True
        for entry in list(self.s.entries.values()):
            self._ask_terminate(entry.session_id, inp.reason)
        try:
            await workflow.wait_condition(lambda: not self.s.entries, timeout=SHUTDOWN_WAIT)
        except TimeoutError:
            pass
        return ShutdownResult(terminated_sessions=sorted(self.terminated))

    # --- the pool's work ------------------------------------------------------------------

    def _missing_warm_roles(self) -> list[str]:
        if self.s.closing:
            return []
        missing = []
        for role in dict.fromkeys(self.office.warm_roles):
            if self.warm_failures.get(role, 0) >= WARM_GIVE_UP:
                continue
            have = sum(1 for e in self.s.entries.values() if e.warm and e.role == role)
            missing += [role] * (self.office.warm_roles.count(role) - have)
        return missing[: max(self.office.max_sessions - len(self.s.entries), 0)]

    def _reserve(self, role: str, *, warm: bool, seed: str) -> PoolEntry:
        entry = PoolEntry(session_id=session_id_for(role, seed), role=role, warm=warm)
        self.s.entries[entry.session_id] = entry
        return entry

    async def _start_child(self, entry: PoolEntry, inp: AcquireInput | None) -> None:
        office = self.office
        persona = (inp.persona if inp else None) or office.personas.get(entry.role)
        working_dir = inp.working_dir if inp else None
        if working_dir is None and office.workspace_root:
            working_dir = f"{office.workspace_root.rstrip('/')}/{entry.session_id}"
        session = SessionInput(
            office_id=office.office_id, session_id=entry.session_id, role=entry.role,
            agent=(inp.agent if inp else None) or office.agent,
            machine_id=(inp.machine_id if inp else None) or office.machine_id,
            working_dir=working_dir, persona=persona, source="warm" if entry.warm else "cold",
            config=office.session_config, pool_workflow_id=workflow.info().workflow_id,
            repository=office.repository,
        )
        try:
            await workflow.start_child_workflow(
                SessionWorkflow.run, session,
                id=session_workflow_id(office.office_id, entry.session_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(OFFICE_ID, office.office_id),
                    SearchAttributePair(ROLE, entry.role),
                    SearchAttributePair(MACHINE_ID, session.machine_id),
                    SearchAttributePair(SESSION_STATUS, "starting")]),
                static_summary=f"{entry.role} {session.agent} session "
                               f"({'warm' if entry.warm else 'cold'}) on {session.machine_id}",
                memo={"persona": persona.model_dump() if persona else None,
                      "working_dir": working_dir, "agent": session.agent},
            )
        except Exception as err:  # the id was taken before: answer it, never wedge the pool
            entry.state = "failed"
            entry.error = f"could not start the session: {err}"
            self.s.entries.pop(entry.session_id, None)
            if entry.warm:
                self.warm_failures[entry.role] = self.warm_failures.get(entry.role, 0) + 1

    def _take_idle(self, inp: AcquireInput) -> PoolEntry | None:
        entry = self._idle_for(inp)
        if entry is not None:
            entry.state = "in_use"
            entry.idle_since = None
            entry.acquired_by = inp.command_id
        return entry

    def _idle_for(self, inp: AcquireInput) -> PoolEntry | None:
        """An idle session that fits: same role, and nothing asked that it was not made with."""
        if inp.working_dir or inp.persona or (inp.agent and inp.agent != self.office.agent) \
                or (inp.machine_id and inp.machine_id != self.office.machine_id):
            return None
        idle = [e for e in self.s.entries.values()
                if e.role == inp.role and e.state == "idle" and e.view is not None]
        # warm ones first, so that idle cold ones run out their timeout and free capacity
        idle.sort(key=lambda e: (not e.warm, e.idle_since))
        return idle[0] if idle else None

    def _has_room(self) -> bool:
        return len(self.s.entries) < self.office.max_sessions

    def _refuse_if_closing(self) -> None:
        if self.s.closing:
            raise ApplicationError("the office is being deleted", type=ErrorType.SESSION_GONE)

    def _at_capacity(self) -> ApplicationError:
        return ApplicationError(
            f"office {self.office.office_id} is at its cap of {self.office.max_sessions} live "
            "sessions; release or delete one, or retry with wait_s to wait for room",
            type=ErrorType.CAPACITY_EXCEEDED)

    def _until_next_reap(self) -> timedelta | None:
        deadlines = [e.idle_since + timedelta(seconds=self.office.idle_timeout_s)
                     for e in self.s.entries.values()
                     if not e.warm and e.state == "idle" and e.idle_since is not None]
        if not deadlines:
            return None
        return max(min(deadlines) - workflow.now(), timedelta(milliseconds=1))

    def _reap_idle(self) -> None:
        limit = timedelta(seconds=self.office.idle_timeout_s)
        now = workflow.now()
        for entry in list(self.s.entries.values()):
            if (not entry.warm and entry.state == "idle" and entry.idle_since is not None
                    and now - entry.idle_since >= limit):
                self._drop(entry, f"idle for {self.office.idle_timeout_s:g}s")

    def _drop(self, entry: PoolEntry, reason: str) -> None:
        """Stop counting a session and ask it to terminate."""
        entry.state = "failed" if entry.state == "starting" else entry.state
        self.s.entries.pop(entry.session_id, None)
        self._ask_terminate(entry.session_id, reason)

    def _ask_terminate(self, session_id: str, reason: str) -> None:
        if session_id not in self.terminated:
            self.terminated.append(session_id)
            self.outbox.append((session_id, reason))

    async def _send_terminations(self) -> None:
        while self.outbox:
            session_id, reason = self.outbox.pop(0)
            handle = workflow.get_external_workflow_handle(
                session_workflow_id(self.office.office_id, session_id))
            try:
                await handle.signal("request_terminate",
                                    TerminateInput(command_id=f"pool:{session_id}", reason=reason))
            except Exception as err:  # already ended
                workflow.logger.info("session %s not signalled: %s", session_id, err)
                if self.s.closing:
                    self.s.entries.pop(session_id, None)

    def _should_continue(self) -> bool:
        return (workflow.info().is_continue_as_new_suggested()
                and workflow.all_handlers_finished()
                and all(e.state != "starting" for e in self.s.entries.values()))

    def _remember(self, command_id: str, result: AcquireResult) -> AcquireResult:
        remember(self.s.applied, command_id, result.model_dump(mode="json"))
        return result


def _entry_view(e: PoolEntry) -> PoolSessionView:
    return PoolSessionView(session_id=e.session_id, role=e.role, warm=e.warm, state=e.state,
                           status=e.view.status if e.view else None, idle_since=e.idle_since)


def _start_error_type(error: str | None) -> str:
    """For a session that did not say its start error's type (one started before sessions
    sent `error_type`, or a child that could not be started): read from its message."""
    text = (error or "").lower()
    if "workspace roots" in text or "working_dir" in text:
        return ErrorType.INVALID_WORKING_DIR
    if "profile" in text:
        return ErrorType.UNKNOWN_AGENT
    return ErrorType.SPAWN_FAILED
