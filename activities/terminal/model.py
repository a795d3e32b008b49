"""What one session's terminal is (its PTY, processes, reading state) and the limits
the manager works within."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import struct
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ptyprocess import PtyProcess

from activities.monitor import MonitorEvent, OutputMonitor
from semo.settings import AgentProfile

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
#: work per turn of the event loop spent reading terminals nobody watches (reader.py:
#: `_read_backlog`); a watched terminal is read as soon as it has output
BACKLOG_SLICE_S = 0.002
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
#: output of a parked terminal (see Terminal.parked) kept for its monitor before reading
#: pauses until its session re-attaches (the agent then waits: nothing is lost)
PARKED_BYTES = 4 << 20


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
    #: someone watches the session's output live: hand its reads on at once
    def watched(self, session_id: str) -> bool: ...


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


class KeptPty:
    """A PTY whose agent the keeper forked (keeper/): its pid and this worker's copy of the
    master, with the little of PtyProcess's surface a Terminal uses."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        self.fileobj = self  # PtyProcess closes its master through `fileobj`
        self.closed = self.terminated = False

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def setwinsize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def getwinsize(self) -> tuple[int, int]:
        rows, cols, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(self.fd, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols


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
    proc: PtyProcess | KeptPty
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
    #: bytes at the front of `inbuf` already in the transcript
    transcribed: int = 0
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
    #: the keeper forked the agent: it reaps it and keeps its exit status (`epoch`: our
    #: hold on it, see keeper/)
    kept: bool = False
    epoch: int = 0
    #: what a next worker needs to adopt it (the agent's hook secret and socket, its office)
    meta: dict[str, str] = field(default_factory=dict)
    #: adopted from a worker that died: output is stored but not monitored until the
    #: session's workflow re-attaches and says which job is running (`unmonitored` waits)
    parked: bool = False
    unmonitored: bytearray = field(default_factory=bytearray)
    #: this worker let go of it (it is shutting down): the keeper holds the agent again
    left: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def fd(self) -> int:
        return self.proc.fd

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()


class ManagerParts:
    """What SessionManager's parts (reader, reaper, transcripts) share: its state, typed once
    here for the type checker; `SessionManager.__init__` sets it."""

    profiles: dict[str, AgentProfile]
    sink: OutputSink
    on_event: EventHandler | None
    transcripts_dir: Path | None
    rows: int
    cols: int
    kill_grace_s: float
    subreaper: bool
    terminals: dict[str, Terminal]
    _members: dict[int, Terminal]
    _foreign: set[int]
    _sid: int
    _token: str
    _backlog: deque[Terminal]
    _backlog_reader: asyncio.Task | None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...
    def _drain(self, term: Terminal) -> None: ...
    def _stop_reading(self, term: Terminal) -> None: ...
    def _write_transcript(self, term: Terminal, data: bytearray) -> None: ...
    def _process(self, term: Terminal) -> None: ...
    def _monitor(self, term: Terminal, data: bytes | bytearray, now: float) -> None: ...
    def _start_reading(self, term: Terminal) -> None: ...
    def _install(self, term: Terminal) -> None: ...
    def _mark_transcript(self, term: Terminal) -> None: ...
    def _take_kept_exit(self, term: Terminal) -> Coroutine[Any, Any, None]: ...
    def _new_terminal(self, session_id: str, generation: int, agent: str,
                      profile: AgentProfile, proc: PtyProcess | KeptPty, working_dir: Path,
                      pidfd: int, base: int) -> Terminal: ...


def _pidfd_exited(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))
