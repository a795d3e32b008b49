"""What the client activities ask of an agent CLI, whichever it is (STYLE: "Agents, one
package each"): `activities/claude/` and `activities/codex/` each provide an `AgentIntegration`
(one per worker) whose `prepare` gives a driver (one per session's terminal).

Code outside the packages asks these, never "is this Claude?"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from activities.terminal import SessionManager, Terminal
from activities.usage import UsageSource
from semo.settings import AgentProfile


class AgentDriver(Protocol):
    """One agent's terminal: its screen, its hook events, its prompts and answers."""

    generation: int
    #: sees every hook event with the job of the turn under way (activities/usage.py)
    tap: Callable[[dict, str | None], None] | None

    def attach(self, term: Terminal) -> None: ...

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once the agent takes a prompt; raise StartupError-like errors else."""

    async def submit(self, prompt: str, job_id: str | None) -> None: ...

    async def before_keys(self) -> None: ...

    def note_keys(self) -> None: ...

    async def answer(self, input_id: str, kind: str, decision: str | None, option: str | None,
                     text: str | None, remember: bool) -> str: ...

    def adopt(self, term: Terminal) -> None:
        """Drive an agent a dead worker started: past its start-up, perhaps mid-job."""

    def resume(self, job_id: str | None) -> None:
        """The adopted agent's session re-attached: `job_id` runs (None: none does)."""


class AgentIntegration(Protocol):
    """The worker's side of one agent CLI."""

    #: the agent's memory file in the working dir, where the persona and the completion
    #: protocol go (relative to it)
    persona_file: Path
    @property
    def usage_source(self) -> UsageSource | None:
        """Where it records its model responses for the usage tracker (None: Claude Code's
        transcripts, the tracker's default)."""
        ...

    async def prepare(self, session_id: str, generation: int, working_dir: Path,
                      profile: AgentProfile, office_id: str | None = None
                      ) -> tuple[AgentDriver, dict[str, str]]:
        """The working dir made ready (hooks, settings) and a driver: (driver, environment
        the agent starts with)."""
        ...

    def start_args(self, session_id: str, generation: int, profile: AgentProfile) -> list[str]:
        """Arguments after the profile's argv: hook wiring, and resuming the conversation
        when `generation > 0` (an agent restarted)."""
        ...

    def get(self, session_id: str, generation: int | None = None) -> AgentDriver | None: ...

    async def adopt(self, term: Terminal) -> AgentDriver:
        """A driver for an agent a dead worker of this machine started (its terminal adopted
        from the keeper): its hooks reach this worker; raises OSError when they cannot."""
        ...

    async def release(self, session_id: str) -> None: ...

    async def close(self) -> None: ...

    def version_support(self, profile: AgentProfile) -> dict[str, Any]:
        """`{version, supported, note}` of the profile's CLI (blocking: run it in a thread)."""
        ...


D = TypeVar("D")


class DriverTable(Generic[D]):
    """The live drivers of one agent kind, by session, and the hook server they hear from:
    what every integration does with them once they are made."""

    drivers: dict[str, D]
    server: Any  # a HookServer: start(), register(), listen_also(), unregister(), close()
    manager: SessionManager

    def _new_driver(self, session_id: str, generation: int, working_dir: Path,
                    profile: AgentProfile, office_id: str | None) -> D:
        raise NotImplementedError

    async def adopt(self, term: Terminal) -> D:
        """Drive an agent a dead worker of this machine started. Its hooks still name that
        worker's socket and send its secret (kept with the agent: `term.meta`): this worker
        listens there too and takes that secret. The agent draws its screen again, so the
        driver sees what it shows now (a question it asks, its input box)."""
        sid, meta = term.session_id, term.meta
        await self.server.start()
        await self.release(sid)
        driver = self._new_driver(sid, term.generation, term.working_dir, term.profile,
                                  meta.get("office_id"))
        self.server.register(sid, driver.on_hook, meta["SEMO_HOOK_TOKEN"])  # type: ignore[attr-defined]
        self.drivers[sid] = driver
        await self.server.listen_also(Path(meta["SEMO_HOOK_SOCKET"]))
        driver.adopt(term)  # type: ignore[attr-defined]
        await self.manager.repaint(sid)
        return driver

    def get(self, session_id: str, generation: int | None = None) -> D | None:
        driver = self.drivers.get(session_id)
        if driver is None or (generation is not None
                              and driver.generation != generation):  # type: ignore[attr-defined]
            return None
        return driver

    async def release(self, session_id: str) -> None:
        driver = self.drivers.pop(session_id, None)
        if driver is not None:
            self.server.unregister(session_id, driver.on_hook)  # type: ignore[attr-defined]
            await driver.close()  # type: ignore[attr-defined]

    async def close(self) -> None:
        for session_id in list(self.drivers):
            await self.release(session_id)
        await self.server.close()
