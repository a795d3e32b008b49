"""SessionManager: the client machine's live terminals, one PTY per session.

asyncio-native: each PTY's fd is read with `loop.add_reader` and each child's exit is seen
through a pidfd, so there is no thread per session. Bytes read go three ways: the session's
OutputMonitor (events), the OutputSink (batched persistence) and a bounded in-memory tail.
When the sink falls behind, reading pauses (the agent blocks on write) instead of memory
growing. Terminate signals the whole process group and escalates to SIGKILL.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ptyprocess import PtyProcess

from activities.output_monitor import MonitorEvent, OutputMonitor, PatternSet
from semo.settings import AgentProfile
from workflows.contracts import NAMED_KEYS

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
TAIL_BYTES = 256 * 1024
#: unsaved bytes per session above which reading pauses (back-pressure)
PAUSE_ABOVE = 4 * 1024 * 1024


class OutputSink(Protocol):
    def append(self, session_id: str, start_offset: int, data: bytes) -> None: ...
    def pending(self, session_id: str) -> int: ...
    async def flush(self, session_id: str | None = None) -> None: ...


EventHandler = Callable[["Terminal", MonitorEvent], Awaitable[None]]


class TerminalError(Exception):
    """A session's terminal is missing or refused an operation."""


@dataclass(eq=False)
class Terminal:
    session_id: str
    generation: int
    agent: str
    profile: AgentProfile
    proc: PtyProcess
    working_dir: Path
    monitor: OutputMonitor
    rows: int
    cols: int
    transcript: object | None = None
    offset: int = 0
    tail: bytearray = field(default_factory=bytearray)
    job_id: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    paused: bool = False
    leases: int = 0
    unleased_since: float = field(default_factory=time.monotonic)
    last_output_at: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()


class SessionManager:
    def __init__(
        self,
        profiles: dict[str, AgentProfile],
        sink: OutputSink,
        on_event: EventHandler | None = None,
        *,
        transcripts_dir: Path | None = None,
        rows: int = 40,
        cols: int = 120,
        kill_grace_s: float = 3.0,
    ) -> None:
        self.profiles = profiles
        self.sink = sink
        self.on_event = on_event
        self.transcripts_dir = transcripts_dir
        self.rows, self.cols = rows, cols
        self.kill_grace_s = kill_grace_s
        self.terminals: dict[str, Terminal] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- the seed's operations ------------------------------------------------------------

    async def create(self, session_id: str, working_dir: Path, agent: str, *,
                     generation: int = 0, extra_env: dict[str, str] | None = None) -> Terminal:
        profile = self.profiles.get(agent)
        if profile is None:
            raise TerminalError(f"unknown agent profile {agent!r}")
        old = self.terminals.get(session_id)
        if old is not None:
            await self.terminate(session_id)
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor",
               **profile.env, **(extra_env or {}), "SEMO_SESSION_ID": session_id}
        for var in ("VIRTUAL_ENV", "PYTHONPATH"):  # the worker's own, not the agent's
            env.pop(var, None)
        loop = asyncio.get_running_loop()
        # Spawned on the loop's thread on purpose: fork+exec takes about a millisecond, and
        # a child's parent-death signal is tied to the thread that forked it.
        proc = PtyProcess.spawn(profile.argv, cwd=str(working_dir), env=env,
                                dimensions=(self.rows, self.cols))
        term = Terminal(
            session_id=session_id, generation=generation, agent=agent, profile=profile,
            proc=proc, working_dir=working_dir,
            monitor=OutputMonitor(PatternSet.for_agent(profile.monitor)),
            rows=self.rows, cols=self.cols,
        )
        if self.transcripts_dir is not None:
            self.transcripts_dir.mkdir(parents=True, exist_ok=True)
            term.transcript = open(self.transcripts_dir / f"{session_id}.log", "ab", buffering=0)
        self.terminals[session_id] = term
        os.set_blocking(proc.fd, False)
        loop.add_reader(proc.fd, self._on_readable, term)
        self._watch_exit(term)
        self._spawn(self._deliver_events(term))
        return term

    def get(self, session_id: str) -> Terminal | None:
        return self.terminals.get(session_id)

    def require(self, session_id: str) -> Terminal:
        term = self.terminals.get(session_id)
        if term is None or not term.alive:
            raise TerminalError(f"session {session_id} has no live terminal on this machine")
        return term

    async def execute(self, session_id: str, text: str, *, job_id: str | None = None) -> None:
        """Type `text` so that the agent receives it as one submitted message."""
        term = self.require(session_id)
        term.job_id = job_id
        term.monitor.expect_echo(text)
        if term.profile.input_mode == "paste":
            # Bracketed paste keeps a multi-line prompt one message; the TUI needs a moment
            # to take the paste in before Enter submits it.
            await self._write(term, b"\x1b[200~" + text.encode() + b"\x1b[201~")
            await asyncio.sleep(term.profile.submit_delay_s)
            await self._write(term, b"\r")
        else:
            await self._write(term, text.encode() + b"\r")

    async def send_keystrokes(self, session_id: str, keys: list[str], text: str | None = None) -> None:
        term = self.require(session_id)
        data = b"".join(NAMED_KEYS[k.lower()].encode() for k in keys)
        if text:
            term.monitor.expect_echo(text)
            data += text.encode()
        await self._write(term, data)

    def get_output(self, session_id: str, since: int = 0) -> tuple[int, bytes]:
        """(start offset, bytes) of what is still in the in-memory tail from `since` on."""
        term = self.terminals.get(session_id)
        if term is None:
            raise TerminalError(f"unknown session {session_id}")
        tail_start = term.offset - len(term.tail)
        start = max(since, tail_start)
        return start, bytes(term.tail[start - tail_start:])

    def resize(self, session_id: str, rows: int, cols: int) -> None:
        term = self.require(session_id)
        term.proc.setwinsize(rows, cols)
        term.rows, term.cols = rows, cols

    async def terminate(self, session_id: str) -> Terminal | None:
        """Stop the agent's whole process group: SIGHUP+SIGTERM, then SIGKILL after a grace."""
        term = self.terminals.get(session_id)
        if term is None:
            return None
        term.stopping = True
        if term.alive:
            _signal_group(term.pid, signal.SIGHUP)
            _signal_group(term.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(term.exited.wait(), self.kill_grace_s)
            except asyncio.TimeoutError:
                pass
            _signal_group(term.pid, signal.SIGKILL)  # stragglers in the group, even if the leader left
            await term.exited.wait()
        await self.sink.flush(session_id)
        self.terminals.pop(session_id, None)
        return term

    async def close_all(self) -> None:
        await asyncio.gather(*(self.terminate(sid) for sid in list(self.terminals)),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    # --- reading ---------------------------------------------------------------------------

    def _on_readable(self, term: Terminal) -> None:
        try:
            data = os.read(term.proc.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:  # EIO: the slave side closed (Linux's EOF for a PTY)
            if err.errno not in (errno.EIO, errno.EBADF):
                log.warning("read error on %s: %s", term.session_id, err)
            data = b""
        if not data:
            self._stop_reading(term)
            return
        self._take(term, data)

    def _take(self, term: Terminal, data: bytes) -> None:
        start = term.offset
        term.offset += len(data)
        term.last_output_at = time.monotonic()
        term.tail += data
        if len(term.tail) > TAIL_BYTES:
            del term.tail[: len(term.tail) - TAIL_BYTES]
        if term.transcript is not None:
            term.transcript.write(data)
        self.sink.append(term.session_id, start, data)
        for ev in term.monitor.feed(data):
            term.events.put_nowait((term.job_id, ev))
        if self.sink.pending(term.session_id) > PAUSE_ABOVE and not term.paused:
            term.paused = True
            asyncio.get_running_loop().remove_reader(term.proc.fd)
            self._spawn(self._resume_after_flush(term))

    async def _resume_after_flush(self, term: Terminal) -> None:
        await self.sink.flush(term.session_id)
        term.paused = False
        if not term.exited.is_set() and not term.proc.closed:
            asyncio.get_running_loop().add_reader(term.proc.fd, self._on_readable, term)

    def _stop_reading(self, term: Terminal) -> None:
        try:
            asyncio.get_running_loop().remove_reader(term.proc.fd)
        except (ValueError, OSError):
            pass

    async def _deliver_events(self, term: Terminal) -> None:
        """Hand monitor events to the handler in order, after the output they refer to is saved."""
        while True:
            item = await term.events.get()
            if item is None:  # the terminal is gone
                return
            job_id, ev = item
            if self.on_event is None:
                continue
            try:
                await self.sink.flush(term.session_id)
                await self.on_event(term, ev if job_id is None else _with_job(ev, job_id))
            except Exception:
                log.exception("delivering %s for %s failed", ev.kind, term.session_id)

    # --- exit -----------------------------------------------------------------------------

    def _watch_exit(self, term: Terminal) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(term.pid)

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._spawn(self._reap(term))

        loop.add_reader(pidfd, on_exit)

    async def _reap(self, term: Terminal) -> None:
        try:
            _, status = os.waitpid(term.pid, 0)
        except ChildProcessError:
            status = 0
        if os.WIFSIGNALED(status):
            term.exit_signal = os.WTERMSIG(status)
        else:
            term.exit_code = os.WEXITSTATUS(status)
        # drain what the agent wrote before it exited (bounded: a surviving grandchild could
        # write forever), then close the PTY
        self._stop_reading(term)
        for _ in range(64):
            try:
                data = os.read(term.proc.fd, READ_SIZE)
            except OSError:
                break
            if not data:
                break
            self._take(term, data)
        _signal_group(term.pid, signal.SIGKILL)  # nothing of the session outlives its leader
        term.proc.terminated = True
        try:
            term.proc.fileobj.close()
        except OSError:
            pass
        term.proc.closed = True
        if term.transcript is not None:
            term.transcript.close()
        term.events.put_nowait(None)
        term.exited.set()

    # --- plumbing --------------------------------------------------------------------------

    async def _write(self, term: Terminal, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(term.proc.fd, view)
                view = view[n:]
            except BlockingIOError:
                await asyncio.sleep(0.005)
            except OSError as err:
                raise TerminalError(f"session {term.session_id}'s terminal is closed") from err

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _with_job(ev: MonitorEvent, job_id: str) -> MonitorEvent:
    return MonitorEvent(kind=ev.kind, data={**ev.data, "job_id": job_id}, offset=ev.offset)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
