"""The messages that cross workflow, activity and process boundaries.

One input and one result type per workflow, update and activity (so a field can be added
without breaking running workflows). Pydantic models, carried by `pydantic_data_converter`
on every client, worker and replayer. No I/O here: this module is imported by workflows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

# the limits live in workflows/limits.py; importable from here as before
from workflows.limits import (  # noqa: F401
    MAX_ANSWER_TEXT,
    MAX_COLS,
    MAX_KEYS,
    MAX_PROMPT_BYTES,
    MAX_ROWS,
    MIN_COLS,
    MIN_ROWS,
)

SessionStatus = Literal[
    "starting", "ready", "busy", "waiting_input", "restarting", "failed", "terminated"
]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "timed_out"]
CircuitState = Literal["closed", "open", "half_open"]


NAMED_KEYS: dict[str, str] = {
    "enter": "\r",
    "ctrl+c": "\x03",
    "ctrl+d": "\x04",
    "ctrl+z": "\x1a",
    "ctrl+l": "\x0c",
    "ctrl+u": "\x15",
    "esc": "\x1b",
    "tab": "\t",
    "shift+tab": "\x1b[Z",
    "backspace": "\x7f",
    "up": "\x1b[A",
    "down": "\x1b[B",
    "right": "\x1b[C",
    "left": "\x1b[D",
    "home": "\x1b[H",
    "end": "\x1b[F",
    "pageup": "\x1b[5~",
    "pagedown": "\x1b[6~",
    "space": " ",
    #: NUL, what Ctrl+Space and Ctrl+@ type (a `text` cannot carry it: jsonb has no \u0000)
    "ctrl+space": "\x00",
    "y": "y",
    "n": "n",
    **{str(i): str(i) for i in range(10)},
}


class Persona(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=4000)
    scope_patterns: list[str] = Field(default_factory=list, max_length=200)
    core_skills: list[str] = Field(default_factory=list, max_length=200)
    instructions: str | None = Field(default=None, max_length=20000)


class BreakerPolicy(BaseModel):
    """Restarts as a circuit breaker: `max_failures` within `window_s` opens the circuit."""

    max_failures: int = 3
    window_s: float = 600.0
    cooldown_s: float = 300.0


class SessionConfig(BaseModel):
    default_job_timeout_s: float = 3600.0
    heartbeat_timeout_s: float = 20.0
    #: how long the machine's queue may go unserved before the start counts as failed
    start_timeout_s: float = 120.0
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)


class JobState(BaseModel):
    job_id: str
    command_id: str
    prompt_preview: str
    started_at: datetime
    timeout_s: float
    notify_workflow_id: str | None = None


InputKind = Literal["permission", "question", "plan", "dialog"]


class PendingInput(BaseModel):
    """What the session waits for a person to answer (`pending_input` on the session)."""

    input_id: str
    kind: InputKind
    tool: str | None = None
    input: Any = None
    question: str | None = None
    options: list[str] | None = None
    since: datetime
    #: answered `deny` if still pending then (the office's input_timeout_s)
    deadline: datetime | None = None

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"deadline"}, exclude_none=True)


class SessionState(BaseModel):
    """Everything a run carries into the next one (continue-as-new)."""

    status: SessionStatus = "starting"
    working_dir: str | None = None
    generation: int = 0
    restarts: int = 0
    circuit: CircuitState = "closed"
    failures: list[datetime] = Field(default_factory=list)
    job: JobState | None = None
    version: int = 0
    #: command id -> the result it produced; update-id dedup is per run, this is across runs
    applied: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: the question the agent waits on, held here so no restart of the API or a worker
    #: loses it (cleared when answered, when its job ends, when the agent restarts)
    pending: PendingInput | None = None


class SessionInput(BaseModel):
    office_id: str
    session_id: str
    role: str
    agent: str
    machine_id: str
    working_dir: str | None = None
    persona: Persona | None = None
    source: Literal["warm", "cold"] = "cold"
    config: SessionConfig = Field(default_factory=SessionConfig)
    state: SessionState | None = None
    #: the office pool workflow to tell when the session is ready, failed or terminated
    pool_workflow_id: str | None = None
    #: the office's git repository on the machine: the session works in a worktree of it
    repository: str | None = None


# --- updates -------------------------------------------------------------------------------


class SessionView(BaseModel):
    session_id: str
    office_id: str
    role: str
    agent: str
    machine_id: str
    working_dir: str | None
    status: SessionStatus
    current_job_id: str | None
    restarts: int
    circuit: CircuitState
    source: str
    workflow_id: str
    last_error: str | None = None
    pending_input: dict[str, Any] | None = None


class WaitReadyInput(BaseModel):
    command_id: str


class PromptInput(BaseModel):
    command_id: str
    prompt: str
    job_id: str | None = None
    timeout_s: float | None = None
    notify_workflow_id: str | None = None


class PromptResult(BaseModel):
    command_id: str
    job_id: str
    status: Literal["sent"] = "sent"
    #: the job's and the session's rows as the prompt left them, for whoever answers the
    #: command to write with its result, before the caller hears back (not in the HTTP
    #: answer; absent when a command is answered again from memory). The job's prompt is
    #: left out: the answerer has it.
    rows: RecordBatch | None = None


class KeysInput(BaseModel):
    command_id: str
    keys: list[str] = Field(default_factory=list)
    text: str | None = None


class AnswerInput(BaseModel):
    """POST .../answer: the answer to the session's pending input `input_id`."""

    command_id: str
    input_id: str
    decision: Literal["allow", "deny"] | None = None
    option: str | None = None
    text: str | None = None
    remember: bool = False


class CommandAck(BaseModel):
    command_id: str
    session_id: str
    status: str
    job_id: str | None = None




class ResizeInput(BaseModel):
    """An attached terminal's size; the session's PTY takes it (TIOCSWINSZ, then SIGWINCH)."""

    command_id: str
    rows: int
    cols: int


class ResizeResult(BaseModel):
    session_id: str
    rows: int
    cols: int


class TerminateInput(BaseModel):
    command_id: str
    reason: str = "requested"


# --- signals -------------------------------------------------------------------------------


class MonitorSignal(BaseModel):
    """An event the client worker saw in the session's output or hooks."""

    #: agent_version: the agent's CLI is outside the versions semo supports (a warning);
    #: permission_auto: an office rule answered a permission request on the machine
    kind: Literal["completion", "error", "waiting_input", "stall", "commit", "turn_end",
                  "input_answered", "agent_version", "permission_auto"]
    generation: int
    job_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    offset: int = 0


# --- activities: client machine ------------------------------------------------------------


class StartAgentInput(BaseModel):
    office_id: str
    session_id: str
    workflow_id: str
    agent: str
    working_dir: str | None
    generation: int
    persona: Persona | None = None
    role: str = ""
    #: a git repository on the machine: `working_dir` becomes a worktree of it
    repository: str | None = None


class StartAgentResult(BaseModel):
    working_dir: str
    pid: int
    rows: int
    cols: int


class ReattachAgentInput(BaseModel):
    """A session whose client worker was lost asks the machine for the same agent (the
    keeper kept it, and a new worker adopted it): `job_id` is the job still running."""

    session_id: str
    generation: int
    workflow_id: str
    job_id: str | None = None


class ReattachAgentResult(BaseModel):
    #: False: the agent of that generation is gone; the session restarts
    attached: bool
    pid: int | None = None


class WatchAgentInput(BaseModel):
    session_id: str
    generation: int


class WatchAgentResult(BaseModel):
    """Why the agent's process is gone."""

    exit_code: int | None
    signal: int | None
    #: drained: the client worker is shutting down gracefully and stopped the agent
    reason: Literal["exited", "terminated", "lost", "drained"]


class SendInput(BaseModel):
    session_id: str
    generation: int
    job_id: str | None = None
    #: a prompt to type and submit
    prompt: str | None = None
    #: named keys (see NAMED_KEYS) sent in order, then literal text
    keys: list[str] = Field(default_factory=list)
    text: str | None = None


class SendAnswer(BaseModel):
    """An answer for the agent on the client machine (its hook, else its dialog)."""

    session_id: str
    generation: int
    input_id: str
    kind: InputKind
    decision: Literal["allow", "deny"] | None = None
    option: str | None = None
    text: str | None = None
    remember: bool = False


class StopAgentInput(BaseModel):
    session_id: str
    reason: str = "terminated"


class ResizeTerminalInput(BaseModel):
    session_id: str
    generation: int
    rows: int
    cols: int


# --- activities: server (Postgres) --------------------------------------------------------


class SessionRecord(BaseModel):
    """A write of the session row; `version` orders writes from the workflow."""

    session_id: str
    office_id: str
    role: str
    agent: str
    machine_id: str
    workflow_id: str
    source: str
    status: SessionStatus
    version: int
    working_dir: str | None = None
    current_job_id: str | None = None
    restarts: int = 0
    circuit: CircuitState = "closed"
    last_error: str | None = None
    rows: int | None = None
    cols: int | None = None
    pending_input: dict[str, Any] | None = None


class JobRecord(BaseModel):
    job_id: str
    office_id: str
    session_id: str
    status: JobStatus
    prompt: str | None = None
    timeout_s: float | None = None
    command_id: str | None = None
    completion: dict[str, Any] | None = None
    error: str | None = None
    #: a job event to append alongside (kind, data)
    event_kind: str | None = None
    event_data: dict[str, Any] = Field(default_factory=dict)
    final: bool = False


class EventRecord(BaseModel):
    office_id: str
    session_id: str
    job_id: str | None
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)


class JobNotice(BaseModel):
    """Signalled to a job scheduler workflow when a job ends."""

    job_id: str
    session_id: str
    office_id: str
    status: JobStatus
    completion: dict[str, Any] | None = None
    error: str | None = None


class RecordBatch(BaseModel):
    """One transaction of writes from a session workflow."""

    session: SessionRecord | None = None
    job: JobRecord | None = None
    event: EventRecord | None = None


# --- the office pool ---------------------------------------------------------------------


class OfficeConfig(BaseModel):
    office_id: str
    machine_id: str
    agent: str
    warm_roles: list[str] = Field(default_factory=list)
    max_sessions: int = 6
    idle_timeout_s: float = 600.0
    workspace_root: str | None = None
    personas: dict[str, Persona] = Field(default_factory=dict)
    session_config: SessionConfig = Field(default_factory=SessionConfig)
    #: a git repository on the office's machine (offices.settings.repository)
    repository: str | None = None


class PoolEntry(BaseModel):
    session_id: str
    role: str
    warm: bool
    #: starting -> idle <-> in_use; gone once the session reported it ended
    state: Literal["starting", "idle", "in_use", "failed"] = "starting"
    idle_since: datetime | None = None
    #: for a cold session: the command that acquired it and waits for it to be ready
    acquired_by: str | None = None
    view: SessionView | None = None
    error: str | None = None
    #: the session's start error type, as it told it (workflows/failures.ErrorType)
    error_type: str | None = None


class PoolState(BaseModel):
    entries: dict[str, PoolEntry] = Field(default_factory=dict)
    applied: dict[str, dict[str, Any]] = Field(default_factory=dict)
    closing: bool = False


class PoolInput(BaseModel):
    office: OfficeConfig
    state: PoolState | None = None


class AcquireInput(BaseModel):
    command_id: str
    role: str
    agent: str | None = None
    working_dir: str | None = None
    persona: Persona | None = None
    machine_id: str | None = None
    wait_s: float | None = None


class AcquireResult(BaseModel):
    session: SessionView
    source: Literal["warm", "cold"]


class ReleaseInput(BaseModel):
    command_id: str
    session_id: str


class PoolSessionView(BaseModel):
    session_id: str
    role: str
    warm: bool
    state: str
    status: str | None = None
    idle_since: datetime | None = None


class PoolView(BaseModel):
    office_id: str
    capacity: int
    in_use: int
    live: int
    closing: bool
    sessions: list[PoolSessionView]


class ShutdownInput(BaseModel):
    command_id: str
    reason: str = "office deleted"


class ShutdownResult(BaseModel):
    terminated_sessions: list[str]


class SessionStatusSignal(BaseModel):
    """A session tells its pool what became of it (ready, failed, terminated)."""

    session: SessionView
    error: str | None = None
    #: the ApplicationError type (workflows/failures.ErrorType) of a start that cannot succeed
    error_type: str | None = None


PromptResult.model_rebuild()  # it names RecordBatch, defined below it
