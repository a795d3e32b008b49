"""The messages of a session's changes and hand-off (SPEC §9): what the server asks the client
machine, and what git there answers. No I/O: imported by workflows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FileStatus = Literal["added", "modified", "deleted", "renamed"]


def path_problem(path: str) -> str | None:
    """Why `path` cannot name a file of a worktree (None: it can): a path relative to the
    repository's top, as `changes` lists it. The API and the machine both check it."""
    if not path or "\x00" in path or len(path) > 4096:
        return "path must be 1 to 4096 characters, without NUL"
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        return (f"path {path[:200]!r} must be relative to the repository's top, without `.` "
                "or `..` parts (as `changes` lists it)")
    return None


class WorktreeRef(BaseModel):
    """Which worktree: the machine checks all of it against its own roots again."""

    office_id: str
    session_id: str
    role: str
    working_dir: str
    repository: str


class ChangesInput(BaseModel):
    worktree: WorktreeRef
    #: only this file (a path relative to the worktree), or every file
    path: str | None = None
    #: the most of the diff returned (SEMO_CHANGES_MAX_DIFF_BYTES); `truncated` says it was cut
    max_diff_bytes: int = 512 * 1024


class BaseCommit(BaseModel):
    #: the branch (or commit) the session's branch started from
    ref: str
    commit: str


class ChangedFile(BaseModel):
    path: str
    status: FileStatus
    old_path: str | None = None
    additions: int = 0
    deletions: int = 0
    binary: bool = False


class ChangeCommit(BaseModel):
    sha: str
    subject: str
    #: the commit time, ISO 8601
    at: str


class ChangesResult(BaseModel):
    branch: str
    base: BaseCommit
    head: str
    files: list[ChangedFile] = Field(default_factory=list)
    commits: list[ChangeCommit] = Field(default_factory=list)
    diff: str = ""
    truncated: bool = False


class HandOffInput(BaseModel):
    worktree: WorktreeRef
    #: the commit message for what is uncommitted
    message: str
    push: bool = True
    pull_request: bool = False


class HandOffResult(BaseModel):
    branch: str
    commit: str
    pushed: bool
    #: the remote's name on the client machine (never its URL: it may carry credentials)
    remote: str | None = None
    pull_request_url: str | None = None


class ReadChangesRun(BaseModel):
    """ReadChangesWorkflow's input: the read, and where and how long it may take."""

    machine_id: str
    changes: ChangesInput
    timeout_s: float = 30.0


class HandOffRun(BaseModel):
    """HandOffWorkflow's input."""

    machine_id: str
    hand_off: HandOffInput
    timeout_s: float = 300.0
