"""A worker's connection to the keeper: requests with replies, and the keeper's events
(an agent exited, a newer worker revoked our hold) queued as they arrive.

Blocking, with a timeout on every call, and safe to share between threads (an asyncio
worker calls it through `asyncio.to_thread`).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from keeper import protocol

TIMEOUT_S = 10.0
#: how long a worker waits for a keeper it started to listen
START_TIMEOUT_S = 10.0


class KeeperError(Exception):
    """The keeper refused a request, or cannot be reached."""


class KeeperGone(KeeperError):
    """The connection to the keeper broke (it was killed, or dropped us)."""


@dataclass
class Claimed:
    """An agent handed to this client: its master fd (ours to close), what the keeper read
    while nobody held it, and the epoch of our hold."""

    info: dict
    master: int | None
    buffered: bytes


class KeeperClient:
    def __init__(self, path: str, *, timeout: float = TIMEOUT_S,
                 restart: Callable[[], None] | None = None) -> None:
        """`restart`: starts a keeper at `path` when the connection breaks (see
        `ensure_keeper`); the request that found it broken is sent once more."""
        self.path = path
        self.timeout = timeout
        self.restart = restart
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.events: deque[dict] = deque()
        self._connect()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as err:
            sock.close()
            raise KeeperGone(f"no keeper at {self.path}: {err}") from err
        self.sock = sock
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KeeperClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests --------------------------------------------------------------------------

    def ping(self) -> dict:
        return self.call({"op": "ping"})[0]

    def agents(self) -> list[dict]:
        return self.call({"op": "list"})[0]["agents"]

    def spawn(self, key: str, generation: int, argv: list[str], cwd: str, env: dict[str, str],
              rows: int, cols: int, meta: dict | None = None) -> Claimed:
        header, payload, fds = self.call({
            "op": "spawn", "key": key, "generation": generation, "argv": argv, "cwd": cwd,
            "env": env, "rows": rows, "cols": cols, "meta": meta or {}})
        return Claimed(header, fds[0] if fds else None, payload)

    def claim(self, key: str, generation: int | None = None) -> Claimed:
        req: dict = {"op": "claim", "key": key}
        if generation is not None:
            req["generation"] = generation
        header, payload, fds = self.call(req)
        return Claimed(header, fds[0] if fds else None, payload)

    def release(self, key: str, epoch: int) -> None:
        self.call({"op": "release", "key": key, "epoch": epoch})

    def stop(self, key: str, generation: int, grace_s: float) -> None:
        self.call({"op": "stop", "key": key, "generation": generation, "grace_s": grace_s})

    def forget(self, key: str, generation: int) -> None:
        self.call({"op": "forget", "key": key, "generation": generation})

    def exit_if_idle(self) -> bool:
        return bool(self.call({"op": "exit_if_idle"})[0]["exiting"])

    def call(self, req: dict) -> tuple[dict, bytes, list[int]]:
        """Send a request and wait for its reply (events that come first are queued)."""
        with self._lock:
            try:
                header, payload, fds = self._exchange(req)
            except KeeperGone:
                if self.restart is None:
                    raise
                self.sock.close()
                self.restart()
                self._connect()
                header, payload, fds = self._exchange(req)
        if not header.get("ok"):
            for fd in fds:
                os.close(fd)
            raise KeeperError(str(header.get("error")))
        return header, payload, fds

    def _exchange(self, req: dict) -> tuple[dict, bytes, list[int]]:
        rid = next(self._ids)
        try:
            protocol.send(self.sock, {**req, "id": rid})
            while True:
                header, payload, fds = self._read_frame()
                if header.get("id") == rid:
                    return header, payload, fds
                if "event" in header:
                    self.events.append(header)
                for fd in fds:  # a frame for nobody: never leak its fds
                    os.close(fd)
        except (OSError, protocol.ProtocolError) as err:
            raise KeeperGone(f"keeper at {self.path}: {err}") from err

    def next_event(self, timeout: float) -> dict | None:
        """The next event from the keeper, waiting up to `timeout`; None if none came."""
        with self._lock:
            if self.events:
                return self.events.popleft()
            self.sock.settimeout(timeout)
            try:
                header, _, fds = self._read_frame()
            except TimeoutError:
                return None
            except (OSError, protocol.ProtocolError) as err:
                raise KeeperGone(f"keeper at {self.path}: {err}") from err
            finally:
                self.sock.settimeout(self.timeout)
            for fd in fds:
                os.close(fd)
            return header if "event" in header else None

    def _read_frame(self) -> tuple[dict, bytes, list[int]]:
        fds: list[int] = []
        while True:
            try:
                frame = protocol.parse(self._buf)
            except protocol.ProtocolError:
                for fd in fds:
                    os.close(fd)
                raise
            if frame is not None:
                return frame[0], frame[1], fds
            data, got, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, protocol.MAX_FDS)
            fds.extend(got)
            if not data:
                for fd in fds:
                    os.close(fd)
                raise ConnectionResetError("the keeper closed the connection")
            self._buf += data


def ensure_keeper(path: str, *, grace_s: float | None = None, log_path: str | None = None,
                  exit_when_idle_s: float | None = None,
                  timeout: float = START_TIMEOUT_S) -> KeeperClient:
    """Connect to this machine's keeper, starting it first if none listens at `path`; the
    client starts it again if it goes away (killed) while in use."""
    def start() -> None:
        start_keeper(path, grace_s=grace_s, log_path=log_path,
                     exit_when_idle_s=exit_when_idle_s, timeout=timeout)

    try:
        return KeeperClient(path, restart=start)
    except KeeperGone:
        pass
    start()
    return KeeperClient(path, restart=start)


def start_keeper(path: str, *, grace_s: float | None, log_path: str | None,
                 exit_when_idle_s: float | None, timeout: float) -> None:
    """Start a keeper at `path` unless one listens there; return once one does.

    The keeper is started in its own session (not in the worker's process group, so a
    Ctrl+C or a group kill of the worker does not reach it) through an intermediate that
    exits at once, so it is nobody's child but init's (or the nearest subreaper's)."""
    if _listening(path):
        return
    args = [sys.executable, "-m", "keeper", "--socket", path]
    if grace_s is not None:
        args += ["--grace", str(grace_s)]
    if exit_when_idle_s is not None:
        args += ["--exit-when-idle", str(exit_when_idle_s)]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        # `setsid -f` forks: the intermediate returns at once and the keeper is re-parented
        subprocess.run(["setsid", "-f", *args], stdin=subprocess.DEVNULL, stdout=log,
                       stderr=log, check=True, timeout=timeout, close_fds=True,
                       cwd="/", env=_keeper_env())
    finally:
        if log is not subprocess.DEVNULL:
            log.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while not _listening(path):
        if time.monotonic() > deadline:
            raise KeeperGone(f"no keeper listens at {path} {timeout:g} s after starting one")
        time.sleep(0.02)


def _listening(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_S)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _keeper_env() -> dict[str, str]:
    """The keeper's own environment: no worker secrets (every agent gets its environment
    from the worker's request), and the `keeper` package importable from cwd=/."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "USER",
                                                          "XDG_RUNTIME_DIR", "TMPDIR")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return env
