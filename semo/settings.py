"""One settings class for every process, read from the environment and `.env`.

Every process (API, workers, intake, `semo dev`) builds a `Settings()`; nothing reads the
environment anywhere else. `SEMO_*` variables, plus Supabase's usual names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from semo.errors import ConfigError
from semo.usage import DEFAULT_PRICES, ModelPrice, parse_prices


class StartupDialogs(BaseModel):
    """How a Claude Code or Codex profile answers the dialogs the CLI may show when it starts
    (or later: the trust dialog can appear after the input box). "fail": leave the dialog
    alone; a start fails naming it, a dialog later waits for a person. (Codex has no API-key
    dialog.)"""

    model_config = ConfigDict(extra="forbid")

    #: "Is this a project you created or one you trust?": a session's folder is always
    #: inside this machine's workspace roots, so the default trusts it
    trust_folder: Literal["accept", "fail"] = "accept"
    #: "Detected a custom API key in your environment. Do you want to use this API key?":
    #: which credentials (and bill) to use is the machine owner's call, so no default answer
    api_key: Literal["accept", "decline", "fail"] = "fail"


AgentKind = Literal["claude", "codex", "shell"]


class AgentProfile(BaseModel):
    """A program the client worker is willing to run. The server only ever names one.

    Configured profiles are merged field by field over the built-in of their kind (see
    `merge_profile`); a field name that is not one of these is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    #: what the program is: "claude" (Claude Code), "codex" (OpenAI's Codex CLI; both: hooks,
    #: a screen driver, one package under activities/) or "shell"
    kind: AgentKind = "shell"
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    #: pattern set the OutputMonitor uses for this agent ("claude" or "shell")
    monitor: str = "shell"
    #: whether the agent speaks Claude Code's hooks (deterministic completion)
    hooks: bool = False
    #: Claude Code profiles (`hooks`): each session has its own conversation
    #: (`--session-id`), and a restart after a crash resumes exactly it (`--resume`);
    #: false: a restart starts a new conversation (or uses `resume_args`)
    resume_conversation: bool = True
    #: for other agents (or with `resume_conversation` off): extra arguments for a restart
    #: after a crash, to resume where it was; empty: a restart starts afresh
    resume_args: list[str] = Field(default_factory=list)
    #: how a prompt is typed: "line" (text, then Enter) or "paste" (bracketed paste, a
    #: pause of `submit_delay_s`, then Enter: what full-screen TUIs such as Claude Code need)
    input_mode: Literal["line", "paste"] = "line"
    submit_delay_s: float = 0.15
    #: Claude Code and Codex profiles (`hooks`): start-up dialog answers, and how long a start
    #: may take to show the input box before it fails
    dialogs: StartupDialogs = Field(default_factory=StartupDialogs)
    ready_timeout_s: float = Field(default=60.0, gt=0, le=85)


BUILTIN_PROFILES: dict[str, AgentProfile] = {
    "claude": AgentProfile(kind="claude", argv=["claude"], monitor="claude", hooks=True,
                           input_mode="paste"),
    "codex": AgentProfile(kind="codex", argv=["codex"], hooks=True, input_mode="paste"),
    "shell": AgentProfile(argv=["bash", "--noprofile", "--norc"], env={"PS1": "$ "}),
}
#: fields whose value is an object: a configured one is merged key by key over the base's
_NESTED_FIELDS = ("env", "dialogs")


def profile_kind(name: str, fields: dict[str, Any]) -> AgentKind:
    """A configured profile's kind: as it says, else the built-in of that name's, else
    "claude" or "codex" when its program is called so, else "shell"."""
    kind = fields.get("kind")
    if kind is not None:
        return kind  # checked by the model
    if name in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name].kind
    argv = fields.get("argv")
    if isinstance(argv, list) and argv and isinstance(argv[0], str):
        program = Path(argv[0]).name
        if program.startswith("claude"):
            return "claude"
        if program.startswith("codex"):
            return "codex"
    return "shell"


def merge_profile(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (a configured profile) over the built-in profile it extends: the one of the
    same name, else the built-in of its kind. What `fields` does not set is kept."""
    kind = profile_kind(name, fields)
    if kind not in BUILTIN_PROFILES:
        return fields  # the model says what is wrong with `kind`
    base = BUILTIN_PROFILES.get(name) or BUILTIN_PROFILES[kind]
    if base.kind != kind:  # e.g. a profile named "shell" that says it is Claude Code
        base = BUILTIN_PROFILES[kind]
    merged: dict[str, Any] = base.model_dump()
    for key, value in fields.items():
        if key in _NESTED_FIELDS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    merged["kind"] = kind
    return merged

_MACHINE_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_machine_id() -> str:
    return _MACHINE_ID_RE.sub("-", socket.gethostname()).strip("-") or "local"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEMO_", env_file=".env", extra="ignore", populate_by_name=True
    )

    #: where embedded state lives (Temporal's SQLite, Postgres data, dev.json, transcripts)
    home: Path = Path(".semo")

    # --- Temporal -------------------------------------------------------------------------
    #: None means: the embedded dev server started by `semo dev` (see `effective_temporal_address`)
    temporal_address: str | None = None
    embedded_temporal_port: int = 7233
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    server_task_queue: str = "semo-server"

    # --- Postgres -------------------------------------------------------------------------
    #: None means: the embedded Postgres started by `semo dev` (see `effective_database_url`)
    database_url: str | None = None
    embedded_pg_port: int = 54329

    # --- API ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    #: how long a mutating request waits for its command's result before answering 504
    command_timeout_s: float = 30.0
    #: the most of a session's diff `GET .../changes` returns (`truncated` says it was cut)
    changes_max_diff_bytes: int = Field(default=512 * 1024, ge=1024, le=1536 * 1024)
    #: how long reading a session's changes on its machine may take (then 503)
    changes_timeout_s: float = Field(default=30.0, gt=0, le=600)
    jwt_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "SEMO_JWT_SECRET")
    )
    jwt_audience: str = "authenticated"
    jwks_url: str | None = None
    #: how long one fetch of the JWKS may take (a request waiting on it then answers 503)
    jwks_timeout_s: float = 5.0
    #: set by `semo dev`; outside dev mode the API refuses to start without a JWT secret
    dev_mode: bool = False

    # --- Supabase (optional) --------------------------------------------------------------
    supabase_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_URL", "SEMO_SUPABASE_URL")
    )
    supabase_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_KEY", "SEMO_SUPABASE_KEY")
    )

    # --- client worker --------------------------------------------------------------------
    machine_id: str = Field(default_factory=default_machine_id)
    workspace_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path(".semo/workspaces")]
    )
    agent_profiles: Annotated[dict[str, AgentProfile], NoDecode] = Field(default_factory=dict)
    #: where offices' `repository` may be besides the workspace roots (session worktrees are
    #: always made inside the workspace roots)
    repository_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    #: terminating a session also removes its git worktree when it has no uncommitted changes
    #: (its branch stays); default: the worktree stays, the work in it is the user's
    remove_worktrees: bool = False
    #: run by a hand-off that asks for a pull request, in the session's worktree, with this
    #: machine's credentials; `{branch}`, `{base}` and `{remote}` are filled in (e.g.
    #: `gh pr create --fill --head {branch}`); the URL it prints is the pull request's
    pull_request_command: str | None = None
    #: how long a hand-off's git commit, push and pull-request command may take in all
    hand_off_timeout_s: float = Field(default=300.0, gt=0, le=3600)
    #: directory of the client worker's Unix socket for Claude Code hooks (default: `home/run`,
    #: or a private folder under /tmp when that path is too long for a socket)
    hook_socket_dir: Path | None = None
    #: how long a Claude Code hook that asks a person (a permission, a question, a plan)
    #: waits for the answer through semo before Claude Code shows its own dialog (which
    #: stays answerable by keys and POST .../answer)
    hook_decision_wait_s: float = Field(default=600.0, gt=0, le=3000)
    output_retention_bytes: int = 16 * 1024 * 1024
    #: a transcript (`home/transcripts/{session}.log`, on the client machine) is deleted once
    #: its session is not live and it has not been written for this long (0: kept forever)
    transcript_retention_days: float = Field(default=14.0, ge=0)
    #: how long output may wait in the client worker before it is saved (and viewers see
    #: it); busy fleets batch themselves (bytes gather while a save runs)
    output_flush_interval_s: float = Field(default=0.01, gt=0, le=5)
    output_flush_bytes: int = 64 * 1024
    terminal_rows: int = 40
    terminal_cols: int = 120
    #: a session's PTY whose supervising activity went away is killed after this long
    orphan_grace_s: float = 120.0
    #: agents are forked by this machine's keeper (keeper/), so they outlive a client worker
    #: that dies or restarts; off: the client worker forks them and they die with it
    keeper: bool = True
    #: an agent of the keeper's that no client worker claims within this is stopped
    keeper_grace_s: float = 600.0
    #: a running job with no output for this long is reported as a `stall` event (None: never)
    stall_after_s: float | None = 300.0
    #: how often a running Claude Code session's transcript is read for token usage (a
    #: job's end reads it at once)
    usage_interval_s: float = Field(default=5.0, gt=0)

    # --- usage and cost -------------------------------------------------------------------
    #: USD per million tokens by model, JSON `{"model": {"input", "output", "cache_read",
    #: "cache_write", "cache_write_1h"?}}`, merged over semo/usage.py's dated defaults
    model_prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(default_factory=dict)

    # --- sessions -------------------------------------------------------------------------
    default_job_timeout_s: float = 3600.0
    heartbeat_timeout_s: float = 20.0
    #: how long a session's start may wait for its machine's worker before it counts as failed
    start_timeout_s: float = 120.0
    #: the restart circuit breaker: this many failures within the window open the circuit
    breaker_max_failures: int = 3
    breaker_window_s: float = 600.0
    breaker_cooldown_s: float = 300.0

    # --- webhooks -------------------------------------------------------------------------
    #: webhooks may call loopback addresses; None: only in `semo dev` (dev_mode)
    webhook_allow_loopback: bool | None = None
    #: webhooks may call private, link-local and reserved addresses (an internal receiver)
    webhook_allow_private: bool = False
    #: one delivery attempt's HTTP timeout
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    #: retries back off from this interval, doubling up to the max, for `retry_for_s` in all;
    #: then the delivery has failed and its webhook is disabled
    webhook_retry_initial_s: float = Field(default=5.0, gt=0)
    webhook_retry_max_interval_s: float = Field(default=1800.0, gt=0)
    webhook_retry_for_s: float = Field(default=86400.0, gt=0)
    #: the dispatcher looks for events a missed NOTIFY left behind this often
    webhook_dispatch_poll_s: float = Field(default=5.0, gt=0)
    #: finished deliveries (events, attempts) are kept this long in the delivery log
    webhook_log_retention_days: float = Field(default=30.0, gt=0)

    # --- command intake -------------------------------------------------------------------
    intake_poll_interval_s: float = 2.0
    command_max_age_s: float = 3600.0

    @field_validator("workspace_roots", "repository_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [p for p in value.split(os.pathsep) if p]
        return value

    @field_validator("agent_profiles", mode="before")
    @classmethod
    def _parse_profiles(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError as err:
                raise ValueError(f"not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object: {"name": {"argv": [...], "env": {...}}}')
        # profiles given as dicts (the environment, .env) extend the built-ins field by
        # field; an AgentProfile object (built in code) is taken as it is
        return {name: merge_profile(name, fields) if isinstance(fields, dict) else fields
                for name, fields in value.items()}

    @field_validator("model_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return parse_prices(value)

    @field_validator("machine_id")
    @classmethod
    def _check_machine_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError("machine_id may use letters, digits, '.', '_' and '-' (max 64)")
        return value

    # --- derived --------------------------------------------------------------------------
    @property
    def profiles(self) -> dict[str, AgentProfile]:
        """Configured agent profiles merged over the built-in `claude` and `shell`."""
        return {**BUILTIN_PROFILES, **self.agent_profiles}

    @property
    def prices(self) -> dict[str, ModelPrice]:
        """The price table: the defaults, with the configured models over them."""
        return {**DEFAULT_PRICES, **self.model_prices}

    @property
    def resolved_workspace_roots(self) -> list[Path]:
        return [p.expanduser().resolve() for p in self.workspace_roots]

    @property
    def keeper_socket(self) -> Path:
        """This machine's keeper: where its client workers find it (one per machine id, so
        that workers of other machines sharing a home never take each other's agents)."""
        run = (self.home / "run").resolve()
        path = run / f"keeper-{self.machine_id}.sock"
        if len(str(path)) > 100:  # a Unix socket's path has room for 107 bytes
            path = run / f"keeper-{hashlib.sha256(self.machine_id.encode()).hexdigest()[:12]}.sock"
        return path

    @property
    def machine_task_queue(self) -> str:
        return machine_task_queue(self.machine_id)

    @property
    def dev_json_path(self) -> Path:
        return self.home / "dev.json"

    def effective_temporal_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.embedded_temporal_port}"

    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return embedded_database_url(self.embedded_pg_port)

    @cached_property
    def pg_data_dir(self) -> Path:
        return (self.home / "postgres").resolve()


def load_settings(**overrides: Any) -> Settings:
    """`Settings()`, with a validation error turned into one readable message per problem
    (`SEMO_AGENT_PROFILES: claude.argv: Input should be a valid list`)."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = [str(part) for part in e["loc"]]
            field = loc[0] if loc else "?"
            setting = f"SEMO_{field.upper()}" if field in Settings.model_fields else field
            where = ".".join(loc[1:])
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e['input']!r:.80})" if e["type"] not in ("missing", "value_error") \
                and loc[1:] else ""
            problems.append(f"{setting}: {where + ': ' if where else ''}{msg}{got}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def machine_task_queue(machine_id: str) -> str:
    return f"semo-machine-{machine_id}"


def embedded_database_url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"
