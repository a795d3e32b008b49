"""The client worker's Codex side: its hook server and one driver per session, and each
session's conversation id (kept under `home/codex/`, so a restarted agent resumes it) and
last turn (kept there too, so a next worker that adopts the agent knows which turn runs)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from activities.agents import DriverTable
from activities.claude.hooks import HookServer, socket_path
from activities.claude.settings import hook_command
from activities.codex import versions
from activities.codex.config import hook_args, resume_args
from activities.codex.driver import CodexDriver, SignalFn
from activities.codex.usage import ROLLOUT
from activities.persona import AGENTS_MD, atomic_write
from activities.terminal import SessionManager, Terminal
from semo.settings import AgentProfile, Settings

log = logging.getLogger(__name__)

_CONVERSATION_RE = re.compile(r"^[A-Za-z0-9-]{8,100}$")
_TURN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
#: how much of a kept turn file is read (an id and a path)
_MAX_TURN_FILE = 8192


def codex_socket_path(settings: Settings) -> Path:
    """Beside Claude Code's hook socket, a name of its own (one server per agent kind)."""
    path = socket_path(settings)
    path = path.with_name("codex-" + path.name)
    if len(os.fsencode(path)) <= 100:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"semo-{os.getuid()}" / f"codex-{digest}.sock"


class CodexIntegration(DriverTable[CodexDriver]):
    """An `activities.agents.AgentIntegration` for OpenAI's Codex CLI."""

    persona_file = AGENTS_MD
    usage_source = ROLLOUT

    def __init__(self, settings: Settings, manager: SessionManager, signal: SignalFn,
                 office_policy: Callable[[str], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.settings = settings
        self.manager = manager
        self.signal = signal
        self.office_policy = office_policy
        self.server = HookServer(codex_socket_path(settings), hold_s=settings.hook_decision_wait_s)
        self.drivers: dict[str, CodexDriver] = {}
        self.conversations_dir = (settings.home / "codex").resolve()

    async def prepare(self, session_id: str, generation: int, working_dir: Path,
                      profile: AgentProfile, office_id: str | None = None
                      ) -> tuple[CodexDriver, dict[str, str]]:
        await self.server.start()
        await self.release(session_id)
        driver = self._new_driver(session_id, generation, working_dir, profile, office_id)
        token = self.server.register(session_id, driver.on_hook)
        self.drivers[session_id] = driver
        return driver, {"SEMO_HOOK_SOCKET": str(self.server.path), "SEMO_HOOK_TOKEN": token}

    def _new_driver(self, session_id: str, generation: int, working_dir: Path,
                    profile: AgentProfile, office_id: str | None) -> CodexDriver:
        lookup = self.office_policy
        policy = (lambda: lookup(office_id)) if lookup is not None and office_id else None
        driver = CodexDriver(self.manager, session_id, generation, profile, self.signal,
                             rows=self.manager.rows, cols=self.manager.cols, policy=policy,
                             working_dir=str(working_dir),
                             on_conversation=lambda cid: self._remember(session_id, cid),
                             on_turn=lambda turn, path: self._remember_turn(session_id, turn,
                                                                            path))
        driver.conversation_id = self.conversation(session_id)
        return driver

    async def adopt(self, term: Terminal) -> CodexDriver:
        """As DriverTable.adopt, and the driver starts from the turn the dead worker's driver
        last learned from the hooks (a refused turn is told only in the rollout file)."""
        driver = await super().adopt(term)
        driver.resume_turn(*self.last_turn(term.session_id))
        return driver

    def start_args(self, session_id: str, generation: int, profile: AgentProfile) -> list[str]:
        args = hook_args(hook_command(), self.settings.hook_decision_wait_s)
        return args + (resume_args(self.conversation(session_id)) if generation > 0 else [])

    def version_support(self, profile: AgentProfile) -> dict[str, Any]:
        return versions.support(versions.cli_version(profile.argv[0], profile.env))

    # --- conversations ------------------------------------------------------------------------

    def _conversation_file(self, session_id: str) -> Path:
        return self.conversations_dir / f"{session_id}.conversation"

    def conversation(self, session_id: str) -> str | None:
        """The Codex conversation this session had, if it had one."""
        try:
            found = self._conversation_file(session_id).read_text().strip()
        except OSError:
            return None
        return found if _CONVERSATION_RE.match(found) else None

    def _remember(self, session_id: str, conversation_id: str) -> None:
        if not _CONVERSATION_RE.match(conversation_id):
            return
        try:
            self.conversations_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(self._conversation_file(session_id), conversation_id.encode(), 0o600)
        except OSError as err:  # the session goes on; a restart then starts afresh
            log.warning("%s: could not keep Codex's conversation id: %s", session_id, err)

    def forget(self, session_id: str) -> None:
        """The session is over: its conversation will not be resumed here."""
        self._conversation_file(session_id).unlink(missing_ok=True)
        self._turn_file(session_id).unlink(missing_ok=True)

    def _turn_file(self, session_id: str) -> Path:
        return self.conversations_dir / f"{session_id}.turn"

    def last_turn(self, session_id: str) -> tuple[str | None, Path | None]:
        """The session's last turn and its rollout file, as its driver last learned them."""
        try:
            with self._turn_file(session_id).open("rb") as f:
                found = json.loads(f.read(_MAX_TURN_FILE))
        except (OSError, ValueError):
            return None, None
        if not isinstance(found, dict):
            return None, None
        turn, path = found.get("turn_id"), found.get("rollout")
        return (turn if isinstance(turn, str) and _TURN_RE.match(turn) else None,
                Path(path) if isinstance(path, str) and path else None)

    def _remember_turn(self, session_id: str, turn_id: str, rollout: Path | None) -> None:
        data = {"turn_id": turn_id, "rollout": str(rollout) if rollout is not None else None}
        try:
            self.conversations_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(self._turn_file(session_id), json.dumps(data).encode(), 0o600)
        except OSError as err:  # the session goes on; a next worker then misses the turn
            log.warning("%s: could not keep Codex's turn: %s", session_id, err)

    # --- per session --------------------------------------------------------------------------


