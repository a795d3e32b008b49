"""SessionManager: create, type into, resize and terminate this machine's terminals."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from pathlib import Path

from ptyprocess import PtyProcess

from activities.monitor import OutputMonitor, PatternSet
from activities.terminal.kept import TerminalKeeping, keeper_token
from activities.terminal.model import (
    TICK_S,
    WRITE_RECHECK_S,
    EventHandler,
    KeptPty,
    OutputSink,
    Terminal,
    TerminalError,
)
from activities.terminal.reader import TerminalReader
from activities.terminal.reaper import TerminalReaper, sweep_strays
from activities.terminal.spawn import (
    _kill_and_wait,
    is_subreaper,
    raise_fd_limit,
    spawn_pty,
    worker_token,
    yield_to_supervisor,
)
from activities.terminal.transcripts import TerminalTranscripts
from keeper.client import KeeperClient
from semo.settings import AgentProfile
from workflows.contracts import NAMED_KEYS

log = logging.getLogger(__name__)


WORKER_ONLY_ENV = ("SEMO_", "SUPABASE_", "TEMPORAL_")
#: signals the worker may ignore (Python ignores SIGPIPE and SIGXFSZ; nohup ignores SIGHUP)
_instances = itertools.count(1)  # several managers in one process tell their agents apart


class SessionManager(TerminalReader, TerminalReaper, TerminalTranscripts, TerminalKeeping):
    """The client machine's live terminals, one PTY per session (see the package doc)."""

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
        keeper: KeeperClient | None = None,
    ) -> None:
        """`hygiene`: raise this process's open-file limit and kill agents left behind by a
        dead worker (what a client worker wants). `keeper`: agents are forked by this
        machine's keeper and outlive this process (see kept.py); else by this process."""
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
        self._backlog: deque[Terminal] = deque()  # terminals with output, to be read
        self._backlog_reader: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._creating: dict[str, list] = {}  # session id -> [lock, users]
        self._members: dict[int, Terminal] = {}  # pid -> the session it belongs to
        self._foreign: set[int] = set()  # children of this process that are not agents'
        self._pid = os.getpid()
        self._sid = os.getsid(0)
        self.keeper = keeper
        if keeper is None:
            self._token = f"{worker_token(self._pid)}:{next(_instances)}"
            #: whether orphans come here (see the module doc); fixed when the manager is made
            self.subreaper = is_subreaper()
        else:
            # the agents are the keeper's children, and live as long as it does (a stray is
            # an agent whose keeper is dead); their orphans go to it: found by marker here
            self._token = keeper_token(keeper.ping()["pid"])
            self.subreaper = False
        if hygiene:
            raise_fd_limit()
            killed = sweep_strays()
            if killed:
                log.warning("killed %d agent processes left behind by a dead worker", killed)

    # --- the seed's operations ------------------------------------------------------------

    async def create(self, session_id: str, working_dir: Path, agent: str, *,
                     generation: int = 0, extra_env: dict[str, str] | None = None,
                     extra_args: list[str] | None = None,
                     meta: dict[str, str] | None = None) -> Terminal:
        """Start the agent in a new terminal (replacing the session's old one, if any).
        `meta`: what a next worker needs to adopt it (kept.py), kept with the keeper."""
        # one at a time per session: a retried start must not race the first attempt
        entry = self._creating.setdefault(session_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._create(session_id, working_dir, agent, generation,
                                          extra_env, extra_args, meta or {})
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._creating[session_id]

    async def _create(self, session_id: str, working_dir: Path, agent: str, generation: int,
                      extra_env: dict[str, str] | None, extra_args: list[str] | None,
                      meta: dict[str, str]) -> Terminal:
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
        argv = [*profile.argv, *(extra_args or [])]
        if self.keeper is not None:
            pty, epoch = await self._spawn_kept(session_id, generation, agent, argv,
                                                working_dir, env, meta)
            proc: PtyProcess | KeptPty = pty
        else:
            # Spawned on the loop's thread on purpose: a child's parent-death signal is tied
            # to the thread that forked it. It blocks until the child has exec'd: a few
            # milliseconds (forking copies this process's page tables).
            proc = spawn_pty(argv, str(working_dir), env, (self.rows, self.cols), self._pid)
        yield_to_supervisor(proc.pid)
        try:
            os.set_inheritable(proc.fd, False)  # forkpty's master is inheritable
            os.set_blocking(proc.fd, False)
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            if isinstance(proc, KeptPty):
                proc.close()  # the keeper reaps it and keeps its status
            else:
                _kill_and_wait(proc)
            raise
        term = self._new_terminal(session_id, generation, agent, profile, proc, working_dir,
                                  pidfd, base)
        if isinstance(proc, KeptPty):
            term.kept, term.epoch = True, epoch
        term.meta = meta
        self._install(term)
        return term

    def _new_terminal(self, session_id: str, generation: int, agent: str,
                      profile: AgentProfile, proc: PtyProcess | KeptPty, working_dir: Path,
                      pidfd: int, base: int) -> Terminal:
        return Terminal(
            session_id=session_id, generation=generation, agent=agent, profile=profile,
            proc=proc, working_dir=working_dir, pidfd=pidfd,
            monitor=OutputMonitor(PatternSet.for_agent(profile.monitor),
                                  stall_after_s=self.stall_after_s),
            rows=self.rows, cols=self.cols, base_offset=base, offset=base,
        )

    def _install(self, term: Terminal) -> None:
        """The terminal is this manager's: its transcript, reading, exit watch and events."""
        if self.transcripts_dir is not None:
            try:
                self.transcripts_dir.mkdir(parents=True, exist_ok=True)
                term.transcript = open(self.transcripts_dir / f"{term.session_id}.log", "ab",
                                       buffering=0)
                if term.kept:
                    self._mark_transcript(term)
            except OSError as err:
                log.warning("no transcript for %s: %s", term.session_id, err)
        self.terminals[term.session_id] = term
        self._start_reading(term)
        asyncio.get_running_loop().add_reader(term.pidfd, self._on_leader_exit, term)
        self._spawn(self._deliver_events(term))
        if self._ticker is None or self._ticker.done():
            self._ticker = self._spawn(self._tick_loop())

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

    async def repaint(self, session_id: str, settle_s: float = 1.0) -> None:
        """Have a full-screen agent draw its whole screen again, as tmux does on attach: one
        column narrower for a moment (until it draws, at most `settle_s`), then its own
        width. From then on its screen can be followed without what it drew before (an
        adopted agent's driver starts there)."""
        term = self.require(session_id)
        before = term.offset
        term.proc.setwinsize(term.rows, max(term.cols - 1, 1))
        deadline = time.monotonic() + settle_s
        while term.offset == before and term.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        term.proc.setwinsize(term.rows, term.cols)

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

    async def close_all(self, *, drain: bool = False) -> None:
        """Stop every agent; `drain`: the worker is shutting down on purpose (sessions are
        told so, and restart without counting it as a failure)."""
        self.draining = self.draining or drain
        await asyncio.gather(*(self.terminate(sid) for sid in list(self.terminals)),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()

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
