"""Client-machine activities, served on `semo-machine-{machine_id}`.

They are the server's only way to touch this machine, and they refuse what the machine's
own configuration does not allow: agents outside its profiles, directories outside its
workspace roots, and any environment or command line from the server (it names a profile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.output_monitor import MonitorEvent
from activities.session_manager import SessionManager, Terminal, TerminalError
from activities.workspace import WorkspaceError, resolve_working_dir
from semo.settings import Settings
from workflows.contracts import (
    MonitorSignal,
    SendInput,
    StartAgentInput,
    StartAgentResult,
    StopAgentInput,
    WatchAgentInput,
    WatchAgentResult,
)

log = logging.getLogger(__name__)

_RPC_TIMEOUT = timedelta(seconds=10)


class ClientActivities:
    def __init__(self, settings: Settings, manager: SessionManager, client: Client) -> None:
        self.settings = settings
        self.manager = manager
        self.client = client
        self.roots = settings.resolved_workspace_roots
        self.workflow_ids: dict[str, str] = {}
        manager.on_event = self._on_monitor_event

    @activity.defn(name="start_agent")
    async def start_agent(self, inp: StartAgentInput) -> StartAgentResult:
        term = self.manager.get(inp.session_id)
        if term is not None and term.alive and term.generation == inp.generation:
            return self._started(term)  # a continued-as-new run taking over
        if inp.agent not in self.manager.profiles:
            raise ApplicationError(
                f"agent {inp.agent!r} is not a profile on machine {self.settings.machine_id} "
                f"(configured: {', '.join(sorted(self.manager.profiles))})",
                type="UnknownAgent", non_retryable=True)
        try:
            working_dir = resolve_working_dir(inp.working_dir, self.roots, inp.office_id,
                                              inp.session_id)
        except WorkspaceError as err:
            raise ApplicationError(str(err), type="InvalidWorkingDir", non_retryable=True) from err
        self.workflow_ids[inp.session_id] = inp.workflow_id
        try:
            term = await self.manager.create(inp.session_id, working_dir, inp.agent,
                                             generation=inp.generation)
        except (OSError, TerminalError) as err:
            raise ApplicationError(f"could not start {inp.agent}: {err}", type="SpawnFailed") from err
        return self._started(term)

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
                except asyncio.TimeoutError:
                    pass
        finally:
            term.leases -= 1
            if term.leases == 0:
                term.unleased_since = time.monotonic()
        return WatchAgentResult(exit_code=term.exit_code, signal=term.exit_signal,
                                reason="terminated" if term.stopping else "exited")

    @activity.defn(name="send_input")
    async def send_input(self, inp: SendInput) -> None:
        term = self.manager.get(inp.session_id)
        if term is None or not term.alive or term.generation != inp.generation:
            raise ApplicationError(f"session {inp.session_id} has no live terminal here",
                                   type="NoTerminal", non_retryable=True)
        try:
            if inp.keys or inp.text:
                await self.manager.send_keystrokes(inp.session_id, inp.keys, inp.text)
            if inp.prompt is not None:
                await self.manager.execute(inp.session_id, inp.prompt, job_id=inp.job_id)
        except TerminalError as err:
            raise ApplicationError(str(err), type="NoTerminal", non_retryable=True) from err

    @activity.defn(name="stop_agent")
    async def stop_agent(self, inp: StopAgentInput) -> None:
        await self.manager.terminate(inp.session_id)
        self.workflow_ids.pop(inp.session_id, None)

    # --- events to the workflow --------------------------------------------------------------

    async def _on_monitor_event(self, term: Terminal, ev: MonitorEvent) -> None:
        workflow_id = self.workflow_ids.get(term.session_id)
        if workflow_id is None:
            return
        data = dict(ev.data)
        job_id = data.pop("job_id", None)
        signal = MonitorSignal(kind=ev.kind, generation=term.generation, job_id=job_id,
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
                await self.manager.terminate(sid)
                self.workflow_ids.pop(sid, None)

    def _started(self, term: Terminal) -> StartAgentResult:
        return StartAgentResult(working_dir=str(term.working_dir), pid=term.pid,
                                rows=term.rows, cols=term.cols)

