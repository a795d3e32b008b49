"""One live session on this machine, as the client activities know it: which workflow to tell,
which worktree it runs in. Its terminal is the SessionManager's and its Claude Code driver the
ClaudeIntegration's (they look them up by session id); `close()` ends all of it, the one way
out, whether the workflow stopped the session or the housekeeping reaped it as an orphan."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from activities.claude import ClaudeIntegration
from activities.codex import CodexIntegration
from activities.terminal import SessionManager
from activities.usage import UsageTracker
from activities.worktree import Worktree, WorktreeError, remove_worktree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionParts:
    """What a session's parts live in, shared by every ClientSession of this machine."""

    manager: SessionManager
    claude: ClaudeIntegration
    usage: UsageTracker | None
    #: SEMO_REMOVE_WORKTREES: a session's worktree goes with it when nothing in it would be lost
    #: (no uncommitted changes, no commits on no remote); by default it stays
    remove_worktrees: bool
    codex: CodexIntegration | None = None


@dataclass(eq=False)
class ClientSession:
    session_id: str
    parts: SessionParts = field(repr=False)
    #: the workflow its monitor events are signalled to (None: not started far enough)
    workflow_id: str | None = None
    #: the git worktree it runs in, when its office names a repository
    worktree: Worktree | None = None
    #: what its adopted agent's driver told before the session re-attached (which job runs
    #: is not known until then): told to the workflow once it has
    parked_events: list = field(default_factory=list)

    async def close(self) -> None:
        """Stop the terminal, the hooks and the usage tap; remove the worktree if asked to."""
        await self.parts.manager.terminate(self.session_id)
        await self.parts.claude.release(self.session_id)
        if self.parts.codex is not None:
            await self.parts.codex.release(self.session_id)
            self.parts.codex.forget(self.session_id)
        if self.parts.usage is not None:
            await self.parts.usage.forget(self.session_id)
        self.workflow_id = None
        wt, self.worktree = self.worktree, None
        if wt is not None and self.parts.remove_worktrees:
            try:
                if not await remove_worktree(wt.repository, wt.path):
                    log.info("worktree %s holds unsaved work: kept", wt.path)
            except WorktreeError as err:
                log.warning("could not remove worktree %s: %s", wt.path, err)
