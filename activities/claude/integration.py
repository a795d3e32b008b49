"""The client worker's Claude Code side: the hook server and one driver per session."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from activities.agents import DriverTable
from activities.claude import conversation, versions
from activities.claude.constants import SignalFn
from activities.claude.driver import ClaudeDriver
from activities.claude.hooks import HookServer, socket_path
from activities.claude.settings import merge_settings
from activities.persona import CLAUDE_MD
from activities.terminal import SessionManager
from semo.settings import AgentProfile, Settings

# --- per worker -------------------------------------------------------------------------------


class ClaudeIntegration(DriverTable[ClaudeDriver]):
    """The client worker's Claude Code side: the hook server and one driver per session
    (an `activities.agents.AgentIntegration`)."""

    persona_file = CLAUDE_MD
    #: its transcripts, the usage tracker's default source
    usage_source = None

    def __init__(self, settings: Settings, manager: SessionManager, signal: SignalFn,
                 office_policy: Callable[[str], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.settings = settings
        self.manager = manager
        self.signal = signal
        self.office_policy = office_policy
        self.roots = settings.resolved_workspace_roots
        self.server = HookServer(socket_path(settings), hold_s=settings.hook_decision_wait_s)
        self.drivers: dict[str, ClaudeDriver] = {}

    async def prepare(self, session_id: str, generation: int, working_dir: Path,
                      profile: AgentProfile, office_id: str | None = None
                      ) -> tuple[ClaudeDriver, dict[str, str]]:
        """Hooks in the worktree, a driver and a fresh secret: the environment to start with."""
        await self.server.start()
        await asyncio.to_thread(merge_settings, working_dir, self.roots, None,
                                self.settings.hook_decision_wait_s)
        await self.release(session_id)
        driver = self._new_driver(session_id, generation, working_dir, profile, office_id)
        token = self.server.register(session_id, driver.on_hook)
        self.drivers[session_id] = driver
        return driver, {"SEMO_HOOK_SOCKET": str(self.server.path), "SEMO_HOOK_TOKEN": token}

    def _new_driver(self, session_id: str, generation: int, working_dir: Path,
                    profile: AgentProfile, office_id: str | None) -> ClaudeDriver:
        lookup = self.office_policy
        policy = (lambda: lookup(office_id)) if lookup is not None and office_id else None
        return ClaudeDriver(self.manager, session_id, generation, profile, self.signal,
                            rows=self.manager.rows, cols=self.manager.cols, policy=policy,
                            working_dir=str(working_dir))

    def start_args(self, session_id: str, generation: int, profile: AgentProfile) -> list[str]:
        return conversation.start_args(profile, session_id, generation)

    def version_support(self, profile: AgentProfile) -> dict[str, Any]:
        return versions.support(versions.cli_version(profile.argv[0], profile.env))

