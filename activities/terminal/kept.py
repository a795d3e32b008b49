"""Agents the keeper forks (keeper/): starting one through it, adopting the live agents a
dead worker left behind, resuming an adopted one when its session re-attaches, and taking
an agent's exit status from the keeper (it, not this worker, is the agent's parent).

The keeper hands over the PTY master; from then on this worker reads and writes it as it
does a PTY it forked itself (reader.py), and signals the session's processes the same way
(reaper.py: process groups and pidfds work for any process of this user)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from activities.terminal.model import KeptPty, ManagerParts, Terminal, TerminalError
from activities.terminal.spawn import worker_token
from keeper.client import Claimed, KeeperClient, KeeperError
from semo.settings import AgentProfile

log = logging.getLogger(__name__)

#: how long an exited agent's status may take to reach the keeper's record (it reaps on
#: SIGCHLD, at once; the bound is for a keeper that is slow or gone)
EXIT_STATUS_WAIT_S = 5.0
#: the most a new worker takes from a dead one's transcript (the store keeps a dead worker's
#: unsaved bytes far below this: reading pauses while it is behind)
MAX_RECOVERED = 64 << 20


def adoptable(profile: AgentProfile, meta: dict) -> bool:
    """Whether a next worker can take an agent up: one without hooks, or one whose hook
    socket and secret were kept with it (`meta`, from SessionManager.create): the next
    worker listens there and knows the secret, so the agent's hooks reach it."""
    return not profile.hooks or bool(meta.get("SEMO_HOOK_TOKEN") and meta.get("SEMO_HOOK_SOCKET"))


def keeper_token(keeper_pid: int) -> str:
    """What agents forked by this keeper carry as SEMO_WORKER: they live as long as it does."""
    return f"{worker_token(keeper_pid)}:keeper"


class TerminalKeeping(ManagerParts):
    """SessionManager's part for agents the keeper forked."""

    keeper: KeeperClient | None

    async def _keeper_call(self, method, *args):
        try:
            return await asyncio.to_thread(method, *args)
        except KeeperError as err:
            raise TerminalError(str(err)) from err

    async def _spawn_kept(self, session_id: str, generation: int, agent: str, argv: list[str],
                          working_dir: Path, env: dict[str, str],
                          meta: dict[str, str]) -> tuple[KeptPty, int]:
        """Start the agent through the keeper; returns its PTY and our hold's epoch."""
        keeper = self.keeper
        # through a new keeper if this one was killed; its agents carry its token (a stray
        # is an agent whose keeper is dead: reaper.sweep_strays)
        self._token = keeper_token((await self._keeper_call(keeper.ping))["pid"])  # type: ignore[union-attr]
        env = {**env, "SEMO_WORKER": self._token}
        await self._clear_kept(session_id)
        got: Claimed = await self._keeper_call(
            keeper.spawn, session_id, generation, argv, str(working_dir), env,  # type: ignore[union-attr]
            self.rows, self.cols, {**meta, "agent": agent, "working_dir": str(working_dir)})
        return KeptPty(got.info["pid"], got.master), got.info["epoch"]  # type: ignore[arg-type]

    async def _clear_kept(self, session_id: str) -> None:
        """An agent of this session that the keeper still has and nobody re-attached (its
        profile cannot be adopted, or its session restarted): stopped before a new one."""
        for info in await self._keeper_call(self.keeper.agents):  # type: ignore[union-attr]
            if info["key"] != session_id:
                continue
            if not info["exited"]:
                await self._keeper_call(self.keeper.stop, session_id, info["generation"],  # type: ignore[union-attr]
                                        self.kill_grace_s)
                info = await self._kept_exit(session_id, info["generation"],
                                             self.kill_grace_s + EXIT_STATUS_WAIT_S)
            if info is not None and info["exited"]:
                await self._keeper_call(self.keeper.forget, session_id, info["generation"])  # type: ignore[union-attr]

    async def _kept_exit(self, session_id: str, generation: int,
                         timeout: float) -> dict | None:
        """The keeper's record of an agent once it says the agent exited (None: no record)."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            infos = await self._keeper_call(self.keeper.agents)  # type: ignore[union-attr]
            info = next((i for i in infos if i["key"] == session_id
                         and i["generation"] == generation), None)
            if info is None or info["exited"] or time.monotonic() > deadline:
                return info
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _take_kept_exit(self, term: Terminal) -> None:
        """Our kept agent's leader exited: its status from the keeper, whose record then goes."""
        try:
            info = await self._kept_exit(term.session_id, term.generation, EXIT_STATUS_WAIT_S)
            if info is None or not info["exited"]:
                log.warning("the keeper has no exit status for %s", term.session_id)
                return
            term.exit_code, term.exit_signal = info["exit_code"], info["exit_signal"]
            await self._keeper_call(self.keeper.forget, term.session_id, term.generation)  # type: ignore[union-attr]
        except TerminalError as err:
            log.warning("exit status of %s: %s", term.session_id, err)

    async def adopt_kept(self) -> list[str]:
        """Claim every live agent the keeper has (a worker of this machine died or was
        restarted): each becomes a parked terminal of this manager, its output stored from
        now on, until its session re-attaches (`resume_parked`). Agents that cannot be
        adopted (their profile is gone, or its hooks' secret was not kept: `adoptable`) are
        stopped: their sessions restart as before. Returns the adopted ids; an agent with
        hooks is then the agent package's to drive (ClientActivities.adopt_kept)."""
        if self.keeper is None:
            return []
        adopted = []
        for info in await self._keeper_call(self.keeper.agents):
            sid, generation = info["key"], info["generation"]
            meta = info["meta"]
            profile = self.profiles.get(meta.get("agent", ""))
            if info["exited"] or profile is None or not adoptable(profile, meta) \
                    or sid in self.terminals:
                if not info["exited"]:
                    log.warning("stopping %s's agent (pid %d): it cannot be adopted", sid,
                                info["pid"])
                    await self._keeper_call(self.keeper.stop, sid, generation, self.kill_grace_s)
                continue
            try:
                got = await self._keeper_call(self.keeper.claim, sid, generation)
            except TerminalError as err:
                log.warning("could not claim %s's agent: %s", sid, err)
                continue
            if got.master is None:
                continue  # it exited meanwhile: its session finds it gone and restarts
            term = await self._adopt(sid, generation, meta["agent"], profile,
                                     Path(meta["working_dir"]), got)
            if term is not None:
                adopted.append(sid)
                log.info("adopted %s's agent (pid %d, %d bytes it wrote meanwhile)", sid,
                         term.pid, len(got.buffered))
        return adopted

    async def _adopt(self, sid: str, generation: int, agent: str, profile: AgentProfile,
                     working_dir: Path, got: Claimed) -> Terminal | None:
        pty = KeptPty(got.info["pid"], got.master)  # type: ignore[arg-type]
        try:
            os.set_blocking(pty.fd, False)
            pidfd = os.pidfd_open(pty.pid)
            rows, cols = pty.getwinsize()
        except OSError as err:  # gone since the claim: the keeper keeps its exit status
            log.warning("%s's agent went away while adopted: %s", sid, err)
            pty.close()
            return None
        base = await self.sink.end_offset(sid)
        term = self._new_terminal(sid, generation, agent, profile, pty, working_dir, pidfd, base)
        term.rows, term.cols = rows, cols
        term.kept, term.epoch, term.parked = True, got.info["epoch"], True
        term.meta = {k: v for k, v in (got.info.get("meta") or {}).items()
                     if k not in ("agent", "working_dir")}
        # what the dead worker had read but not stored yet, then what the agent wrote while
        # no worker held it: first, in order (before the transcript is opened: the first
        # part is in it already)
        recovered = await asyncio.to_thread(self._unstored_from_transcript, sid, base)
        if recovered:
            log.info("%s: %d bytes the last worker read but did not store, from its transcript",
                     sid, len(recovered))
            term.inbuf += recovered
            self._process(term)
        self._install(term)
        if got.buffered:
            term.inbuf += got.buffered
            self._process(term)
        return term

    def _mark_transcript(self, term: Terminal) -> None:
        """Note where in the transcript file this terminal's output starts, and at which
        stream offset (`<id>.at`), so a next worker can take from it the bytes this one
        read but did not store before it died."""
        d = self.transcripts_dir
        tmp = d / f"{term.session_id}.at.tmp"  # type: ignore[operator]
        tmp.write_text(f"{term.transcript.tell()} {term.offset}\n")  # type: ignore[attr-defined]
        os.replace(tmp, d / f"{term.session_id}.at")  # type: ignore[operator]

    def _unstored_from_transcript(self, sid: str, stored_end: int) -> bytes:
        """The bytes from stream offset `stored_end` on that the transcript holds and the
        store does not (b"" when it cannot tell: no transcript or mark, or too many)."""
        if self.transcripts_dir is None:
            return b""
        path = self.transcripts_dir / f"{sid}.log"
        try:
            pos, offset = map(int, (self.transcripts_dir / f"{sid}.at").read_text().split())
            end = offset + path.stat().st_size - pos
            if not offset <= stored_end < end or end - stored_end > MAX_RECOVERED:
                return b""
            with open(path, "rb") as f:
                f.seek(pos + stored_end - offset)
                return f.read(end - stored_end)
        except (OSError, ValueError):
            return b""

    def resume_parked(self, session_id: str, job_id: str | None) -> None:
        """The session re-attached: monitor its output from here, for `job_id` (None: idle)."""
        term = self.terminals.get(session_id)
        if term is None or not term.parked:
            return
        term.parked = False
        term.job_id = job_id
        term.busy = job_id is not None
        data, term.unmonitored = term.unmonitored, bytearray()
        if data:
            self._monitor(term, data, time.monotonic())
        if term.paused and not self.sink.congested(session_id):
            term.paused = False
            self._start_reading(term)

    async def leave_all(self) -> list[str]:
        """This worker is shutting down and its agents stay (an upgrade): what was read is
        stored, and each adoptable agent goes back to the keeper, which buffers its output
        until the next worker claims it. Returns the ids left; the rest stay here (stop them)."""
        left = []
        for sid, term in list(self.terminals.items()):
            if not term.kept or not adoptable(term.profile, term.meta) or term.stopping \
                    or term.leader_exited:
                continue
            self._stop_reading(term)
            self._drain(term)  # what is in the PTY now is ours to store; the rest the keeper's
            try:
                await asyncio.wait_for(self.sink.flush(sid), 10.0)
                await self._keeper_call(self.keeper.release, sid, term.epoch)  # type: ignore[union-attr]
            except Exception as err:  # it stays ours: stopped with the others
                log.warning("could not leave %s to the keeper: %s", sid, err)
                self._start_reading(term)
                continue
            term.left = True
            loop = asyncio.get_running_loop()
            loop.remove_reader(term.pidfd)
            os.close(term.pidfd)
            term.proc.fileobj.close()  # our copy of the master; the keeper keeps its own
            if term.transcript is not None:
                term.transcript.close()  # type: ignore[attr-defined]
                term.transcript = None
            term.closed = True
            del self.terminals[sid]
            self.sink.forget(sid)
            term.events.put_nowait(None)
            left.append(sid)
        return left
