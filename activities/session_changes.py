"""The changes and hand-off activities, served on the machine's task queue: they check the
worktree the server names against this machine's own roots, then let git answer
(activities/changes.py)."""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.changes import GitRefused, NothingToHandOff, check_path, hand_off, read_changes
from activities.workspace import is_within
from activities.worktree import WorktreeError, check_repository, common_dir, git
from semo.settings import Settings
from workflows.change_contracts import (
    ChangesInput,
    ChangesResult,
    HandOffInput,
    HandOffResult,
    WorktreeRef,
)
from workflows.failures import ErrorType
from workflows.ids import is_valid_id


class ChangesActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.roots = settings.resolved_workspace_roots

    @activity.defn(name="read_changes")
    async def read_changes(self, inp: ChangesInput) -> ChangesResult:
        repository, path = await self._worktree(inp.worktree)
        only = None
        if inp.path is not None:
            try:
                only = check_path(inp.path)
            except ValueError as err:
                raise ApplicationError(str(err), type=ErrorType.INVALID_INPUT,
                                       non_retryable=True) from None
        try:
            return await read_changes(repository, path, only=only,
                                      max_diff_bytes=inp.max_diff_bytes)
        except WorktreeError as err:
            raise ApplicationError(str(err), type=ErrorType.GIT_FAILED,
                                   non_retryable=True) from None

    @activity.defn(name="hand_off")
    async def hand_off(self, inp: HandOffInput) -> HandOffResult:
        repository, path = await self._worktree(inp.worktree)
        try:
            return await hand_off(repository, path, message=inp.message, push=inp.push,
                                  pull_request=inp.pull_request,
                                  pull_request_command=self.settings.pull_request_command,
                                  timeout_s=self.settings.hand_off_timeout_s)
        except NothingToHandOff as err:
            raise ApplicationError(str(err), type=ErrorType.NOTHING_TO_HAND_OFF,
                                   non_retryable=True) from None
        except GitRefused as err:
            # a push or a pull request that failed on the network is tried again
            raise ApplicationError(str(err), non_retryable=err.final, type=ErrorType.GIT_FAILED
                                   if err.final else ErrorType.UNAVAILABLE) from None
        except WorktreeError as err:
            raise ApplicationError(str(err), type=ErrorType.GIT_FAILED,
                                   non_retryable=True) from None

    async def _worktree(self, ref: WorktreeRef) -> tuple[Path, Path]:
        """(repository, worktree) after the same checks a session's start makes: ids that
        name folders, a repository inside the allowed roots, a worktree of it inside the
        workspace roots."""
        for name, value in (("office_id", ref.office_id), ("session_id", ref.session_id)):
            if not is_valid_id(value):
                raise ApplicationError(f"{name} {value[:100]!r} is not a valid id",
                                       type=ErrorType.INVALID_INPUT, non_retryable=True)
        try:
            repository = check_repository(ref.repository, self.roots,
                                          self.settings.repository_roots)
            path = Path(ref.working_dir).resolve()
            if not ref.working_dir or not is_within(path, self.roots):
                raise WorktreeError(f"working_dir {ref.working_dir!r} is outside this machine's "
                                    "workspace roots")
        except WorktreeError as err:
            raise ApplicationError(str(err), type=ErrorType.INVALID_WORKING_DIR,
                                   non_retryable=True) from None
        try:  # the session's state, not the request, is what is wrong: a 409
            if not path.is_dir():
                raise WorktreeError(f"the session's worktree {path} is gone from this machine")
            mine, theirs = await common_dir(path), await common_dir(repository)
            _, top, _ = await git("rev-parse", "--show-toplevel", cwd=path, check=False)
            if mine is None or mine != theirs or not top or Path(top).resolve() != path:
                raise WorktreeError(f"{path} is not a worktree of {repository}")
        except WorktreeError as err:
            raise ApplicationError(str(err), type=ErrorType.GIT_FAILED,
                                   non_retryable=True) from None
        return repository, path
