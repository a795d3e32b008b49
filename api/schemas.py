"""Response shapes (SPEC §4). Handlers return these, never table rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from workflows.contracts import CircuitState, JobStatus, Persona, SessionStatus


class PendingInput(BaseModel):
    """A permission, question, plan or dialog the agent waits on (SPEC §8)."""

    input_id: str
    kind: Literal["permission", "question", "plan", "dialog"]
    tool: str | None = None
    input: Any = None
    question: str | None = None
    options: list[str] | None = None
    since: datetime


class PermissionRules(BaseModel):
    allow: list[str] = []
    deny: list[str] = []


class ModelUsage(BaseModel):
    """One model's part of a usage total."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    responses: int
    cost_usd: float | None = Field(description="null: the price table does not name the model")


class Usage(BaseModel):
    """Token usage summed over model responses (Claude Code's transcript), and its cost."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    model: str | None = Field(description="the model, when every response used the same one")
    cost_usd: float | None = Field(
        description="USD at list prices (SEMO_MODEL_PRICES over dated defaults); null when a "
                    "response used a model the price table does not name")
    responses: int = Field(description="model responses counted (subagents' included)")
    models: dict[str, ModelUsage] = Field(description="the totals per model")


class UsageRow(Usage):
    key: str = Field(description="the session id, role or UTC day (YYYY-MM-DD) of this row")


class UsageTable(BaseModel):
    office_id: str
    since: datetime | None
    until: datetime | None
    group_by: Literal["session", "role", "day"]
    rows: list[UsageRow]
    #: null when none of the office's sessions reports usage (shell agents report none)
    total: Usage | None


class Session(BaseModel):
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
    created_at: datetime
    last_activity_at: datetime
    source: str | None = None
    workflow_id: str | None = None
    last_error: str | None = None
    #: what the session waits for a person to answer (POST .../answer), or null
    pending_input: PendingInput | None = None
    #: null for agents that report no usage (a shell)
    usage: Usage | None = None


class PoolSession(Session):
    #: in the office pool: starting, idle (can be handed out) or in_use
    pool_state: str | None = None
    warm: bool | None = None


class SessionList(BaseModel):
    sessions: list[Session]


class SessionCreated(BaseModel):
    session_id: str
    office_id: str
    role: str
    agent: str
    machine_id: str
    working_dir: str | None
    status: SessionStatus
    source: Literal["warm", "cold"]
    workflow_id: str
    command_id: str
    current_job_id: str | None = None
    restarts: int = 0
    circuit: CircuitState = "closed"


class Pool(BaseModel):
    capacity: int
    in_use: int
    live: int
    sessions: list[PoolSession]


class Office(BaseModel):
    office_id: str
    name: str
    machine_id: str
    workspace_root: str | None
    warm_roles: list[str]
    roles: list[str] | None = None
    max_sessions: int
    idle_timeout_s: int
    agent: str
    personas: dict[str, Persona]
    status: str
    created_at: datetime
    permission_rules: PermissionRules = PermissionRules()
    input_timeout_s: float | None = None
    pool: Pool | None = None
    #: over all its sessions; null when none reports usage
    usage: Usage | None = None
    #: when it was created: what will not work as asked (its agent cannot run on its machine)
    warnings: list[str] | None = None


class AgentProgram(BaseModel):
    """What a client worker found of one agent profile's program when it started."""

    #: where the program is; null when it was not found
    program: str | None = None
    #: whether the program was found (a session of this profile can start)
    runs: bool | None = None
    #: a Claude Code CLI's version, and whether semo supports it
    version: str | None = None
    supported: bool | None = None
    note: str | None = None


class Machine(BaseModel):
    machine_id: str
    hostname: str | None
    agent_profiles: list[str]
    agent_versions: dict[str, AgentProgram]
    workspace_roots: list[str]
    last_seen_at: datetime | None
    #: live sessions on it, in the offices this token opens
    live_sessions: int


class MachineList(BaseModel):
    machines: list[Machine]


class OfficeList(BaseModel):
    offices: list[Office]


class OfficeDeleted(BaseModel):
    office_id: str
    status: Literal["deleted"]
    terminated_sessions: list[str]
    command_id: str


class Released(BaseModel):
    session_id: str
    status: SessionStatus
    pool_state: str
    command_id: str


class Terminated(BaseModel):
    session_id: str
    status: Literal["terminated"]
    command_id: str


class PromptSent(BaseModel):
    command_id: str
    job_id: str
    status: Literal["sent"]


class Ack(BaseModel):
    command_id: str
    session_id: str
    status: str
    job_id: str | None = None


class Answered(Ack):
    input_id: str


class Output(BaseModel):
    session_id: str
    since: int
    next_offset: int
    data: str
    format: Literal["text", "raw"]
    truncated_before: int | None


class Cursor(BaseModel):
    row: int
    col: int


class Screen(BaseModel):
    lines: list[str]
    cursor: Cursor
    rows: int
    cols: int


class JobEvent(BaseModel):
    kind: str
    at: datetime
    data: dict[str, Any]


class Job(BaseModel):
    job_id: str
    session_id: str
    status: JobStatus
    prompt: str
    events: list[JobEvent]
    completion: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    #: over its turn's model responses (subagents' included); null for a shell's job
    usage: Usage | None = None


class JobList(BaseModel):
    jobs: list[Job]


class CommandResult(BaseModel):
    status: Literal["ok", "error", "expired"]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime


class Command(BaseModel):
    command_id: str
    office_id: str
    session_id: str | None
    type: str
    payload: dict[str, Any]
    status: str
    source: str
    created_at: datetime
    result: CommandResult | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    command_id: str | None = None
