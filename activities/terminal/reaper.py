"""Ending sessions: signals, escalation, and finding and reaping every process of a
session (its tree, adopted orphans, escapees found in /proc), and strays of dead workers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from activities.terminal.model import MAX_MEMBERS, ManagerParts, Terminal, _Member
from semo import procfs

log = logging.getLogger(__name__)


class TerminalReaper(ManagerParts):
    """SessionManager's part that ends sessions and keeps track of their processes."""

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
            if term.kept:  # the keeper is its parent: it has the exit status
                await self._take_kept_exit(term)
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
        for pid in procfs.own_children():
            if pid != term.pid and pid not in self._members:
                st = procfs.brief(pid)
                if st is not None and st[0] == b"Z" and st[3] == term.pid:
                    _reap_pid(pid)

    def _close(self, term: Terminal) -> None:
        if term.escalation is not None and term.escalation is not asyncio.current_task():
            term.escalation.cancel()
            term.escalation = None
        self._drain(term)
        self._stop_reading(term)
        try:  # a kept agent is not our child: its status came from the keeper
            res = None if term.kept else os.waitid(os.P_PIDFD, term.pidfd, os.WEXITED)
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
            for pid in procfs.own_children():
                if pid not in leaders and pid not in self._members and \
                        pid not in self._foreign and self._classify(pid, leaders) is term:
                    stack.append(pid)
        else:  # escaped processes went to init: find them by their marker
            stack.extend(procfs.marked(term.session_id, self._token))
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            if pid != term.pid and pid not in term.members and not self._track(term, pid):
                continue
            stack.extend(procfs.children(pid))

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
        st = procfs.brief(pid)
        if st is None:
            return None
        state, _ppid, _pgrp, sid = st
        if sid in leaders:
            return leaders[sid]
        env = procfs.semo_environ(pid)
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
        children = procfs.own_children()
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
            st = procfs.brief(pid)
            if st is not None and st[0] == b"Z" and self._owner(pid, leaders) == "orphan":
                _reap_pid(pid)
                self._foreign.discard(pid)


def sweep_strays() -> int:
    """Kill agent processes whose worker is dead (it was killed before it could stop them).
    Returns how many were signalled."""
    killed = 0
    alive: dict[bytes, bool] = {}
    for pid in procfs.pids():
        token = procfs.semo_environ(pid).get(b"SEMO_WORKER")
        if not token:
            continue
        if token not in alive:  # pid:start time:manager
            wpid, _, rest = token.partition(b":")
            try:
                alive[token] = procfs.start_time(int(wpid)) == int(rest.partition(b":")[0])
            except ValueError:
                alive[token] = True  # not ours to judge
        if not alive[token]:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
