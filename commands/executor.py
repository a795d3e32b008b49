"""Commands: how an API request or an `agent_commands` row becomes a Temporal action.

Every mutating action is a row in `agent_commands` and exactly one row in
`agent_command_results`. The command id is the Temporal update id (and part of the workflow
id for creations), so running a command again, after any crash, changes nothing twice.

`CommandExecutor.submit` is the API's path (record, run, answer within a timeout);
`CommandExecutor.run` is shared with the intake, which claims rows others inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from db import commands as command_rows, reads
from db.claims import Claimant
from db.writes import write_batch
from semo.errors import (
    CapacityExceeded,
    CommandTimeout,
    Conflict,
    InvalidInput,
    NotFound,
    SemoError,
    Unavailable,
)
from semo.payloads import (
    AnswerBody,
    Empty,
    KeysBody,
    OfficeCreate,
    OfficeUpdate,
    PromptBody,
    SessionCreate,
)
from semo.settings import Settings
from workflows.contracts import (
    AcquireInput,
    AnswerInput,
    BreakerPolicy,
    KeysInput,
    OfficeConfig,
    PoolInput,
    PoolView,
    PromptInput,
    RecordBatch,
    ReleaseInput,
    ResizeInput,
    SessionConfig,
    ShutdownInput,
    TerminateInput,
)
from workflows.failures import ErrorType, application_error
from workflows.pool import OfficePoolWorkflow, pool_workflow_id
from workflows.search_attributes import OFFICE_ID
from workflows.session import SessionWorkflow

log = logging.getLogger(__name__)


#: how long a command may keep running in the background after its caller got a 504
BACKGROUND_LIMIT_S = 600.0

class CommandType(StrEnum):
    """The `type` of an `agent_commands` row (SPEC.md's names)."""

    CREATE_OFFICE = "create_office"
    DELETE_OFFICE = "delete_office"
    UPDATE_OFFICE = "update_office"
    CREATE_SESSION = "create_session"
    SEND_PROMPT = "send_prompt"
    SEND_KEYS = "send_keys"
    ANSWER_INPUT = "answer_input"
    CANCEL = "cancel"
    TERMINATE = "terminate"
    RELEASE_SESSION = "release_session"


@dataclass(frozen=True)
class CommandSpec:
    """What a command type takes, what carries it out, and what its success is."""

    payload: type[BaseModel]
    #: a CommandExecutor method taking the command and its validated payload
    handler: Callable[..., Awaitable[Reply | tuple[int, dict]]]
    #: it names a session (`session_id` must be set)
    needs_session: bool = False
    #: its success is a 201 (it made something)
    creates: bool = False


def command_type(value: str) -> CommandType:
    """The CommandType named `value`, or the 422 that lists the known ones."""
    try:
        return CommandType(value)
    except ValueError:
        raise InvalidInput(f"unknown command type {value!r}; known: "
                           f"{', '.join(t.value for t in CommandType)}") from None


#: ApplicationError types raised by workflows, and what they mean to a caller
WORKFLOW_ERRORS: dict[str, type[SemoError]] = {
    ErrorType.CAPACITY_EXCEEDED: CapacityExceeded,
    ErrorType.SESSION_BUSY: Conflict,
    ErrorType.SESSION_NOT_READY: Conflict,
    ErrorType.DIALOG_OPEN: Conflict,
    ErrorType.INPUT_STALE: Conflict,
    ErrorType.SESSION_GONE: Conflict,
    ErrorType.CIRCUIT_OPEN: Unavailable,
    ErrorType.UNAVAILABLE: Unavailable,
    ErrorType.INVALID_INPUT: InvalidInput,
    ErrorType.INVALID_WORKING_DIR: InvalidInput,
    ErrorType.UNKNOWN_AGENT: InvalidInput,
    ErrorType.SPAWN_FAILED: Unavailable,
}


def _office_settings(p: OfficeCreate) -> dict[str, Any]:
    """The office row's `settings`: its repository and its policy for questions."""
    out: dict[str, Any] = {"repository": p.repository} if p.repository else {}
    if p.permission_rules is not None:
        out["permission_rules"] = p.permission_rules.model_dump()
    if p.input_timeout_s is not None:
        out["input_timeout_s"] = p.input_timeout_s
    return out


@dataclass(frozen=True)
class Command:
    id: uuid.UUID
    office_id: str
    session_id: str | None
    type: str
    payload: dict[str, Any]
    source: str
    created_at: datetime
    created_by: str | None = None
    #: the session's row as the API read it when it recorded the command (not stored)
    session_row: dict | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_row(cls, row: dict) -> Command:
        return cls(id=row["id"], office_id=row["office_id"], session_id=row["session_id"],
                   type=row["type"], payload=row["payload"] or {}, source=row["source"],
                   created_at=row["created_at"], created_by=row.get("created_by"),
                   session_row=row.get("session"))


class Reply(NamedTuple):
    """What a command's handler returns (a plain `(status, body)` tuple will do)."""

    status_code: int
    body: dict[str, Any]
    #: rows the workflow handed back, to be written with the result (see PromptResult.rows)
    rows: RecordBatch | None = None


@dataclass(frozen=True)
class Outcome:
    """A command's answer: an HTTP status and a body (a result, or a problem)."""

    command_id: uuid.UUID
    status_code: int
    body: dict[str, Any]
    #: written in the transaction that records this outcome, so that whoever hears the
    #: answer can read them (a prompt's job and the session it made busy)
    rows: RecordBatch | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status_code < 400


class CommandExecutor:
    def __init__(self, client: Client, pool: AsyncConnectionPool, settings: Settings,
                 claimant: Claimant | None = None) -> None:
        self.client = client
        self.pool = pool
        self.settings = settings
        # unique per process, also across restarts that reuse a pid (containers)
        self.instance = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: the advisory lock that tells other claimants this process is alive (db/claims.py);
        #: rows it claims carry its key, and are claimable again at once when it dies
        self.claimant = claimant or Claimant(settings.effective_database_url(),
                                             name=f"claims-{os.getpid()}")
        self._background: set[asyncio.Task] = set()
        #: the event the next `command_results` NOTIFY of a command id sets (the API's
        #: LiveNotifier.listen); without one, waiting for a result polls
        self.result_listener: Callable[[str], asyncio.Event] | None = None

    # --- the API's path -------------------------------------------------------------------

    async def submit(self, *, office_id: str, type: str, payload: BaseModel | dict,
                     session_id: str | None = None, idempotency_key: str | None = None,
                     created_by: str | None = None, timeout_s: float | None = None) -> Outcome:
        """Record a command, carry it out and return its outcome (404 for a session that
        is not there, in the statement that records the command)."""
        body = (
            payload.model_dump(mode="json", exclude_none=True)
            if isinstance(payload, BaseModel)
            else payload
        )
        timeout_s = self.settings.command_timeout_s if timeout_s is None else timeout_s
        if (
            idempotency_key is None
            or await command_rows.by_idempotency_key(self.pool, office_id, idempotency_key) is None
        ):
            await self.precheck(type, office_id, payload)  # bad input: 4xx, nothing recorded
        cmd, existing = await self._insert(office_id, session_id, type, body, idempotency_key,
                                           created_by)
        if existing:
            return await self.wait_result(cmd.id, timeout_s)
        task = asyncio.create_task(self._run_bounded(cmd))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            raise CommandTimeout(
                f"no result within {timeout_s:g}s; the command is still running: read its result "
                f"at /api/offices/{office_id}/commands/{cmd.id}", command_id=str(cmd.id)) from None

    async def precheck(self, type: str, office_id: str, payload: BaseModel | dict) -> None:
        """Refuse input that can be refused from the database alone, before recording it."""
        if type == CommandType.CREATE_SESSION:
            model = (
                payload
                if isinstance(payload, SessionCreate)
                else SessionCreate.model_validate(payload)
            )
            await self._plan_session(office_id, model)
        elif type == CommandType.CREATE_OFFICE:
            model = (
                payload  # type: ignore[assignment]
                if isinstance(payload, OfficeCreate)
                else OfficeCreate.model_validate(payload)
            )
            await self._check_office_machine(model)  # type: ignore[arg-type]

    async def _insert(self, office_id, session_id, type, body, idempotency_key, created_by):
        """Record the command, claimed by this process: (command, False); or the command
        recorded earlier under the same Idempotency-Key: (command, True). A session's command
        is recorded only if the session is there, in a live office, and brings its row along
        (one round trip for both)."""
        lock = await self.claimant.ensure()
        row = None
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            row = await command_rows.insert_claimed(
                self.pool, office_id=office_id, session_id=session_id, type=type, payload=body,
                idempotency_key=idempotency_key, created_by=created_by, instance=self.instance,
                lock=lock)
        if row is not None:
            return Command.from_row(row), False
        existing = (
            await command_rows.by_idempotency_key(self.pool, office_id, idempotency_key)
            if idempotency_key else None
        )
        if existing is None:  # nothing inserted, and not for a taken key: no such session
            await self._office(office_id)  # an office that is missing says so
            raise NotFound(f"session {session_id!r} not found in office {office_id!r}")
        if existing["type"] != type or existing["session_id"] != session_id:
            raise Conflict(f"Idempotency-Key {idempotency_key!r} was already used for a different "
                           f"request ({existing['type']}); use a new key")
        return Command.from_row(existing), True

    async def wait_result(self, command_id: uuid.UUID, timeout_s: float) -> Outcome:
        """The stored outcome of a command, waiting up to `timeout_s` for it to appear:
        woken by its NOTIFY where there is a listener (read again every second all the
        same, in case the LISTEN connection was away), else polling."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.02
        while True:
            woken = self.result_listener(str(command_id)) if self.result_listener else None
            outcome = await self.stored_outcome(command_id)
            if outcome is not None:
                return outcome
            left = deadline - loop.time()
            if left <= 0:
                raise CommandTimeout(f"command {command_id} has no result yet",
                                     command_id=str(command_id))
            if woken is None:
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 0.5)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(1.0, left))

    async def stored_outcome(self, command_id: uuid.UUID) -> Outcome | None:
        row = await command_rows.stored_result(self.pool, command_id)
        if row is None:
            return None
        status, result, type_ = row
        if status == "ok":
            creates = SPECS[CommandType(type_)].creates  # it ran: a known type
            return Outcome(command_id, 201 if creates else 200, result or {})
        problem = result or {"status": 500, "detail": "failed"}
        return Outcome(command_id, int(problem.get("status", 500)), problem)

    # --- shared with the intake -----------------------------------------------------------

    async def run(self, cmd: Command) -> Outcome:
        """Carry a claimed command out and record its one result."""
        # every log line of this command says which (it runs in a task of its own)
        structlog.contextvars.bind_contextvars(
            command_id=str(cmd.id), command_type=cmd.type, office_id=cmd.office_id,
            **({"session_id": cmd.session_id} if cmd.session_id else {}))
        try:
            reply = Reply(*await self.execute(cmd))
            outcome = Outcome(cmd.id, reply.status_code, to_jsonable_python(reply.body),
                              rows=reply.rows)
        except SemoError as err:
            outcome = Outcome(cmd.id, err.status, err.problem())
        except Exception as err:  # a bug or an outage: answer it, never leave it pending
            log.exception("command %s (%s) failed", cmd.id, cmd.type)
            outcome = Outcome(cmd.id, 503, Unavailable(f"{type(err).__name__}: {err}").problem())
        return await self.record(cmd, outcome)

    async def _run_bounded(self, cmd: Command) -> Outcome:
        try:
            return await asyncio.wait_for(self.run(cmd), BACKGROUND_LIMIT_S)
        except TimeoutError:
            err = Unavailable(f"no result within {BACKGROUND_LIMIT_S:g}s; the action may still "
                              "take effect", command_id=str(cmd.id))
            return await self.record(cmd, Outcome(cmd.id, err.status, err.problem()))

    async def record(self, cmd: Command, outcome: Outcome, status: str | None = None) -> Outcome:
        """Write the result (first writer wins) and return the one that stands."""
        status = status or ("ok" if outcome.ok else "error")
        async with self.pool.connection() as conn:
            # one round trip, one transaction: the rows the command made (if any), its
            # result, its status, and a NOTIFY for whoever waits on it (an idempotent retry)
            async with conn.pipeline(), conn.transaction():
                if outcome.rows is not None:
                    await write_batch(conn, outcome.rows)
                won = await command_rows.record_result(
                    conn, cmd.id, status, outcome.body,
                    None if outcome.ok else outcome.body.get("detail"))
        if won:
            return outcome
        return await self.stored_outcome(cmd.id) or outcome

    async def execute(self, cmd: Command) -> Reply | tuple[int, dict]:
        kind = command_type(cmd.type)
        spec = SPECS[kind]
        try:
            payload = spec.payload.model_validate(cmd.payload)
        except ValidationError as err:
            raise InvalidInput(f"bad payload for {kind}: {_errors(err)}") from None
        if spec.needs_session and not cmd.session_id:
            raise InvalidInput(f"{kind} needs a session_id")
        return await spec.handler(self, cmd, payload)

    # --- offices --------------------------------------------------------------------------

    async def _do_create_office(self, cmd: Command, p: OfficeCreate) -> tuple[int, dict]:
        office_id = cmd.office_id
        if p.office_id and p.office_id != office_id:
            raise InvalidInput(
                f"payload office_id {p.office_id!r} differs from the row's {office_id!r}"
            )
        await self._check_office_machine(p)
        async with self.pool.connection() as conn, conn.transaction():
            try:
                await command_rows.insert_office(
                    conn, office_id, name=p.name, machine_id=p.machine_id,
                    workspace_root=p.workspace_root, warm_roles=p.warm_roles, roles=p.roles,
                    max_sessions=p.max_sessions, idle_timeout_s=p.idle_timeout_s, agent=p.agent,
                    personas={k: v.model_dump() for k, v in p.personas.items()},
                    settings=_office_settings(p), created_by=cmd.created_by, command_id=cmd.id)
            except psycopg.errors.UniqueViolation:
                existing = await reads.get_office(self.pool, office_id)
                if existing is None or existing["command_id"] != str(cmd.id):
                    raise Conflict(f"office {office_id!r} already exists") from None
                # this very command, run again: make sure its pool runs too
            if cmd.created_by:
                await command_rows.add_owner(conn, office_id, cmd.created_by)
        office = await reads.get_office(self.pool, office_id)
        await self.client.start_workflow(
            OfficePoolWorkflow.run, PoolInput(office=self._office_config(office)),
            id=pool_workflow_id(office_id), task_queue=self.settings.server_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes([SearchAttributePair(OFFICE_ID, office_id)]),
            static_summary=f"session pool of office {office_id} ({p.name})")
        machine = await self._registered_machine(p.machine_id)
        cannot = _agent_cannot_run(p.agent, machine)
        # created all the same (the machine may get the program later), but not silently
        return 201, {**office, "warnings": [cannot] if cannot else []}

    def _office_config(self, office: dict) -> OfficeConfig:
        return OfficeConfig(
            office_id=office["office_id"], machine_id=office["machine_id"], agent=office["agent"],
            warm_roles=office["warm_roles"], max_sessions=office["max_sessions"],
            idle_timeout_s=office["idle_timeout_s"], workspace_root=office["workspace_root"],
            personas=office["personas"], session_config=session_config(self.settings),
            repository=(office.get("settings") or {}).get("repository"))

    async def _check_office_machine(self, p: OfficeCreate) -> None:
        machine = await self._registered_machine(p.machine_id)
        if p.agent not in machine["agent_profiles"]:
            raise InvalidInput(_unknown_agent(p.agent, machine))
        if p.workspace_root is not None:
            _check_in_roots(p.workspace_root, machine)

    async def _registered_machine(self, machine_id: str) -> dict:
        """The machine's registration, or a 422: an office or a session on a machine no
        client worker has registered would only ever wait (its warm sessions forever)."""
        machine = await reads.get_machine(self.pool, machine_id)
        if machine is None:
            raise InvalidInput(
                f"machine {machine_id!r} has no client worker registered; start one there with "
                f"`SEMO_MACHINE_ID={machine_id} semo worker client`")
        return machine

    async def _do_delete_office(self, cmd: Command, p: Empty) -> tuple[int, dict]:
        office = await reads.get_office(self.pool, cmd.office_id)
        if office is None:
            raise NotFound(f"office {cmd.office_id!r} not found")
        # a deleted office is deleted again without complaint (a re-run after a crash)
        terminated: set[str] = set()
        try:
            res = await self.client.get_workflow_handle(
                pool_workflow_id(cmd.office_id)
            ).execute_update(
                OfficePoolWorkflow.shutdown, ShutdownInput(command_id=str(cmd.id)), id=str(cmd.id)
            )
            terminated.update(res.terminated_sessions)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND and "already completed" not in str(err):
                raise Unavailable(f"Temporal: {err}") from None
        # anything the pool did not know of (or could not stop) is stopped directly
        sessions = await reads.list_sessions(self.pool, office["office_id"], live_only=True)
        results = await asyncio.gather(*(
            self._terminate(s, f"{cmd.id}:{s['session_id']}", "office deleted") for s in sessions
        ), return_exceptions=True)
        failed = [
            s["session_id"]
            for s, r in zip(sessions, results, strict=False)
            if isinstance(r, Exception)
        ]
        if failed:
            raise Unavailable(f"could not terminate sessions {failed}; retry the delete")
        await command_rows.mark_office_deleted(self.pool, cmd.office_id)
        return 200, {
            "office_id": cmd.office_id,
            "status": "deleted",
            "terminated_sessions": sorted(terminated | {s["session_id"] for s in sessions}),
            "command_id": str(cmd.id),
        }

    async def pool_view(self, office_id: str) -> PoolView | None:
        """The office pool as its workflow sees it (None when it does not answer)."""
        try:
            return await self.client.get_workflow_handle(pool_workflow_id(office_id)).query(
                OfficePoolWorkflow.view, rpc_timeout=timedelta(seconds=5))
        except (RPCError, WorkflowQueryFailedError):
            return None

    # --- sessions -------------------------------------------------------------------------

    async def _plan_session(self, office_id: str, p: SessionCreate) -> tuple[dict, AcquireInput]:
        """What a create_session command asks of the pool, or the reason it cannot be."""
        office = await self._office(office_id)
        if office["roles"] is not None and p.role not in office["roles"]:
            raise InvalidInput(f"role {p.role!r} is not one of office {office_id}'s roles "
                               f"({', '.join(office['roles'])})")
        machine_id = p.machine_id or office["machine_id"]
        agent = p.agent or office["agent"]
        machine = await self._registered_machine(machine_id)
        if agent not in machine["agent_profiles"]:
            raise InvalidInput(_unknown_agent(agent, machine))
        cannot = _agent_cannot_run(agent, machine)
        if cannot:
            raise InvalidInput(cannot)
        if p.working_dir is not None:
            _check_in_roots(p.working_dir, machine)
        if office["workspace_root"] and p.working_dir is None:
            _check_in_roots(office["workspace_root"], machine)
        return office, AcquireInput(command_id="", role=p.role, agent=p.agent,
                                    working_dir=p.working_dir, persona=p.persona,
                                    machine_id=p.machine_id, wait_s=p.wait_s)

    async def _do_create_session(self, cmd: Command, p: SessionCreate) -> tuple[int, dict]:
        office, acquire = await self._plan_session(cmd.office_id, p)
        acquire.command_id = str(cmd.id)
        start = WithStartWorkflowOperation(
            OfficePoolWorkflow.run,
            PoolInput(office=self._office_config(office)),
            id=pool_workflow_id(cmd.office_id),
            task_queue=self.settings.server_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(OFFICE_ID, cmd.office_id)]
            ),
        )
        try:
            res = await self.client.execute_update_with_start_workflow(
                OfficePoolWorkflow.acquire, acquire, start_workflow_operation=start, id=str(cmd.id))
        except WorkflowUpdateFailedError as err:
            raise _workflow_error(err) from None
        body = res.session.model_dump(mode="json", exclude={"last_error", "source"})
        return 201, {**body, "source": res.source, "command_id": str(cmd.id)}

    async def _do_send_prompt(self, cmd: Command, p: PromptBody) -> tuple[int, dict]:
        session = await self._session(cmd)
        if p.job_id:
            owner = await reads.job_command(self.pool, p.job_id)
            if owner is not None and owner != str(cmd.id):  # a re-run of this command is fine
                raise Conflict(f"job_id {p.job_id!r} is already taken")
        res = await self._update(session, SessionWorkflow.prompt, PromptInput(
            command_id=str(cmd.id), prompt=p.prompt, job_id=p.job_id, timeout_s=p.timeout_s,
            notify_workflow_id=p.notify_workflow_id), str(cmd.id))
        rows = res.rows
        if rows is not None and rows.job is not None:  # the workflow leaves the prompt to us
            rows = rows.model_copy(update={"job": rows.job.model_copy(update={"prompt": p.prompt})})
        return Reply(200, res.model_dump(mode="json", exclude={"rows"}), rows)  # type: ignore[return-value]

    async def _do_send_keys(self, cmd: Command, p: KeysBody) -> tuple[int, dict]:
        session = await self._session(cmd)
        res = await self._update(session, SessionWorkflow.keys,
                                 KeysInput(command_id=str(cmd.id), keys=p.keys, text=p.text),
                                 str(cmd.id))
        return 200, res.model_dump(mode="json")

    async def _do_answer_input(self, cmd: Command, p: AnswerBody) -> tuple[int, dict]:
        session = await self._session(cmd)
        res = await self._update(session, SessionWorkflow.answer, AnswerInput(
            command_id=str(cmd.id), input_id=p.input_id, decision=p.decision, option=p.option,
            text=p.text, remember=p.remember), str(cmd.id))
        return 200, {**res.model_dump(mode="json"), "input_id": p.input_id}

    async def _do_update_office(self, cmd: Command, p: OfficeUpdate) -> tuple[int, dict]:
        """Rules and timeouts live in the office row: the client workers read them for each
        request, so a change applies to running sessions at once."""
        changes: dict[str, Any] = {}
        if "permission_rules" in p.model_fields_set:
            changes["permission_rules"] = p.permission_rules.model_dump() \
                if p.permission_rules else None
        if "input_timeout_s" in p.model_fields_set:
            changes["input_timeout_s"] = p.input_timeout_s
        if not await command_rows.update_office(self.pool, cmd.office_id, p.name, changes):
            raise NotFound(f"office {cmd.office_id!r} not found")
        return 200, await reads.get_office(self.pool, cmd.office_id)

    async def _do_cancel(self, cmd: Command, p: Empty) -> tuple[int, dict]:
        session = await self._session(cmd)
        res = await self._update(session, SessionWorkflow.cancel,
                                 KeysInput(command_id=str(cmd.id), keys=["ctrl+c"]), str(cmd.id))
        return 200, res.model_dump(mode="json")

    async def _do_terminate(self, cmd: Command, p: Empty) -> tuple[int, dict]:
        session = await self._session(cmd)
        await self._terminate(session, str(cmd.id), "terminated by request")
        return 200, {"session_id": session["session_id"], "status": "terminated",
                     "command_id": str(cmd.id)}

    async def _do_release_session(self, cmd: Command, p: Empty) -> tuple[int, dict]:
        session = await self._session(cmd)
        if session["status"] in ("busy", "waiting_input"):
            raise Conflict(f"session {session['session_id']} is {session['status']} with job "
                           f"{session['current_job_id']}; cancel it or wait before releasing")
        handle = self.client.get_workflow_handle(pool_workflow_id(cmd.office_id))
        try:
            res = await handle.execute_update(OfficePoolWorkflow.release,
                                              ReleaseInput(command_id=str(cmd.id),
                                                           session_id=session["session_id"]),
                                              id=str(cmd.id))
        except WorkflowUpdateFailedError as err:
            raise _workflow_error(err) from None
        return 200, {"session_id": session["session_id"], "status": session["status"],
                     "pool_state": res.state, "command_id": str(cmd.id)}

    async def _terminate(self, session: dict, update_id: str, reason: str) -> None:
        if session["status"] == "terminated":
            return
        try:
            await self._update(session, SessionWorkflow.terminate,
                               TerminateInput(command_id=update_id, reason=reason), update_id)
        except Conflict:
            pass  # already gone: terminating it is done

    # --- helpers --------------------------------------------------------------------------

    async def _office(self, office_id: str) -> dict:
        office = await reads.get_office(self.pool, office_id)
        if office is None or office["status"] == "deleted":
            raise NotFound(f"office {office_id!r} not found")
        return office

    async def _session(self, cmd: Command) -> dict:
        if cmd.session_row is not None:
            return cmd.session_row
        # one round trip on the hot path; the office is looked up alone only to explain a miss
        session = await reads.get_live_office_session(self.pool, cmd.office_id, cmd.session_id)
        if session is None:
            await self._office(cmd.office_id)
            raise NotFound(f"session {cmd.session_id!r} not found in office {cmd.office_id!r}")
        return session

    async def resize(self, session: dict, rows: int, cols: int) -> None:
        """Resize the session's terminal: an update whose id is its command id, refused as
        any command would be (409 for a session gone, 503 for an open circuit). Not recorded
        in `agent_commands`: a window being dragged sends many, and the last one stands."""
        command_id = f"resize-{uuid.uuid4()}"
        await self._update(session, SessionWorkflow.resize,
                           ResizeInput(command_id=command_id, rows=rows, cols=cols), command_id,
                           rpc_timeout=timedelta(seconds=15))

    async def _update(self, session: dict, update, arg, update_id: str, *,
                      rpc_timeout: timedelta | None = None):
        handle = self.client.get_workflow_handle(session["workflow_id"])
        try:
            return await handle.execute_update(update, arg, id=update_id, rpc_timeout=rpc_timeout)
        except WorkflowUpdateFailedError as err:
            raise _workflow_error(err) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable("Temporal did not answer the update in time") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND or "already completed" in str(err):
                raise Conflict(f"session {session['session_id']} is {session['status']}; "
                               "it no longer takes commands") from None
            raise Unavailable(f"Temporal: {err}") from None


#: every command type (SPECS is filled here, after the handlers it names are defined)
SPECS: dict[CommandType, CommandSpec] = {
    CommandType.CREATE_OFFICE: CommandSpec(OfficeCreate, CommandExecutor._do_create_office,
                                           creates=True),
    CommandType.DELETE_OFFICE: CommandSpec(Empty, CommandExecutor._do_delete_office),
    CommandType.UPDATE_OFFICE: CommandSpec(OfficeUpdate, CommandExecutor._do_update_office),
    CommandType.CREATE_SESSION: CommandSpec(SessionCreate, CommandExecutor._do_create_session,
                                            creates=True),
    CommandType.SEND_PROMPT: CommandSpec(PromptBody, CommandExecutor._do_send_prompt,
                                         needs_session=True),
    CommandType.SEND_KEYS: CommandSpec(KeysBody, CommandExecutor._do_send_keys,
                                       needs_session=True),
    CommandType.ANSWER_INPUT: CommandSpec(AnswerBody, CommandExecutor._do_answer_input,
                                          needs_session=True),
    CommandType.CANCEL: CommandSpec(Empty, CommandExecutor._do_cancel, needs_session=True),
    CommandType.TERMINATE: CommandSpec(Empty, CommandExecutor._do_terminate,
                                       needs_session=True),
    CommandType.RELEASE_SESSION: CommandSpec(Empty, CommandExecutor._do_release_session,
                                             needs_session=True),
}


def session_config(settings: Settings) -> SessionConfig:
    return SessionConfig(
        default_job_timeout_s=settings.default_job_timeout_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        start_timeout_s=settings.start_timeout_s,
        breaker=BreakerPolicy(max_failures=settings.breaker_max_failures,
                              window_s=settings.breaker_window_s,
                              cooldown_s=settings.breaker_cooldown_s),
    )


def _workflow_error(err: WorkflowUpdateFailedError) -> SemoError:
    cause = application_error(err.cause)
    if cause is not None:
        return WORKFLOW_ERRORS.get(cause.type or "", Unavailable)(cause.message)
    return Unavailable(str(err.cause or err))


def _errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())


def _unknown_agent(agent: str, machine: dict) -> str:
    return (
        f"agent {agent!r} is not a profile on machine {machine['id']} (configured there: "
        f"{', '.join(machine['agent_profiles'])}); add it to SEMO_AGENT_PROFILES on that machine"
    )


def _agent_cannot_run(agent: str, machine: dict) -> str | None:
    """Why the machine's client worker could not start this agent profile, as it found its
    program when it registered (`client_machines.agent_versions`); None when it can (or the
    worker did not say)."""
    found = (machine.get("agent_versions") or {}).get(agent) or {}
    if found.get("runs") is not False:
        return None
    fix = "install it there and restart that machine's client worker"
    if agent.startswith("claude"):
        fix = ("install Claude Code there (`npm install -g @anthropic-ai/claude-code`) and "
               "restart that machine's client worker")
    return (f"agent {agent!r} cannot run on machine {machine['id']!r}: "
            f"{found.get('note') or 'its program was not found'}. To fix: {fix}, or point the "
            f"profile at the program with SEMO_AGENT_PROFILES on that machine, or use another "
            f"agent (configured there: {', '.join(machine['agent_profiles'])})")


def _check_in_roots(path: str, machine: dict) -> None:
    """Refuse early what the client would refuse anyway (it also resolves symlinks)."""
    roots = [r.rstrip("/") for r in machine["workspace_roots"]]
    if not roots:
        raise InvalidInput(f"machine {machine['id']} has no workspace roots")
    if "\x00" in path:
        raise InvalidInput("working_dir contains a NUL byte")
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(roots[0], path))
    if len(full.encode()) > 4095 or any(len(part.encode()) > 255 for part in full.split("/")):
        raise InvalidInput("working_dir is too long: a folder name over 255 bytes or a path "
                           "over 4095 bytes")
    if not any(full == r or full.startswith(r + "/") for r in roots):
        raise InvalidInput(
            f"working_dir {path!r} is outside machine {machine['id']}'s workspace roots "
            f"({', '.join(roots)})")


def utcnow() -> datetime:
    return datetime.now(UTC)
