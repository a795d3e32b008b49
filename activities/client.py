"""Client-machine activities, served on `semo-machine-{machine_id}`.

They are the server's only way to touch this machine, and they refuse what the machine's
own configuration does not allow: agents outside its profiles, directories outside its
workspace roots, and any environment or command line from the server (it names a profile).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.agents import AgentDriver, AgentIntegration
from activities.claude import (
    ClaudeIntegration,
    ClaudeSetupError,
    DialogOpen,
    StartupError,
)
from activities.client_session import ClientSession, SessionParts
from activities.codex import CodexIntegration
from activities.monitor import MonitorEvent
from activities.persona import CLAUDE_MD, PersonaError, PersonaInjector
from activities.terminal import SessionManager, Terminal, TerminalError
from activities.usage import UsageTracker
from activities.workspace import WorkspaceError, resolve_working_dir
from activities.worktree import WorktreeError, session_worktree
from semo.settings import AgentProfile, Settings
from workflows.contracts import (
    NAMED_KEYS,
    MonitorSignal,
    ReattachAgentInput,
    ReattachAgentResult,
    ResizeTerminalInput,
    SendAnswer,
    SendInput,
    StartAgentInput,
    StartAgentResult,
    StopAgentInput,
    WatchAgentInput,
    WatchAgentResult,
)
from workflows.failures import ErrorType
from workflows.ids import is_valid_id
from workflows.limits import MAX_ANSWER_TEXT, MAX_KEYS, MAX_PROMPT_BYTES, size_problem, too_large

log = logging.getLogger(__name__)

_RPC_TIMEOUT = timedelta(seconds=10)
#: for agents with hooks (Claude Code) these come from the hooks and the screen driver
#: (activities/claude/), not from the output regexes
_HOOKS_DECIDE = ("completion", "error", "waiting_input")
#: events an adopted agent's driver may tell before its session re-attaches
MAX_PARKED_EVENTS = 200


def input_problem(inp: SendInput) -> str | None:
    """Why this machine refuses to type `inp`: bounded sizes, named keys only."""
    if too_large(inp.prompt):
        return f"prompt exceeds {MAX_PROMPT_BYTES} bytes"
    if too_large(inp.text):
        return f"text exceeds {MAX_PROMPT_BYTES} bytes"
    if len(inp.keys) > MAX_KEYS:
        return f"{len(inp.keys)} keys; at most {MAX_KEYS} at once"
    unknown = [k[:40] for k in inp.keys if not isinstance(k, str) or k.lower() not in NAMED_KEYS]
    if unknown:
        return f"unknown key names {unknown[:5]}; known: {', '.join(NAMED_KEYS)}"
    return None


class ClientActivities:
    def __init__(self, settings: Settings, manager: SessionManager, client: Client,
                 office_policy: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
                 usage: UsageTracker | None = None) -> None:
        self.settings = settings
        #: token usage from Claude Code's transcripts (None: not recorded)
        self.usage = usage
        self.manager = manager
        self.client = client
        self.roots = settings.resolved_workspace_roots
        self.personas = PersonaInjector(self.roots)
        self.claude = ClaudeIntegration(settings, manager, self._signal, office_policy)
        self.codex = CodexIntegration(settings, manager, self._signal, office_policy)
        #: each agent kind's package (activities/agents.py); a kind not here has no driver
        self.agents: dict[str, AgentIntegration] = {"claude": self.claude, "codex": self.codex}
        self.parts = SessionParts(manager, self.claude, usage, settings.remove_worktrees,
                                  codex=self.codex)
        #: the live sessions by id (their terminals: `manager`, their drivers: `claude`)
        self.sessions: dict[str, ClientSession] = {}
        manager.on_event = self._on_monitor_event

    @activity.defn(name="start_agent")
    async def start_agent(self, inp: StartAgentInput) -> StartAgentResult:
        term = self.manager.get(inp.session_id)
        if term is not None and term.alive and term.generation == inp.generation:
            return self._started(term)  # a continued-as-new run taking over
        for name, value in (("office_id", inp.office_id), ("session_id", inp.session_id)):
            if not is_valid_id(value):  # they name files and folders on this machine
                raise ApplicationError(f"{name} {value[:100]!r} is not a valid id",
                                       type=ErrorType.INVALID_INPUT, non_retryable=True)
        if inp.agent not in self.manager.profiles:
            raise ApplicationError(
                f"agent {inp.agent!r} is not a profile on machine {self.settings.machine_id} "
                f"(configured: {', '.join(sorted(self.manager.profiles))})",
                type=ErrorType.UNKNOWN_AGENT, non_retryable=True)
        try:
            working_dir = resolve_working_dir(inp.working_dir, self.roots, inp.office_id,
                                              inp.session_id)
        except (WorkspaceError, OSError) as err:  # OSError: a name too long, a file in the way
            raise ApplicationError(f"working_dir refused: {err}" if isinstance(err, OSError)
                                   else str(err), type=ErrorType.INVALID_WORKING_DIR,
                                   non_retryable=True) from err
        profile = self.manager.profiles[inp.agent]
        agent = self._agent_of(profile)
        try:  # the worktree, the persona, the agent's hooks (activities/claude/, codex/)
            if inp.repository:
                wt = await session_worktree(
                    inp.repository, working_dir, office_id=inp.office_id, role=inp.role,
                    session_id=inp.session_id, workspace_roots=self.roots,
                    repository_roots=self.settings.repository_roots)
                self._session(inp.session_id).worktree = wt
            if profile.hooks or inp.persona is not None:
                await asyncio.to_thread(self.personas.inject_persona, working_dir, inp.persona,
                                        agent.persona_file if agent is not None else CLAUDE_MD)
            driver, hook_env = (await agent.prepare(inp.session_id, inp.generation,
                                                    working_dir, profile, inp.office_id)
                                if agent is not None else (None, {}))
        except (WorktreeError, WorkspaceError, PersonaError, ClaudeSetupError, OSError) as err:
            raise ApplicationError(f"could not prepare {working_dir} for {inp.agent}: {err}",
                                   type=ErrorType.INVALID_WORKING_DIR, non_retryable=True) from err
        self._session(inp.session_id).workflow_id = inp.workflow_id
        if driver is not None and self.usage is not None:
            driver.tap = await self.usage.track(inp.session_id, inp.office_id,
                                                agent.usage_source if agent else None)
        try:
            # the agent's own arguments (hooks, the conversation to resume): may read its files
            args = (await asyncio.to_thread(agent.start_args, inp.session_id, inp.generation,
                                            profile)
                    if agent is not None else profile.resume_args if inp.generation > 0 else [])
            # what a next worker needs to take the agent up if this one dies (kept.py)
            meta = {**hook_env, **({"office_id": inp.office_id} if inp.office_id else {})}
            term = await self.manager.create(inp.session_id, working_dir, inp.agent,
                                             extra_args=args, extra_env=hook_env,
                                             generation=inp.generation, meta=meta)
        except (OSError, TerminalError) as err:
            await self._release_agent(inp.session_id)
            raise ApplicationError(
                f"could not start {inp.agent}: {err}", type=ErrorType.SPAWN_FAILED
            ) from err
        if driver is not None:  # returns once the agent's input box is up
            driver.attach(term)
            try:
                await driver.wait_ready(profile.ready_timeout_s)
            except StartupError as err:
                await self.manager.terminate(inp.session_id)
                await self._release_agent(inp.session_id)
                raise ApplicationError(
                    f"{inp.agent} did not start: {err}",
                    type=ErrorType.SPAWN_FAILED,
                    non_retryable=err.permanent,
                ) from err
            if agent is not None:
                await self._tell_version(term, profile, agent)
        return self._started(term)

    async def _tell_version(self, term: Terminal, profile: AgentProfile,
                            agent: AgentIntegration) -> None:
        """A CLI outside the tested range is a session event (and a log line), not a mystery."""
        try:
            found = await asyncio.to_thread(agent.version_support, profile)
            if found["note"]:
                log.warning("session %s: %s", term.session_id, found["note"])
                await self._signal(term, MonitorEvent(kind="agent_version", data=found,
                                                      offset=term.offset))
        except Exception:  # a warning that could not be given is no reason to fail a start
            log.exception("session %s: could not report the agent's version", term.session_id)

    @activity.defn(name="reattach_agent")
    async def reattach_agent(self, inp: ReattachAgentInput) -> ReattachAgentResult:
        """The session lost its watch on this agent (its worker died, or the server was
        away longer than the heartbeat timeout): take it up again if it still runs here,
        the same generation. An adopted agent's output is monitored from here on, for the
        job the session says is running."""
        term = self.manager.get(inp.session_id)
        if term is None or not term.alive or term.generation != inp.generation:
            return ReattachAgentResult(attached=False)
        session = self._session(inp.session_id)
        session.workflow_id = inp.workflow_id
        driver = self._driver(inp.session_id, inp.generation)
        if term.parked and driver is not None:
            driver.resume(inp.job_id)
        # what the agent told while parked is the running job's: told first, in order (and
        # what it tells meanwhile joins the queue: the terminal stays parked until it is empty)
        ended = False
        while term.parked and session.parked_events:
            ev = session.parked_events.pop(0)
            if inp.job_id is not None:
                ev.data.setdefault("job_id", inp.job_id)
            ended = ended or ev.kind in ("completion", "error")
            await self._signal(term, ev, parked=False)
        self.manager.resume_parked(inp.session_id, inp.job_id)
        if ended:
            term.busy = False
        return ReattachAgentResult(attached=True, pid=term.pid)

    @activity.defn(name="watch_agent")
    async def watch_agent(self, inp: WatchAgentInput) -> WatchAgentResult:
        """Heartbeat while the agent runs; return when its process is gone."""
        term = self.manager.get(inp.session_id)
        if term is None or term.generation != inp.generation:
            return WatchAgentResult(exit_code=None, signal=None, reason="lost")
        interval = max(activity.info().heartbeat_timeout.total_seconds() / 3, 0.5) \
            if activity.info().heartbeat_timeout else 5.0
        term.leases += 1
        try:
            while not term.exited.is_set():
                activity.heartbeat()
                try:
                    await asyncio.wait_for(asyncio.shield(term.exited.wait()), interval)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            if term.left:  # cancelled by this worker's shutdown, after it stopped polling
                raise ApplicationError(
                    "the client worker is restarting; the agent runs on, kept by the keeper",
                    type=ErrorType.WORKER_LEFT, non_retryable=True) from None
            raise
        finally:
            term.leases -= 1
            if term.leases == 0:
                term.unleased_since = time.monotonic()
        return WatchAgentResult(exit_code=term.exit_code, signal=term.exit_signal,
                                reason="drained" if self.manager.draining else
                                "terminated" if term.stopping else "exited")

    @activity.defn(name="send_input")
    async def send_input(self, inp: SendInput) -> None:
        self._live_terminal(inp.session_id, inp.generation)
        problem = input_problem(inp)  # the workflow checked too; this machine does not rely on it
        if problem:
            raise ApplicationError(problem, type=ErrorType.INVALID_INPUT, non_retryable=True)
        driver = self._driver(inp.session_id, inp.generation)  # an agent package types
        try:
            if inp.keys or inp.text:
                if driver is not None:
                    await driver.before_keys()
                await self.manager.send_keystrokes(inp.session_id, inp.keys, inp.text)
                if driver is not None:
                    driver.note_keys()
            if inp.prompt is not None:
                if driver is not None:
                    await driver.submit(inp.prompt, inp.job_id)
                else:
                    await self.manager.execute(inp.session_id, inp.prompt, job_id=inp.job_id)
        except DialogOpen as err:  # nothing was typed
            raise ApplicationError(
                str(err), type=ErrorType.DIALOG_OPEN, non_retryable=True
            ) from err
        except TerminalError as err:
            raise ApplicationError(
                str(err), type=ErrorType.NO_TERMINAL, non_retryable=True
            ) from err

    @activity.defn(name="answer_input")
    async def answer_input(self, inp: SendAnswer) -> str:
        """A person's answer to what the agent asks: for Claude Code through its held hook
        (or its dialog), for other agents typed as text and Enter. Returns how it went."""
        term = self._live_terminal(inp.session_id, inp.generation)
        if inp.text is not None and len(inp.text) > MAX_ANSWER_TEXT:
            raise ApplicationError(f"answer text exceeds {MAX_ANSWER_TEXT} characters",
                                   type=ErrorType.INVALID_INPUT, non_retryable=True)
        driver = self._driver(inp.session_id, inp.generation)
        try:
            if driver is not None:
                return await driver.answer(inp.input_id, inp.kind, inp.decision, inp.option,
                                           inp.text, inp.remember)
            answer = inp.option if inp.option is not None else inp.text
            if answer is None:
                raise TerminalError(f"{term.agent} is answered with text or an option")
            await self.manager.send_keystrokes(inp.session_id, ["enter"], answer)
            return "keys"
        except TerminalError as err:
            raise ApplicationError(
                str(err), type=ErrorType.INVALID_INPUT, non_retryable=True
            ) from err

    @activity.defn(name="stop_agent")
    async def stop_agent(self, inp: StopAgentInput) -> None:
        await self._close(inp.session_id)

    @activity.defn(name="resize_terminal")
    async def resize_terminal(self, inp: ResizeTerminalInput) -> None:
        """Set the PTY's size (TIOCSWINSZ); the kernel tells the agent with SIGWINCH."""
        self._live_terminal(inp.session_id, inp.generation)
        if size_problem(inp.rows, inp.cols):
            raise ApplicationError(f"terminal size {inp.rows}x{inp.cols} is out of range",
                                   type=ErrorType.INVALID_INPUT, non_retryable=True)
        try:
            self.manager.resize(inp.session_id, inp.rows, inp.cols)
        except (TerminalError, OSError) as err:
            raise ApplicationError(
                str(err), type=ErrorType.NO_TERMINAL, non_retryable=True
            ) from err

    def _live_terminal(self, session_id: str, generation: int) -> Terminal:
        """The session's terminal of that generation, alive on this machine; else the
        non-retryable NO_TERMINAL failure the workflow takes as "restart or refuse"."""
        term = self.manager.get(session_id)
        if term is None or not term.alive or term.generation != generation:
            raise ApplicationError(f"session {session_id} has no live terminal here",
                                   type=ErrorType.NO_TERMINAL, non_retryable=True)
        return term

    # --- events to the workflow --------------------------------------------------------------

    async def _on_monitor_event(self, term: Terminal, ev: MonitorEvent) -> None:
        if term.profile.hooks and ev.kind in _HOOKS_DECIDE:
            return
        await self._signal(term, ev)

    async def _signal(self, term: Terminal, ev: MonitorEvent, *, parked: bool = True) -> None:
        """Tell the session's workflow (`parked`: unless the terminal is parked, adopted
        and not re-attached yet: then the event waits for it, reattach_agent)."""
        if parked and term.parked:
            waiting = self._session(term.session_id).parked_events
            if len(waiting) < MAX_PARKED_EVENTS:
                waiting.append(ev)
            return
        session = self.sessions.get(term.session_id)
        workflow_id = session.workflow_id if session is not None else None
        if workflow_id is None:
            return
        data = dict(ev.data)
        job_id = data.pop("job_id", None)
        if ev.kind == "waiting_input":  # every question gets an id its answer names
            data.setdefault("input_id", f"in-{secrets.token_hex(8)}")
        if job_id is not None and ev.kind in ("completion", "error") and self.usage is not None:
            # a done job shows its usage; after a Stop hook the turn's last response is due
            await self.usage.flush_before_end(term.session_id, job_id,
                                              turn_ended=data.get("kind") != "exit")
        signal = MonitorSignal(kind=ev.kind, generation=term.generation, job_id=job_id,  # type: ignore[arg-type]
                               data=data, offset=ev.offset)
        await self.client.get_workflow_handle(workflow_id).signal("monitor", signal,
                                                                  rpc_timeout=_RPC_TIMEOUT)

    # --- housekeeping -------------------------------------------------------------------------

    async def reap_orphans(self) -> None:
        """Kill terminals nobody has supervised for `orphan_grace_s` (their workflow is gone)."""
        now = time.monotonic()
        for sid, term in list(self.manager.terminals.items()):
            if term.leases == 0 and now - term.unleased_since > self.settings.orphan_grace_s:
                log.warning("terminal %s has been unsupervised for %.0fs: stopping it", sid,
                            now - term.unleased_since)
                await self._close(sid)

    def _session(self, session_id: str) -> ClientSession:
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = ClientSession(session_id, self.parts)
        return session

    async def _close(self, session_id: str) -> None:
        """End a session, the same way whoever ends it (a record is made for a session this
        process did not start: its terminal may still be here)."""
        session = self.sessions.pop(session_id, None) or ClientSession(session_id, self.parts)
        await session.close()

    async def aclose(self) -> None:
        """Stop listening for hooks (the worker is shutting down)."""
        for agent in self.agents.values():
            await agent.close()

    def _agent_of(self, profile: AgentProfile) -> AgentIntegration | None:
        """The agent package that drives the profile's agent (None: a terminal typed to).
        `hooks` on a profile of no agent kind (one built in code) meant Claude Code's before
        there were kinds, and still does."""
        return self.agents.get(profile.kind, self.claude) if profile.hooks else None

    async def adopt_kept(self) -> list[str]:
        """Take up the live agents a worker of this machine left (it died, or was restarted:
        kept.py): each one's terminal, and for an agent with hooks its driver, listening on
        the hook socket its relays name. Their sessions re-attach (reattach_agent); an agent
        whose hooks cannot be taken up is stopped, and its session restarts. Returns the ids."""
        async def take_up(sid: str) -> bool:
            term = self.manager.get(sid)
            agent = self._agent_of(term.profile) if term is not None else None
            if term is None or agent is None:
                return term is not None
            try:
                driver = await agent.adopt(term)
            except (OSError, KeyError, TerminalError) as err:
                log.warning("cannot drive %s's adopted agent (%s): stopping it", sid, err)
                await self._close(sid)
                return False
            office_id = term.meta.get("office_id")
            if self.usage is not None and office_id:
                driver.tap = await self.usage.track(sid, office_id, agent.usage_source)
            return True

        ids = await self.manager.adopt_kept()
        # at once: each waits a moment for its agent to draw its screen again
        taken = await asyncio.gather(*(take_up(sid) for sid in ids))
        return [sid for sid, ok in zip(ids, taken, strict=True) if ok]

    def _driver(self, session_id: str, generation: int) -> AgentDriver | None:
        """The session's agent driver (None: a shell agent, typed to as a terminal)."""
        for agent in self.agents.values():
            driver = agent.get(session_id, generation)
            if driver is not None:
                return driver
        return None

    async def _release_agent(self, session_id: str) -> None:
        for agent in self.agents.values():
            await agent.release(session_id)

    def _started(self, term: Terminal) -> StartAgentResult:
        return StartAgentResult(working_dir=str(term.working_dir), pid=term.pid,
                                rows=term.rows, cols=term.cols)

