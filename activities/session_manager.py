"""SessionManager: the client machine's live terminals, one PTY per session.

asyncio-native: each PTY's fd is read with `loop.add_reader` and each process's exit is
seen through a pidfd, so there is no thread per session, and one timer serves every session
(stall checks, adopting orphans). Bytes read go three ways, in batches of up to 128 KiB or
4 ms: the session's OutputMonitor (events), the OutputSink (batched persistence, with byte
offsets that continue across restarts of the session) and a bounded in-memory tail, plus a
transcript file per session. When the sink falls behind, reading pauses (the agent blocks
on write) instead of memory growing.

Process hygiene (Linux):
  * Every agent process inherits `SEMO_SESSION_ID` and `SEMO_WORKER` (this worker's pid,
    start time and manager) from the agent, and the agent dies with this worker (PR_SET_PDEATHSIG,
    armed in the child before exec; its descendants get the terminal's hangup, and the next
    worker kills what is left: `sweep_strays`).
  * The client worker process is a child subreaper (`become_subreaper()`, called by its
    entry point: it is a property of the whole process): a descendant whose parent dies (a
    double-forking daemon, a background job of a shell that exited) is re-parented here
    instead of to init, so the session's processes are always this worker's descendants:
    the leader's process tree plus its adopted orphans, told apart from the worker's other
    children by session id or environment marker, and reaped here. In a process that is
    not a subreaper (a test runner embedding the manager), escaped processes are found by
    scanning /proc for the session's marker instead, and init reaps them.
  * terminate: SIGHUP+SIGTERM to the leader's process group and to every other process of
    the session (escaped ones too), SIGKILL after `kill_grace_s`; nothing of a session
    outlives its leader. Every process is held by a pidfd while it is signalled, so a
    recycled pid is never hit, and only processes known to be the session's are reaped
    (`waitid(P_PIDFD)`), so other children's exit statuses (asyncio subprocesses) are
    never taken.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import itertools
import logging
import os
import resource
import select
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ptyprocess import PtyProcess

from activities.output_monitor import MonitorEvent, OutputMonitor, PatternSet
from semo import procfs
from semo.settings import AgentProfile
from workflows.contracts import NAMED_KEYS

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
#: reads are gathered and handed on (monitor, sink, tail) once this many bytes wait ...
PROCESS_BYTES = 128 * 1024
#: ... or this long after the first of them: a flood arrives in reads of ~4 KiB
PROCESS_DELAY_S = 0.004
#: reads per wake-up at most (Linux hands a PTY's output over ~4 KiB per read; reading on
#: while there is more saves a trip through the event loop per read, without letting one
#: flooding terminal starve the others: 32 reads are ~2 ms under a flood). With 16 reads
#: and 64 KiB batches a flood was read ~20% slower (bench_terminal, alternating runs).
READS_PER_WAKEUP = 32
#: the in-memory tail of each session (get_output); trimmed in steps of TAIL_SLACK
TAIL_BYTES = 256 * 1024
TAIL_SLACK = 64 * 1024
#: a write waiting for a terminal that does not read checks this often whether it closed
WRITE_RECHECK_S = 0.5
#: the one timer: stall checks and adopting orphans, for every session at once
TICK_S = 1.0
#: monitor events waiting for delivery per session beyond which new ones are dropped
MAX_QUEUED_EVENTS = 1000
#: processes tracked per session (a fork bomb is still killed by its process group)
MAX_MEMBERS = 4096
#: variables of the worker's environment that agents do not inherit (a profile may still set them)
WORKER_ONLY_ENV = ("SEMO_", "SUPABASE_", "TEMPORAL_")
#: signals the worker may ignore (Python ignores SIGPIPE and SIGXFSZ; nohup ignores SIGHUP)
#: whose ignoring an exec'd agent would inherit: reset to their defaults in the child
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT,
                    signal.SIGQUIT, signal.SIGTERM, signal.SIGTSTP, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGCHLD)

_instances = itertools.count(1)  # several managers in one process tell their agents apart
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it


class OutputSink(Protocol):
    """Where a session's output goes (PgOutputStore; tests use an in-memory one)."""

    def append(self, session_id: str, start_offset: int, data: bytes) -> None: ...
    def pending(self, session_id: str) -> int: ...
    async def flush(self, session_id: str | None = None) -> None: ...
    #: reading from the session's terminal should pause (too much unsaved output)
    def congested(self, session_id: str) -> bool: ...
    #: return once the session is no longer congested
    async def wait_drained(self, session_id: str) -> None: ...
    #: the end of what is stored for the session: a new terminal's output continues there
    async def end_offset(self, session_id: str) -> int: ...
    #: the session's terminal is gone (pending bytes are still written)
    def forget(self, session_id: str) -> None: ...


EventHandler = Callable[["Terminal", MonitorEvent], Awaitable[None]]


class TerminalError(Exception):
    """A session's terminal is missing or refused an operation."""


class _Pty(PtyProcess):
    """PtyProcess without its closing on garbage collection (which sleeps, and would reap
    the child behind our back): the SessionManager closes and reaps explicitly."""

    #: the instance the running spawn() made: reaped by `_spawn` when exec fails
    last: _Pty | None = None

    def __init__(self, pid: int, fd: int) -> None:
        super().__init__(pid, fd)
        _Pty.last = self

    def __del__(self) -> None:
        pass


@dataclass(eq=False)
class _Member:
    """A process of a session other than its leader, held by a pidfd."""

    pid: int
    fd: int
    softened: bool = False  # got SIGHUP/SIGTERM
    exited: bool = False

    def send(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except OSError:  # gone already
            pass

    def has_exited(self) -> bool:
        if not self.exited:
            self.exited = _pidfd_exited(self.fd)
        return self.exited


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
    pidfd: int = -1
    transcript: object | None = None
    #: stream offset where this terminal's output starts (after earlier generations')
    base_offset: int = 0
    #: stream offset just after the last byte handed on (monitor, sink, tail)
    offset: int = 0
    tail: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)
    job_id: str | None = None
    #: a prompt was typed and neither its completion nor an error was seen yet
    busy: bool = False
    #: the agent asked a question that no input has answered yet (not a stall)
    waiting: bool = False
    exit_code: int | None = None
    exit_signal: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    #: set whenever output is handed on and when the terminal closes (cleared by a reader)
    output: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    paused: bool = False
    reading: bool = False
    eof: bool = False
    closed: bool = False
    leader_exited: bool = False
    kill_at: float | None = None
    members: dict[int, _Member] = field(default_factory=dict)
    leases: int = 0
    unleased_since: float = field(default_factory=time.monotonic)
    last_output_at: float = field(default_factory=time.monotonic)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    dropped_events: int = 0
    process_handle: asyncio.TimerHandle | None = None
    escalation: asyncio.Task | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def fd(self) -> int:
        return self.proc.fd

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
        stall_after_s: float | None = None,
        tick_s: float = TICK_S,
        hygiene: bool = True,
    ) -> None:
        """`hygiene`: raise this process's open-file limit and kill agents left behind by a
        dead worker (what a client worker wants)."""
        self.profiles = profiles
        self.sink = sink
        self.on_event = on_event
        self.transcripts_dir = transcripts_dir
        self.rows, self.cols = rows, cols
        self.kill_grace_s = kill_grace_s
        self.stall_after_s = stall_after_s
        self.tick_s = tick_s
        self.terminals: dict[str, Terminal] = {}
        self.draining = False
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self._creating: dict[str, list] = {}  # session id -> [lock, users]
        self._members: dict[int, Terminal] = {}  # pid -> the session it belongs to
        self._foreign: set[int] = set()  # children of this process that are not agents'
        self._pid = os.getpid()
        self._sid = os.getsid(0)
        self._token = f"{worker_token(self._pid)}:{next(_instances)}"
        #: whether orphans come here (see the module doc); fixed when the manager is made
        self.subreaper = is_subreaper()
        if hygiene:
            raise_fd_limit()
            killed = sweep_strays()
            if killed:
                log.warning("killed %d agent processes left behind by a dead worker", killed)

    # --- the seed's operations ------------------------------------------------------------

    async def create(self, session_id: str, working_dir: Path, agent: str, *,
                     generation: int = 0, extra_env: dict[str, str] | None = None,
                     extra_args: list[str] | None = None) -> Terminal:
        """Start the agent in a new terminal (replacing the session's old one, if any)."""
        # one at a time per session: a retried start must not race the first attempt
        entry = self._creating.setdefault(session_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._create(session_id, working_dir, agent, generation,
                                          extra_env, extra_args)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._creating[session_id]

    async def _create(self, session_id: str, working_dir: Path, agent: str, generation: int,
                      extra_env: dict[str, str] | None, extra_args: list[str] | None) -> Terminal:
        profile = self.profiles.get(agent)
        if profile is None:
            raise TerminalError(f"unknown agent profile {agent!r}")
        old = self.terminals.get(session_id)
        if old is not None:
            await self.terminate(session_id)
        base = await self.sink.end_offset(session_id)
        # the worker's own configuration (database URL, JWT secret, Supabase and Temporal keys)
        # is not the agent's: an agent can print its environment into the session's output
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(WORKER_ONLY_ENV)}
        env = {**inherited, "TERM": "xterm-256color", "COLORTERM": "truecolor",
               **profile.env, **(extra_env or {}),
               "SEMO_SESSION_ID": session_id, "SEMO_WORKER": self._token}
        for var in ("VIRTUAL_ENV", "PYTHONPATH"):  # the worker's own, not the agent's
            env.pop(var, None)
        loop = asyncio.get_running_loop()
        # Spawned on the loop's thread on purpose: a child's parent-death signal is tied to
        # the thread that forked it. It blocks until the child has exec'd: a few milliseconds
        # (forking copies this process's page tables).
        proc = _spawn([*profile.argv, *(extra_args or [])], str(working_dir), env,
                      (self.rows, self.cols), self._pid)
        try:
            os.set_inheritable(proc.fd, False)  # forkpty's master is inheritable
            os.set_blocking(proc.fd, False)
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            _kill_and_wait(proc)
            raise
        term = Terminal(
            session_id=session_id, generation=generation, agent=agent, profile=profile,
            proc=proc, working_dir=working_dir, pidfd=pidfd,
            monitor=OutputMonitor(PatternSet.for_agent(profile.monitor),
                                  stall_after_s=self.stall_after_s),
            rows=self.rows, cols=self.cols, base_offset=base, offset=base,
        )
        if self.transcripts_dir is not None:
            try:
                self.transcripts_dir.mkdir(parents=True, exist_ok=True)
                term.transcript = open(self.transcripts_dir / f"{session_id}.log", "ab",
                                       buffering=0)
            except OSError as err:
                log.warning("no transcript for %s: %s", session_id, err)
        self.terminals[session_id] = term
        self._start_reading(term)
        loop.add_reader(pidfd, self._on_leader_exit, term)
        self._spawn(self._deliver_events(term))
        if self._ticker is None or self._ticker.done():
            self._ticker = self._spawn(self._tick_loop())
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
        term.busy, term.waiting = True, False
        if term.profile.input_mode == "paste":
            # Bracketed paste keeps a multi-line prompt one message; the TUI needs a moment
            # to take the paste in before Enter submits it.
            await self._write(term, b"\x1b[200~" + text.encode() + b"\x1b[201~")
            await asyncio.sleep(term.profile.submit_delay_s)
            await self._write(term, b"\r")
        else:
            await self._write(term, text.encode() + b"\r")

    async def send_keystrokes(
        self, session_id: str, keys: list[str], text: str | None = None
    ) -> None:
        """Type `text`, then press `keys`, in one write: in the order people type them
        (`text="yes", keys=["enter"]` answers a prompt)."""
        term = self.require(session_id)
        try:
            data = b"".join(NAMED_KEYS[k.lower()].encode() for k in keys)
        except KeyError as err:
            raise TerminalError(f"unknown key {err.args[0]!r}") from None
        if text:
            term.monitor.expect_echo(text)
            data = text.encode() + data
        else:
            term.monitor.note_input()  # an answer: the same question may be asked again
        term.waiting = False
        await self._write(term, data)

    def get_output(self, session_id: str, since: int = 0) -> tuple[int, bytes]:
        """(start offset, bytes) of what is still in the in-memory tail from `since` on."""
        term = self.terminals.get(session_id)
        if term is None:
            raise TerminalError(f"unknown session {session_id}")
        self._process(term)
        tail_start = term.offset - len(term.tail)
        start = min(max(since, tail_start), term.offset)
        return start, bytes(term.tail[start - tail_start:])

    def resize(self, session_id: str, rows: int, cols: int) -> None:
        """Set the terminal's size (TIOCSWINSZ); the agent's foreground job gets SIGWINCH."""
        term = self.require(session_id)
        if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
            raise TerminalError(f"terminal size {rows}x{cols} is out of range (1..1000)")
        if term.closed:
            raise TerminalError(f"session {session_id}'s terminal is closed")
        term.proc.setwinsize(rows, cols)
        term.rows, term.cols = rows, cols

    async def terminate(self, session_id: str) -> Terminal | None:
        """Stop the session's processes: SIGHUP+SIGTERM, then SIGKILL after the grace."""
        term = self.terminals.get(session_id)
        if term is None:
            return None
        if not term.stopping:
            term.stopping = True
            if not term.leader_exited:
                term.kill_at = time.monotonic() + self.kill_grace_s
                self._collect(term)  # before anything dies: the escaped ones too
                self._soften(term)
                term.escalation = self._spawn(self._escalate(term))
        await term.exited.wait()
        try:
            await asyncio.wait_for(self.sink.flush(session_id), 10.0)
        except Exception as err:  # Postgres away: the store keeps the bytes and retries
            log.warning("could not save the last output of %s now: %s", session_id, err)
        if self.terminals.get(session_id) is term:
            del self.terminals[session_id]
            self.sink.forget(session_id)
        return term

    def prune_transcripts(self, max_age_s: float, now: float | None = None) -> list[str]:
        """Delete the transcripts of sessions not live here that nothing has written to for
        `max_age_s`; returns their session ids. (A session resumed later starts a new one.)"""
        if self.transcripts_dir is None:
            return []
        cutoff = (time.time() if now is None else now) - max_age_s
        pruned = []
        try:
            entries = list(os.scandir(self.transcripts_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            session_id = entry.name.removesuffix(".log")
            if session_id == entry.name or session_id in self.terminals:
                continue
            try:
                if entry.is_file(follow_symlinks=False) and \
                        entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    pruned.append(session_id)
            except FileNotFoundError:  # gone meanwhile
                pass
        return pruned

    async def close_all(self, *, drain: bool = False) -> None:
        """Stop every agent; `drain`: the worker is shutting down on purpose (sessions are
        told so, and restart without counting it as a failure)."""
        self.draining = self.draining or drain
        await asyncio.gather(*(self.terminate(sid) for sid in list(self.terminals)),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

    # --- reading ---------------------------------------------------------------------------

    def _start_reading(self, term: Terminal) -> None:
        if not (term.reading or term.paused or term.eof or term.closed):
            asyncio.get_running_loop().add_reader(term.fd, self._on_readable, term)
            term.reading = True

    def _stop_reading(self, term: Terminal) -> None:
        if term.reading:
            term.reading = False
            asyncio.get_running_loop().remove_reader(term.fd)

    def _on_readable(self, term: Terminal) -> None:
        inbuf = term.inbuf
        for _ in range(READS_PER_WAKEUP):
            try:
                data = os.read(term.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as err:  # EIO: every slave fd closed (Linux's EOF for a PTY)
                if err.errno not in (errno.EIO, errno.EBADF):
                    log.warning("read error on %s: %s", term.session_id, err)
                data = b""
            if not data:
                self._stop_reading(term)
                term.eof = True
                self._process(term)
                return
            inbuf += data
            if len(inbuf) >= PROCESS_BYTES:
                self._process(term)  # may pause reading
                return
        if inbuf and term.process_handle is None:
            term.process_handle = asyncio.get_running_loop().call_later(
                PROCESS_DELAY_S, self._process, term)

    def _process(self, term: Terminal) -> None:
        """Hand the gathered reads on: offsets, tail, transcript, sink, monitor."""
        if term.process_handle is not None:
            term.process_handle.cancel()
            term.process_handle = None
        data = term.inbuf
        if not data:
            return
        term.inbuf = bytearray()
        now = time.monotonic()
        start = term.offset
        term.offset += len(data)
        term.last_output_at = now
        tail = term.tail
        tail += data
        if len(tail) > TAIL_BYTES + TAIL_SLACK:
            del tail[: len(tail) - TAIL_BYTES]
        if term.transcript is not None:
            self._write_transcript(term, data)
        self.sink.append(term.session_id, start, data)  # type: ignore[arg-type]
        try:
            events = term.monitor.feed(data, now)  # type: ignore[arg-type]
        except Exception:  # a monitor bug must not stop the terminal
            log.exception("output monitor failed on %s", term.session_id)
            events = []
        for ev in events:
            self._queue_event(term, ev)
        term.output.set()
        if not term.paused and self.sink.congested(term.session_id):
            term.paused = True
            self._stop_reading(term)
            self._spawn(self._resume_when_drained(term))

    def _write_transcript(self, term: Terminal, data: bytearray) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[term.transcript.write(view):]  # type: ignore[attr-defined]
        except OSError as err:  # disk full, ...: the database copy goes on
            log.warning("transcript of %s stopped: %s", term.session_id, err)
            term.transcript.close()  # type: ignore[attr-defined]
            term.transcript = None

    async def _resume_when_drained(self, term: Terminal) -> None:
        while True:
            try:
                await self.sink.wait_drained(term.session_id)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("waiting for %s's output to be saved", term.session_id)
                await asyncio.sleep(1.0)
        term.paused = False
        self._start_reading(term)

    def _drain(self, term: Terminal) -> None:
        """Read what the agent wrote before it exited (bounded: a process that outlived the
        sweep could write forever)."""
        for _ in range(64):
            if term.eof or term.closed:
                break
            try:
                data = os.read(term.fd, READ_SIZE)
            except OSError:
                break
            if not data:
                break
            term.inbuf += data
        self._process(term)

    # --- events ------------------------------------------------------------------------------

    def _queue_event(self, term: Terminal, ev: MonitorEvent) -> None:
        if ev.kind in ("completion", "error"):
            term.busy = False
        elif ev.kind == "waiting_input":
            term.waiting = True
        if term.events.qsize() >= MAX_QUEUED_EVENTS:
            term.dropped_events += 1
            if term.dropped_events in (1, 100, 10_000):
                log.warning("%s: %d monitor events dropped (delivery is behind)",
                            term.session_id, term.dropped_events)
            return
        ev = dataclasses.replace(ev, offset=ev.offset + term.base_offset)
        term.events.put_nowait((term.job_id, ev))

    async def _deliver_events(self, term: Terminal) -> None:
        """Hand monitor events to the handler in order, after the output they refer to is saved."""
        while True:
            item = await term.events.get()
            if item is None:  # the terminal is gone
                return
            job_id, ev = item
            if self.on_event is None:
                continue
            if job_id is not None:
                ev = dataclasses.replace(ev, data={**ev.data, "job_id": job_id})
            for attempt in range(4):
                try:
                    await self.sink.flush(term.session_id)
                    break
                except Exception as err:  # deliver anyway in the end: the bytes come later
                    log.warning("saving output before %s of %s: %s", ev.kind, term.session_id, err)
                    await asyncio.sleep(0.5 * 2 ** attempt)
            for attempt in range(3):
                try:
                    await self.on_event(term, ev)
                    break
                except Exception:
                    log.exception("delivering %s for %s failed (attempt %d)", ev.kind,
                                  term.session_id, attempt + 1)
                    await asyncio.sleep(0.5 * 2 ** attempt)

    # --- the timer -----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while self.terminals:
            await asyncio.sleep(self.tick_s)
            try:
                self._tick(time.monotonic())
            except Exception:
                log.exception("session tick failed")

    def _tick(self, now: float) -> None:
        for term in list(self.terminals.values()):
            if term.leader_exited:
                continue
            ev = term.monitor.check_stall(now, term.busy and not term.waiting)
            if ev is not None:
                self._queue_event(term, ev)
        if self.subreaper:
            self._adopt_orphans()

    # --- exit --------------------------------------------------------------------------------

    def _on_leader_exit(self, term: Terminal) -> None:
        asyncio.get_running_loop().remove_reader(term.pidfd)
        term.leader_exited = True
        self._spawn(self._finish(term))

    def _soften(self, term: Terminal) -> None:
        """SIGHUP+SIGTERM (and SIGCONT, for stopped ones) to the leader's group and to the
        session's other processes."""
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGCONT):
            _killpg(term.pid, sig)
        for m in list(term.members.values()):
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGCONT):
                m.send(sig)
            m.softened = True

    async def _escalate(self, term: Terminal) -> None:
        """Repeat the soft signals a few times during the grace (a shell that gets SIGHUP
        while it is still starting up loses it), then SIGKILL."""
        started = time.monotonic()
        for at in (0.02, 0.1, 0.4, 1.0):
            await asyncio.sleep(max(0.0, min(started + at, term.kill_at) - time.monotonic()))
            if term.leader_exited or time.monotonic() >= term.kill_at:
                break
            self._soften(term)
        await asyncio.sleep(max(0.0, term.kill_at - time.monotonic()))
        self._kill_leader(term)

    def _kill_leader(self, term: Terminal) -> None:
        """The grace is over: SIGKILL the group, the leader and every process of the session."""
        if term.leader_exited:
            return
        _killpg(term.pid, signal.SIGKILL)
        try:
            signal.pidfd_send_signal(term.pidfd, signal.SIGKILL)
        except OSError:
            pass
        for m in list(term.members.values()):
            m.send(signal.SIGKILL)

    async def _finish(self, term: Terminal) -> None:
        """The leader is gone: sweep the rest of the session, reap, close, tell waiters."""
        try:
            if term.kill_at is None:
                term.kill_at = time.monotonic() + self.kill_grace_s
            await self._sweep(term)
        except Exception:
            log.exception("sweeping %s's processes failed", term.session_id)
        finally:
            self._close(term)

    async def _sweep(self, term: Terminal) -> None:
        """Signal the session's remaining processes until none is left: SIGHUP+SIGTERM
        first, SIGKILL from `kill_at` on. Then reap those that are this process's children."""
        delay = 0.002
        while True:
            self._collect(term)
            live = [m for m in term.members.values() if not m.has_exited()]
            if not live:
                break
            now = time.monotonic()
            hard = now >= term.kill_at
            if hard:
                _killpg(term.pid, signal.SIGKILL)  # the leader is a zombie: its pid is still ours
            for m in live:
                if hard:
                    m.send(signal.SIGKILL)
                elif not m.softened:
                    m.send(signal.SIGHUP)
                    m.send(signal.SIGTERM)
                    m.send(signal.SIGCONT)
                    m.softened = True
            wait = delay if hard else min(delay, max(term.kill_at - now, 0.0))
            await asyncio.sleep(wait)
            delay = min(delay * 2, 0.1)
        # Every tracked process has exited, so each re-parenting among them is done: what is
        # not reaped yet is a zombie child of this process (or was reaped by its parent).
        for m in list(term.members.values()):
            self._drop_member(term, m, reap=True)
        # and zombies of the session nobody tracked (exited before anyone looked)
        for pid in _own_children():
            if pid != term.pid and pid not in self._members:
                st = _stat(pid)
                if st is not None and st[0] == b"Z" and st[3] == term.pid:
                    _reap_pid(pid)

    def _close(self, term: Terminal) -> None:
        if term.escalation is not None and term.escalation is not asyncio.current_task():
            term.escalation.cancel()
            term.escalation = None
        self._drain(term)
        self._stop_reading(term)
        try:
            res = os.waitid(os.P_PIDFD, term.pidfd, os.WEXITED)
        except ChildProcessError:
            res = None
        if res is not None:
            if res.si_code == os.CLD_EXITED:
                term.exit_code = res.si_status
            else:
                term.exit_signal = res.si_status
        os.close(term.pidfd)
        term.closed = True
        term.proc.terminated = True
        try:
            term.proc.fileobj.close()  # the PTY's master fd
        except OSError:
            pass
        term.proc.closed = True
        if term.transcript is not None:
            term.transcript.close()  # type: ignore[attr-defined]
            term.transcript = None
        term.events.put_nowait(None)
        term.exited.set()
        term.output.set()

    # --- the session's processes -----------------------------------------------------------

    def _collect(self, term: Terminal) -> None:
        """Track (by pidfd) every live process of the session: the leader's tree, and the
        orphans this subreaper adopted that carry the session's id."""
        stack = [term.pid, *term.members]
        leaders = self._leaders()
        if self.subreaper:
            for pid in _own_children():
                if pid not in leaders and pid not in self._members and \
                        pid not in self._foreign and self._classify(pid, leaders) is term:
                    stack.append(pid)
        else:  # escaped processes went to init: find them by their marker
            stack.extend(_marked(term.session_id, self._token))
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            if pid != term.pid and pid not in term.members and not self._track(term, pid):
                continue
            stack.extend(_children(pid))

    def _track(self, term: Terminal, pid: int) -> bool:
        if len(term.members) >= MAX_MEMBERS:
            return False
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone
            return False
        m = _Member(pid, fd)
        term.members[pid] = m
        self._members[pid] = term
        asyncio.get_running_loop().add_reader(fd, self._on_member_exit, term, m)
        return True

    def _on_member_exit(self, term: Terminal, m: _Member) -> None:
        asyncio.get_running_loop().remove_reader(m.fd)
        m.exited = True
        # A child of this process (an adopted orphan) is reaped now; any other is reaped by
        # its parent, or re-parented here when that dies: the sweep reaps it then.
        try:
            os.waitid(os.P_PIDFD, m.fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return  # kept until the sweep: it may still become a zombie child of ours
        self._drop_member(term, m, reap=False)

    def _drop_member(self, term: Terminal, m: _Member, *, reap: bool) -> None:
        if reap:
            try:
                os.waitid(os.P_PIDFD, m.fd, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                pass
        # always: `has_exited()` sets `exited` without removing the reader, and an fd closed
        # while still registered leaves a stale selector entry that silently swallows the
        # next fd given the same number (an asyncio subprocess pipe never reads EOF)
        try:
            asyncio.get_running_loop().remove_reader(m.fd)
        except (ValueError, OSError):
            pass
        os.close(m.fd)
        term.members.pop(m.pid, None)
        if self._members.get(m.pid) is term:
            del self._members[m.pid]

    def _leaders(self) -> dict[int, Terminal]:
        return {t.pid: t for t in self.terminals.values() if not t.closed}

    def _owner(self, pid: int, leaders: dict[int, Terminal]) -> Terminal | str | None:
        """Whose is this child of ours: a session's (its Terminal), "stray" (an agent process
        of ours whose session is gone), "orphan" (a zombie that no fork of ours made: it was
        re-parented here), or None (the worker's own child)."""
        st = _stat(pid)
        if st is None:
            return None
        state, _ppid, _pgrp, sid = st
        if sid in leaders:
            return leaders[sid]
        env = _environ(pid)
        if env.get(b"SEMO_WORKER") == self._token.encode():
            owner = self.terminals.get(env.get(b"SEMO_SESSION_ID", b"").decode(errors="replace"))
            return owner if owner is not None and not owner.closed else "stray"
        # A process this one forked is in its session or leads its own (setsid); a zombie in
        # any other session was adopted (its environment is gone with its memory).
        if state == b"Z" and sid not in (self._sid, pid):
            return "orphan"
        return None

    def _classify(self, pid: int, leaders: dict[int, Terminal]) -> Terminal | str | None:
        owner = self._owner(pid, leaders)
        if owner is None:
            self._foreign.add(pid)  # not looked at again while it lives
        return owner

    def _adopt_orphans(self) -> None:
        """Track orphans re-parented to this subreaper, so they are reaped when they exit."""
        children = _own_children()
        self._foreign &= children
        leaders = self._leaders()
        for pid in children:
            if pid in leaders or pid in self._members or pid in self._foreign:
                continue
            owner = self._classify(pid, leaders)
            if isinstance(owner, Terminal):
                self._track(owner, pid)
            elif owner == "stray":
                log.warning("killing process %d of a session that is gone", pid)
                try:
                    os.kill(pid, signal.SIGKILL)  # our child: its pid cannot be recycled yet
                except OSError:
                    pass
                self._foreign.add(pid)  # reaped next round, as an orphan zombie
            elif owner == "orphan":
                _reap_pid(pid)
        for pid in list(self._foreign):  # strays killed last round are zombies now
            st = _stat(pid)
            if st is not None and st[0] == b"Z" and self._owner(pid, leaders) == "orphan":
                _reap_pid(pid)
                self._foreign.discard(pid)

    # --- plumbing --------------------------------------------------------------------------

    async def _write(self, term: Terminal, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # checked before every write: a closed terminal's fd number may be reused already
            if term.closed:
                raise TerminalError(f"session {term.session_id}'s terminal is closed")
            try:
                n = os.write(term.fd, view)
                view = view[n:]
            except BlockingIOError:  # the agent is not reading: wait until it has room
                await _writable(term.fd, WRITE_RECHECK_S)
            except OSError as err:
                raise TerminalError(f"session {term.session_id}'s terminal is closed") from err

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _writable(fd: int, timeout: float) -> None:
    """Return once `fd` can take more bytes, or after `timeout` (the caller checks again)."""
    loop = asyncio.get_running_loop()
    room = loop.create_future()
    loop.add_writer(fd, lambda: room.done() or room.set_result(None))  # type: ignore[func-returns-value]
    try:
        await asyncio.wait_for(room, timeout)
    except TimeoutError:
        pass
    finally:
        loop.remove_writer(fd)


# --- processes (Linux) ------------------------------------------------------------------------


def become_subreaper(on: bool = True) -> bool:
    """Make orphaned descendants of this process its children instead of init's (for the
    client worker's process; a SessionManager made afterwards adopts and reaps its
    sessions' orphans). Returns whether it worked."""
    if _prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        log.warning("PR_SET_CHILD_SUBREAPER failed (errno %d): escaped agent processes are "
                    "found by their environment only", ctypes.get_errno())
        return False
    return True


def is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    if _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        return False
    return bool(flag.value)


def raise_fd_limit(want: int = 65536) -> None:
    """Three fds per session (PTY, pidfd, transcript): lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def worker_token(pid: int) -> str:
    """`pid:start time`: names this worker process, also after its pid is recycled."""
    st = _start_time(pid)
    return f"{pid}:{st}"


def sweep_strays() -> int:
    """Kill agent processes whose worker is dead (it was killed before it could stop them).
    Returns how many were signalled."""
    killed = 0
    alive: dict[bytes, bool] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        token = _environ(int(entry)).get(b"SEMO_WORKER")
        if not token:
            continue
        if token not in alive:  # pid:start time:manager
            wpid, _, rest = token.partition(b":")
            try:
                alive[token] = _start_time(int(wpid)) == int(rest.partition(b":")[0])
            except ValueError:
                alive[token] = True  # not ours to judge
        if not alive[token]:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def _spawn(argv: list[str], cwd: str, env: dict[str, str], dimensions: tuple[int, int],
           parent: int) -> PtyProcess:
    def child_setup() -> None:
        # runs in the child between fork and exec
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the worker died while we forked
            os._exit(1)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # here rather than ptyprocess's cwd=: its error then reaches the parent as an exception
        os.chdir(cwd)

    _Pty.last = None
    try:
        return _Pty.spawn(argv, env=env, dimensions=dimensions, preexec_fn=child_setup)
    except BaseException:
        # the child reported its error and exited: reap it (ptyprocess does not)
        failed = _Pty.last
        if failed is not None:
            _kill_and_wait(failed)
        raise
    finally:
        _Pty.last = None


def _kill_and_wait(proc: PtyProcess) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(proc.pid, 0)
    except ChildProcessError:
        pass
    try:
        proc.fileobj.close()
    except OSError:
        pass
    proc.closed = True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfd_exited(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def _reap_pid(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        pass
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _own_children() -> set[int]:
    return _children(os.getpid())


def _children(pid: int) -> set[int]:
    """Child pids of `pid` (each of its threads has its own list)."""
    out: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            out.update(map(int, data.split()))
    return out


def _stat(pid: int) -> tuple[bytes, int, int, int] | None:
    """(state, ppid, process group, session) of a process, or None when it is gone."""
    f = procfs.stat(pid)
    if f is None:
        return None
    return f[procfs.STATE], int(f[procfs.PPID]), int(f[procfs.PGRP]), int(f[procfs.SESSION])


def _start_time(pid: int) -> int | None:
    f = procfs.stat(pid)
    return None if f is None else int(f[procfs.STARTTIME])


def _marked(session_id: str, token: str) -> list[int]:
    """Live processes carrying this session's marker and worker token (a /proc scan)."""
    want = {b"SEMO_SESSION_ID": session_id.encode(), b"SEMO_WORKER": token.encode()}
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            env = _environ(int(entry))
            if env and all(env.get(k) == v for k, v in want.items()):
                out.append(int(entry))
    return out


def _environ(pid: int) -> dict[bytes, bytes]:
    """The SEMO_ variables of a process's environment (empty for a zombie)."""
    data = _read(f"/proc/{pid}/environ")
    if b"SEMO_" not in data:
        return {}
    out = {}
    for item in data.split(b"\0"):
        if item.startswith(b"SEMO_"):
            k, _, v = item.partition(b"=")
            out[k] = v
    return out
