"""Command payloads: the JSON bodies of the API's mutating requests (SPEC §4, §5).

The API takes them as request bodies and the command intake validates `agent_commands.payload`
with the same models, so a row inserted by a dashboard means exactly what the request would.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from semo.permission_rules import check_rules
from workflows.contracts import NAMED_KEYS, Persona
from workflows.ids import ID_ANCHORED
from workflows.limits import MAX_ANSWER_TEXT, MAX_KEYS, MAX_PROMPT_BYTES, too_large

Ident = Annotated[str, StringConstraints(pattern=ID_ANCHORED)]
Role = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
AgentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PermissionRules(_Body):
    """Rules in Claude Code's syntax (`Bash`, `Bash(git status:*)`, `Edit(src/**)`, `Read`)
    that answer a permission request at once; deny wins over allow (semo/permission_rules.py)."""

    allow: list[str] = Field(default_factory=list, max_length=200)
    deny: list[str] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _parsed(self) -> PermissionRules:
        check_rules(self.model_dump())
        return self


class _OfficePolicy(_Body):
    permission_rules: PermissionRules | None = None
    #: a permission or question still pending this long is answered `deny` (None: never)
    input_timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class OfficeCreate(_OfficePolicy):
    office_id: Ident | None = None
    name: str = Field(min_length=1, max_length=200)
    machine_id: Ident
    workspace_root: str | None = Field(default=None, max_length=4096)
    warm_roles: list[Role] = Field(default_factory=lambda: ["FE", "BE", "QA"], max_length=32)
    #: when given, the only roles this office's sessions may have
    roles: list[Role] | None = Field(default=None, max_length=64)
    max_sessions: int = Field(default=6, ge=1, le=200)
    idle_timeout_s: int = Field(default=600, ge=1, le=30 * 24 * 3600)
    agent: AgentName = "claude"
    personas: dict[Role, Persona] = Field(default_factory=dict, max_length=32)
    repository: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _warm_fits(self) -> OfficeCreate:
        if len(self.warm_roles) > self.max_sessions:
            raise ValueError(
                f"warm_roles has {len(self.warm_roles)} roles but max_sessions is "
                f"{self.max_sessions}: raise max_sessions or warm fewer roles")
        if self.roles is not None and (extra := sorted(set(self.warm_roles) - set(self.roles))):
            raise ValueError(f"warm_roles {extra} are not among the office's roles {self.roles}")
        return self


class OfficeUpdate(_OfficePolicy):
    """PATCH /api/offices/{office_id}: what may change while the office runs."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    #: `null` clears the timeout (a question then waits for a person however long)
    input_timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class AnswerBody(_Body):
    """POST .../answer: the answer to the session's `pending_input`."""

    input_id: str = Field(min_length=1, max_length=100)
    decision: Literal["allow", "deny"] | None = None
    option: str | None = Field(default=None, min_length=1, max_length=500)
    text: str | None = Field(default=None, max_length=MAX_ANSWER_TEXT)
    #: for a permission allowed: also allow it from now on (Claude Code's own suggestion)
    remember: bool = False

    @model_validator(mode="after")
    def _something(self) -> AnswerBody:
        if self.decision is None and self.option is None and not self.text:
            raise ValueError("an answer has a decision (allow, deny), an option or text")
        for name in ("input_id", "option", "text"):
            if "\x00" in (getattr(self, name) or ""):
                raise ValueError(f"{name} contains a NUL character")
        return self


class SessionCreate(_Body):
    role: Role
    agent: AgentName | None = None
    working_dir: str | None = Field(default=None, max_length=4096)
    persona: Persona | None = None
    machine_id: Ident | None = None
    wait_s: float | None = Field(default=None, ge=0, le=300)


class PromptBody(_Body):
    prompt: str = Field(min_length=1)
    job_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")] | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    notify_workflow_id: str | None = Field(default=None, max_length=1000)

    @field_validator("prompt")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if too_large(value):
            raise ValueError(f"prompt is larger than {MAX_PROMPT_BYTES} bytes")
        if not value.strip():
            raise ValueError("prompt is blank")
        if "\x00" in value:
            raise ValueError("prompt contains a NUL character; it cannot be typed")
        return value


class KeysBody(_Body):
    """Keystrokes for the terminal: `text` is typed first, then `keys` are pressed, in one
    write (`{"text": "yes", "keys": ["enter"]}` answers a prompt)."""

    keys: list[str] = Field(default_factory=list, max_length=MAX_KEYS,
                            description="named keys, pressed after the text")
    text: str | None = Field(default=None, max_length=MAX_PROMPT_BYTES,
                             description="literal text, typed first")

    @field_validator("keys")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        unknown = [k for k in value if k.lower() not in NAMED_KEYS]
        if unknown:
            raise ValueError(f"unknown key names {unknown}; known: {', '.join(NAMED_KEYS)}")
        return [k.lower() for k in value]

    @field_validator("text")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("text contains a NUL character; send the key 'ctrl+space' instead")
        if too_large(value):  # bytes, as the workflow and the machine count (not characters)
            raise ValueError(f"text is larger than {MAX_PROMPT_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _something(self) -> KeysBody:
        if not self.keys and not self.text:
            raise ValueError("give keys, text, or both")
        return self


class Empty(_Body):
    pass



def _no_nul(value: str | None) -> str | None:
    """jsonb cannot hold NUL, and nothing typed or committed should."""
    if value is not None and "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


class ReviewComment(_Body):
    #: a path as `changes` lists it
    path: str = Field(min_length=1, max_length=4096)
    #: a line of the file as it is now (1-based), one the diff shows
    line: int = Field(ge=1, le=10_000_000)
    text: str = Field(min_length=1, max_length=20_000)

    _checked = field_validator("path", "text")(_no_nul)

    @field_validator("text")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the comment is blank")
        return value


class ReviewBody(_Body):
    """POST .../review: comments on a session's changes, sent to its agent as one prompt."""

    comments: list[ReviewComment] = Field(min_length=1, max_length=200)
    summary: str | None = Field(default=None, max_length=20_000)
    job_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")] | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)

    _checked = field_validator("summary")(_no_nul)


class HandOffBody(_Body):
    """POST .../handoff: commit the session's work, push its branch, maybe open a PR."""

    #: the commit message for what is uncommitted (default: one made from the session's jobs)
    message: str | None = Field(default=None, min_length=1, max_length=20_000)
    push: bool = True
    pull_request: bool = False

    _checked = field_validator("message")(_no_nul)
