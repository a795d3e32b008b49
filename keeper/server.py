"""The keeper process: owns this machine's agents and their PTYs (see the package doc).

Single-threaded: one selector loop over the listening socket, the clients' sockets, the
masters of agents no worker holds, and a self-pipe woken by SIGCHLD/SIGTERM. Nothing here
blocks for long: replies go out under a short send timeout (a client that does not read is
dropped), and forks exec at once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import selectors
import signal
import socket
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from keeper import protocol

log = logging.getLogger("semo.keeper")

#: what the keeper keeps of an unheld agent's output before it stops reading (the agent
#: then blocks on its next write: nothing is dropped)
BUFFER_BYTES = 4 << 20
#: an agent no worker has held for this long is stopped (a machine whose worker is gone)
GRACE_S = 600.0
#: SIGHUP+SIGTERM first; SIGKILL this long after
KILL_GRACE_S = 3.0
#: a client that does not take a reply within this is dropped
SEND_TIMEOUT_S = 5.0
TICK_S = 0.5
READ_SIZE = 64 * 1024
#: signals the keeper handles or ignores, reset to their defaults in an agent before exec
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT,
                  signal.SIGQUIT, signal.SIGTERM, signal.SIGTSTP, signal.SIGTTIN,
                  signal.SIGTTOU, signal.SIGCHLD)
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(eq=False)
class Client:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)


@dataclass(eq=False)
class Agent:
    key: str
    generation: int
    pid: int
    master: int | None
    meta: dict
    started_at: float
    #: the worker reading the master now (None: the keeper reads it into `buf`)
    holder: Client | None = None
    #: raised by every claim: a holder with an older epoch has lost the agent
    epoch: int = 0
    unheld_since: float = field(default_factory=time.monotonic)
    #: output read by the keeper while no worker held the agent; `buf[0]` is the byte
    #: at keeper offset `buf_start` (offsets count what the keeper itself read)
    buf: bytearray = field(default_factory=bytearray)
    buf_start: int = 0
    reading: bool = False
    exit_code: int | None = None
    exit_signal: int | None = None
    exited: bool = False
    exited_at: float = 0.0
    kill_at: float | None = None

    def info(self) -> dict:
        return {"key": self.key, "generation": self.generation, "pid": self.pid,
                "meta": self.meta, "epoch": self.epoch, "held": self.holder is not None,
                "buffered": len(self.buf), "exited": self.exited,
                "exit_code": self.exit_code, "exit_signal": self.exit_signal}


class Keeper:
    def __init__(self, path: str, *, grace_s: float = GRACE_S, buffer_bytes: int = BUFFER_BYTES,
                 kill_grace_s: float = KILL_GRACE_S, exit_when_idle_s: float | None = None) -> None:
        self.path = path
        self.grace_s = grace_s
        self.buffer_bytes = buffer_bytes
        self.kill_grace_s = kill_grace_s
        self.exit_when_idle_s = exit_when_idle_s
        self.agents: dict[str, Agent] = {}
        self.clients: set[Client] = set()
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.idle_since = time.monotonic()
        self._uid = os.getuid()

    # --- the loop ---------------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        """Run until SIGTERM/SIGINT (every agent stopped first) or idle for `exit_when_idle_s`."""
        # orphans of the agents' processes come here, and are reaped here
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)  # the wake-up fd carries the signal number
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # its terminal going away is not our end
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
        try:
            while True:
                for key, _ in self.sel.select(TICK_S):
                    kind, obj = key.data
                    if kind == "listen":
                        self._accept(listener)
                    elif kind == "wake":
                        self._on_signals(wake_r)
                    elif kind == "client":
                        self._on_client(obj)
                    elif kind == "master":
                        self._read_master(obj)
                self._reap()
                if self._tick(time.monotonic()):
                    return
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)

    def _on_signals(self, wake_r: int) -> None:
        try:
            sigs = os.read(wake_r, 512)
        except BlockingIOError:
            return
        if (signal.SIGTERM in sigs or signal.SIGINT in sigs) and not self.stopping:
            log.info("stopping: every agent is stopped first")
            self.stopping = True
            for agent in self.agents.values():
                self._stop(agent, self.kill_grace_s)

    def _tick(self, now: float) -> bool:
        """Grace and escalation; returns whether the keeper should exit now."""
        for agent in list(self.agents.values()):
            if agent.exited:
                if agent.holder is None and \
                        now - max(agent.unheld_since, agent.exited_at) > self.grace_s:
                    self._drop(agent)  # an exit status nobody came for
                continue
            if agent.kill_at is not None and now >= agent.kill_at:
                _killpg(agent.pid, signal.SIGKILL)
            elif agent.holder is None and agent.kill_at is None \
                    and now - agent.unheld_since > self.grace_s:
                log.warning("stopping %s (pid %d): no worker claimed it within %.0f s",
                            agent.key, agent.pid, self.grace_s)
                self._stop(agent, self.kill_grace_s)
        if self.stopping:
            return all(a.exited for a in self.agents.values())
        if self.agents or self.clients:
            self.idle_since = now
        return self.exit_when_idle_s is not None and now - self.idle_since > self.exit_when_idle_s

    # --- clients ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if protocol.peer_uid(sock) != self._uid:  # the socket's mode says so too; be sure
            log.warning("refused a connection from another user")
            sock.close()
            return
        sock.setblocking(False)
        client = Client(sock)
        self.clients.add(client)
        self.sel.register(sock, selectors.EVENT_READ, ("client", client))

    def _on_client(self, client: Client) -> None:
        try:
            data = client.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(client)
            return
        client.inbuf += data
        try:
            while (frame := protocol.parse(client.inbuf)) is not None:
                self._handle(client, frame[0])
        except protocol.ProtocolError as err:
            log.warning("dropping a client: %s", err)
            self._drop_client(client)

    def _drop_client(self, client: Client) -> None:
        """A worker went away (exited, killed, or dropped): its agents go back to the keeper."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        for agent in self.agents.values():
            if agent.holder is client:
                self._unhold(agent)

    def _send(self, client: Client, header: dict, payload: bytes = b"",
              fds: Sequence[int] = ()) -> bool:
        if client not in self.clients:
            return False
        try:
            client.sock.settimeout(SEND_TIMEOUT_S)
            protocol.send(client.sock, header, payload, fds)
            return True
        except OSError as err:
            log.warning("dropping a client that does not take replies: %s", err)
            self._drop_client(client)
            return False
        finally:
            if client in self.clients:
                client.sock.setblocking(False)

    def _handle(self, client: Client, req: dict) -> None:
        op = req.get("op")
        rid = req.get("id")
        try:
            handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                raise _Refused(f"unknown op {op!r}")
            handler(client, req, rid)
        except _Refused as err:
            self._send(client, {"id": rid, "ok": False, "error": str(err)})
        except (KeyError, TypeError, ValueError) as err:
            self._send(client, {"id": rid, "ok": False, "error": f"bad request: {err!r}"})

    # --- operations -----------------------------------------------------------------------

    def _op_ping(self, client: Client, req: dict, rid: object) -> None:
        self._send(client, {"id": rid, "ok": True, "pid": os.getpid()})

    def _op_list(self, client: Client, req: dict, rid: object) -> None:
        self._send(client, {"id": rid, "ok": True,
                            "agents": [a.info() for a in self.agents.values()]})

    def _op_spawn(self, client: Client, req: dict, rid: object) -> None:
        """Start an agent in a new PTY; the spawning client holds it (epoch 1)."""
        if self.stopping:
            raise _Refused("the keeper is stopping")
        key, generation = str(req["key"]), int(req["generation"])
        old = self.agents.get(key)
        if old is not None and not old.exited:
            raise _Refused(f"{key} still has a live agent (generation {old.generation})")
        if old is not None:
            self._drop(old)
        argv = [str(a) for a in req["argv"]]
        env = {str(k): str(v) for k, v in req["env"].items()}
        pid, master = _fork_pty(argv, str(req["cwd"]), env, int(req["rows"]), int(req["cols"]))
        agent = Agent(key=key, generation=generation, pid=pid, master=master,
                      meta=dict(req.get("meta") or {}), started_at=time.time(), holder=client,
                      epoch=1)
        self.agents[key] = agent
        log.info("started %s generation %d: pid %d", key, generation, pid)
        self._send(client, {"id": rid, "ok": True, **agent.info()}, fds=[master])

    def _op_claim(self, client: Client, req: dict, rid: object) -> None:
        """Hand the agent to this client: its master (a duplicate of the keeper's), what the
        keeper buffered meanwhile, and a new epoch. An older holder is told it lost it."""
        agent = self._agent(req)
        old = agent.holder
        agent.epoch += 1
        if old is not None and old is not client:
            self._send(old, {"event": "revoked", "key": agent.key,
                             "generation": agent.generation, "epoch": agent.epoch})
        # what is still in the PTY the claimer reads itself, after the buffer: in order
        self._stop_reading(agent)
        agent.holder = client
        payload, start = bytes(agent.buf), agent.buf_start
        fds = [agent.master] if agent.master is not None else []
        if self._send(client, {"id": rid, "ok": True, "buffered_from": start, **agent.info(),
                               "buffered": len(payload)}, payload, fds):
            agent.buf_start += len(payload)
            agent.buf.clear()
        # else: the claimer is gone; _drop_client gave the agent back with its buffer

    def _op_release(self, client: Client, req: dict, rid: object) -> None:
        """The holder gives the agent back (a worker leaving on purpose)."""
        agent = self._agent(req)
        if agent.holder is client and int(req.get("epoch", agent.epoch)) == agent.epoch:
            self._unhold(agent)
        self._send(client, {"id": rid, "ok": True})

    def _op_stop(self, client: Client, req: dict, rid: object) -> None:
        agent = self._agent(req)
        if not agent.exited:
            self._stop(agent, float(req.get("grace_s", self.kill_grace_s)))
        self._send(client, {"id": rid, "ok": True})

    def _op_exit_if_idle(self, client: Client, req: dict, rid: object) -> None:
        """A worker that stopped its agents on purpose: with none left here and no other
        worker, the keeper goes too (`semo dev`'s Ctrl+C leaves nothing running)."""
        idle = all(a.exited for a in self.agents.values()) and self.clients == {client}
        if idle:
            self.stopping = True
        self._send(client, {"id": rid, "ok": True, "exiting": idle})

    def _op_forget(self, client: Client, req: dict, rid: object) -> None:
        """The exit status was taken: the record goes."""
        agent = self._agent(req)
        if not agent.exited:
            raise _Refused(f"{agent.key}'s agent is still running")
        self._drop(agent)
        self._send(client, {"id": rid, "ok": True})

    def _agent(self, req: dict) -> Agent:
        agent = self.agents.get(str(req["key"]))
        if agent is None or ("generation" in req and agent.generation != int(req["generation"])):
            raise _Refused(f"no agent {req['key']} (generation {req.get('generation')})")
        return agent

    # --- agents -------------------------------------------------------------------------------

    def _unhold(self, agent: Agent) -> None:
        agent.holder = None
        agent.unheld_since = time.monotonic()
        self._start_reading(agent)

    def _start_reading(self, agent: Agent) -> None:
        if agent.master is not None and not agent.reading and agent.holder is None \
                and len(agent.buf) < self.buffer_bytes:
            self.sel.register(agent.master, selectors.EVENT_READ, ("master", agent))
            agent.reading = True

    def _stop_reading(self, agent: Agent) -> None:
        if agent.reading:
            self.sel.unregister(agent.master)
            agent.reading = False

    def _read_master(self, agent: Agent) -> None:
        room = self.buffer_bytes - len(agent.buf)
        if room > 0 and not self._read_into(agent, min(room, READ_SIZE)):
            self._close_master(agent)  # EOF: every slave is closed
            return
        if len(agent.buf) >= self.buffer_bytes:
            self._stop_reading(agent)  # the agent blocks on its writes until a worker comes

    def _read_into(self, agent: Agent, n: int) -> bool:
        """One read of the master into the buffer; False at EOF."""
        try:
            data = os.read(agent.master, n)  # type: ignore[arg-type]
        except BlockingIOError:
            return True
        except OSError as err:
            if err.errno not in (errno.EIO, errno.EBADF):
                log.warning("reading %s: %s", agent.key, err)
            return False
        agent.buf += data
        return bool(data)

    def _drain(self, agent: Agent) -> None:
        """Read what is already in the PTY (bounded), so nothing is lost on a hand-over."""
        for _ in range(64):
            before = len(agent.buf)
            if not self._read_into(agent, READ_SIZE) or len(agent.buf) == before:
                break

    def _close_master(self, agent: Agent) -> None:
        self._stop_reading(agent)
        if agent.master is not None:
            os.close(agent.master)
            agent.master = None

    def _stop(self, agent: Agent, grace_s: float) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGCONT):
            _killpg(agent.pid, sig)
        at = time.monotonic() + grace_s
        agent.kill_at = at if agent.kill_at is None else min(agent.kill_at, at)

    def _reap(self) -> None:
        """Reap every child (agents and the orphans this subreaper adopted); record the
        agents' exits and tell their holders."""
        leaders = {a.pid: a for a in self.agents.values() if not a.exited}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            agent = leaders.get(pid)
            if agent is None:
                continue
            agent.exited, agent.exited_at = True, time.monotonic()
            if os.WIFSIGNALED(status):
                agent.exit_signal = os.WTERMSIG(status)
            else:
                agent.exit_code = os.waitstatus_to_exitcode(status)
            # its session's other processes go too (the kernel hangs up only the foreground)
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGCONT):
                _killpg(pid, sig)
            if agent.holder is None and agent.master is not None:
                self._stop_reading(agent)
                self._drain(agent)
            self._close_master(agent)  # the holder has its own copy
            log.info("%s generation %d exited (code %s, signal %s)", agent.key,
                     agent.generation, agent.exit_code, agent.exit_signal)
            if agent.holder is not None:
                self._send(agent.holder, {"event": "exited", **agent.info()})

    def _drop(self, agent: Agent) -> None:
        self._close_master(agent)
        if self.agents.get(agent.key) is agent:
            del self.agents[agent.key]


class _Refused(Exception):
    pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _fork_pty(argv: list[str], cwd: str, env: dict[str, str], rows: int,
              cols: int) -> tuple[int, int]:
    """Fork an agent in a new PTY, its own session and process group; return (pid, master).
    An exec failure (no such program, bad cwd) is raised here, with the child reaped."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: nothing here may return
        try:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            for fd in (master, slave, err_r):
                if fd > 2:
                    os.close(fd)
            os.closerange(3, err_w)
            os.closerange(err_w + 1, 1 << 20)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            signal.set_wakeup_fd(-1)
            for sig in _RESET_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        except BaseException as err:  # noqa: BLE001 (report anything, then exit)
            code = getattr(err, "errno", None) or errno.EINVAL
            try:
                os.write(err_w, str(code).encode())
            finally:
                os._exit(127)
    os.close(slave)
    os.close(err_w)
    try:
        report = os.read(err_r, 64)
    finally:
        os.close(err_r)
    if report:  # exec failed: reap the child and say why
        os.waitpid(pid, 0)
        os.close(master)
        code = int(report)
        raise _Refused(f"could not start {argv[0]!r} in {cwd}: {os.strerror(code)}")
    os.set_blocking(master, False)
    os.set_inheritable(master, False)
    return pid, master
