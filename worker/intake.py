"""The command intake: carries out rows inserted into `agent_commands` by anyone.

Wake-ups: LISTEN on the insert trigger's NOTIFY; Supabase Realtime INSERT events when a project
is configured (worker/realtime.py); a poll every `intake_poll_interval_s` as the fallback.
Every wake-up drains: claim what is claimable until nothing is. The intake drains at start
and after every (re)connect of LISTEN, Realtime or its claim lock, so nothing inserted while
it was down or deaf waits for the poll.

Claiming is one short transaction, serialised among all claimants by a transaction-level
advisory lock, with `FOR UPDATE SKIP LOCKED` on the rows:

- a row is claimable when it is `pending`, or `running` for a claimant that is gone: its
  claim lock (db/claims.py) is no longer held, because the API or intake process that claimed
  it died, or its lease (`LEASE_S`) ran out;
- rows go in insertion order (`seq`), one queue (a session; or an office, for office-level
  commands) at one claimant at a time: a queue with a row in flight at another live claimant
  is left alone, so a session's commands run in the order they were inserted, also across several
  intakes and across crashes (a dead claimant's rows are the oldest of their queue, and are
  taken again first).

Exactly once: the command id is the Temporal update id (and the key of what a create makes),
and the session workflow remembers applied command ids across continue-as-new, so running a
row again after a crash returns the first run's result instead of acting twice. A row whose
result was written is never claimed again; a result is written once (first writer wins).
Before it starts a row the intake checks, in the same statement that marks it started, that
the claim is still its own (claimant and attempt number): a row taken over meanwhile is left
to its new claimant. A row is answered `expired` only if it is older than `command_max_age_s`
when claimed and nobody ever started it (a started row may have acted: it is run again, which
answers what it did).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from commands.executor import BACKGROUND_LIMIT_S, Command, CommandExecutor, Outcome
from db import claims as claims_db
from db.claims import Claimant
from db.notify import listen
from db.pool import open_pool
from semo.errors import Unavailable
from semo.settings import Settings
from semo.temporal import connect
from worker.realtime import RealtimeFeed, feed_for

log = logging.getLogger(__name__)

#: rows claimed per statement
BATCH = 100
#: rows of one queue claimed and not finished, per intake: a queue runs one row at a time, so
#: claiming far ahead gains nothing (and leaves more behind for others if this intake dies)
PER_QUEUE = 8
#: rows claimed and not yet finished, per intake
MAX_IN_FLIGHT = 256
#: a live claimant that has not finished a row this long after starting it has given up on it
#: (runs are bounded by BACKGROUND_LIMIT_S): the row may be claimed again
LEASE_S = BACKGROUND_LIMIT_S + 60
#: how long a stopping intake lets its running commands finish before leaving them to others
STOP_GRACE_S = 10.0

@dataclass(frozen=True)
class Claim:
    cmd: Command
    #: this claim's number (`attempts` after it): fences it against a later claim of the row
    attempt: int
    #: the row's age when it was claimed, by the database's clock
    age_s: float
    #: whether some claimant had started it before (it may have acted)
    started_before: bool

    @property
    def queue(self) -> str:
        return self.cmd.session_id or f"office:{self.cmd.office_id}"


class Intake:
    def __init__(self, executor: CommandExecutor, pool: AsyncConnectionPool, settings: Settings,
                 *, listen: bool = True, realtime: RealtimeFeed | None | bool = True,
                 batch: int = BATCH) -> None:
        self.executor = executor
        self.pool = pool
        self.settings = settings
        self.claimant: Claimant = executor.claimant
        self.me = f"intake:{executor.instance}"
        self.listen = listen
        self.batch = batch
        if realtime is True:
            realtime = feed_for(settings, self.wake)
        #: the Supabase Realtime subscription, when a project is configured
        self.realtime: RealtimeFeed | None = realtime or None
        #: why the last drains happened (newest last), for logs and tests
        self.wakes: list[str] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._queues: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._queue_users: dict[str, int] = defaultdict(int)
        self._tasks: dict[asyncio.Task, Claim] = {}
        self._capped: set[str] = set()
        self._started: set = set()
        self._stopping = False

    def wake(self, reason: str = "") -> None:
        """Ask for a drain (called by LISTEN, Realtime, the claim lock's reconnect)."""
        self.wakes.append(reason)
        del self.wakes[:-100]
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.claimant.on_regained = lambda: self.wake("claim lock regained")
        await self._start_claimant(stop)
        sources = []
        if self.listen:
            sources.append(asyncio.create_task(self._listen(stop), name="intake-listen"))
        if self.realtime is not None:
            sources.append(asyncio.create_task(self.realtime.run(stop), name="intake-realtime"))
        stopping = asyncio.create_task(stop.wait())
        try:
            self.wake("start")
            while not stop.is_set():
                self._wake.clear()  # before draining: a wake-up during the drain drains again
                while not stop.is_set() and await self.drain_once():
                    pass
                waiting = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waiting, stopping},
                                   timeout=self.settings.intake_poll_interval_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
        finally:
            stopping.cancel()
            for task in sources:
                task.cancel()
            await asyncio.gather(*sources, return_exceptions=True)
            await self._settle()
            await self.claimant.close()

    async def drain_once(self) -> int:
        """Claim a batch of rows and start them; returns how many were claimed."""
        lock = self.claimant.key
        if lock is None:
            return 0  # without our lock, rows we claim would look abandoned at once
        try:
            rows = await claims_db.claim_batch(self.pool, me=self.me, lock=lock, lease_s=LEASE_S,
                                            limit=self.batch, per_queue=PER_QUEUE)
        except (psycopg.Error, PoolTimeout) as err:
            log.warning("claiming commands failed (%s); retrying", err)
            await asyncio.sleep(1.0)
            return 0
        taken_over = [r["id"] for r in rows if r["attempts"] > 1]
        if taken_over:
            log.info("took over %d rows whose claimant is gone: %s%s", len(taken_over),
                     ", ".join(map(str, taken_over[:5])), " ..." if len(taken_over) > 5 else "")
        for row in sorted(rows, key=lambda r: r["seq"]):
            claim = Claim(Command.from_row(row), attempt=row["attempts"], age_s=row["age_s"],
                          started_before=row["started_at"] is not None)
            await self._slots.acquire()
            # take the queue's place now, in claim order: tasks reach their lock in this order
            self._queue_users[claim.queue] += 1
            if self._queue_users[claim.queue] >= PER_QUEUE:
                self._capped.add(claim.queue)  # more may be waiting: claim again when half done
            task = asyncio.create_task(self._carry_out(claim), name=f"command-{claim.cmd.id}")
            self._tasks[task] = claim
            task.add_done_callback(self._tasks.pop)
        return len(rows)

    async def _carry_out(self, claim: Claim) -> None:
        cmd = claim.cmd
        try:
            async with self._queues[claim.queue]:
                expire = (not claim.started_before
                          and claim.age_s > self.settings.command_max_age_s)
                if not await self._start(claim, start=not expire):
                    log.info("command %s was taken over or answered meanwhile; skipped", cmd.id)
                    return
                if expire:
                    await self._record_until_done(cmd, _expired(cmd, claim.age_s,
                                                                self.settings.command_max_age_s),
                                                  status="expired")
                    return
                self._started.add(cmd.id)
                outcome = await self._run_until_recorded(cmd)
                log.info("command %s %s -> %s", cmd.id, cmd.type, outcome.status_code)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("command %s: unexpected failure; it stays claimed until this intake "
                          "stops or its lease runs out", cmd.id)
        finally:
            self._started.discard(cmd.id)
            self._queue_users[claim.queue] -= 1
            left = self._queue_users[claim.queue]
            if left <= 0:
                self._queue_users.pop(claim.queue, None)
                self._queues.pop(claim.queue, None)
            if claim.queue in self._capped and left <= PER_QUEUE // 2:
                self._capped.discard(claim.queue)
                self.wake("queue refill")
            self._slots.release()

    async def _start(self, claim: Claim, *, start: bool) -> bool:
        while True:
            try:
                return await claims_db.start_claimed(self.pool, claim.cmd.id, me=self.me,
                                                  attempt=claim.attempt, start=start)
            except (psycopg.Error, PoolTimeout) as err:
                await self._retry_pause("starting", claim.cmd, err)

    async def _run_until_recorded(self, cmd: Command) -> Outcome:
        """Run (bounded like the API's background runs) until the result is written."""
        while True:
            try:
                return await asyncio.wait_for(self.executor.run(cmd), BACKGROUND_LIMIT_S)
            except TimeoutError:
                err = Unavailable(f"no result within {BACKGROUND_LIMIT_S:g}s; the action may "
                                  "still take effect", command_id=str(cmd.id))
                return await self._record_until_done(
                    cmd, Outcome(cmd.id, err.status, err.problem()))
            except (psycopg.Error, PoolTimeout) as err:  # the result could not be written
                await self._retry_pause("recording", cmd, err)

    async def _record_until_done(self, cmd: Command, outcome: Outcome,
                                 status: str | None = None) -> Outcome:
        while True:
            try:
                return await self.executor.record(cmd, outcome, status=status)
            except (psycopg.Error, PoolTimeout) as err:
                await self._retry_pause("recording", cmd, err)

    async def _retry_pause(self, what: str, cmd: Command, err: Exception) -> None:
        if self._stopping:
            raise asyncio.CancelledError  # leave it claimed: our lock goes with us
        log.warning("command %s: %s failed (%s); retrying", cmd.id, what, err)
        await asyncio.sleep(1.0)

    async def _settle(self) -> None:
        """Let running commands finish (briefly); hand back the claims never started."""
        self._stopping = True
        claims = list(self._tasks.items())
        for task, claim in claims:
            if claim.cmd.id not in self._started:
                task.cancel()  # still waiting for its queue
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_GRACE_S)
        for task in list(self._tasks):
            task.cancel()  # left claimed: our lock goes with us, others take it at once
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if claims:
            with contextlib.suppress(Exception):
                await claims_db.release_unstarted(self.pool, [c.cmd.id for _, c in claims],
                                                  me=self.me)

    async def _listen(self, stop: asyncio.Event) -> None:
        url = self.settings.effective_database_url()
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                        url, autocommit=True, connect_timeout=10,
                        application_name="semo-intake-listen") as conn:
                    await listen(conn, "agent_commands")
                    self.wake("listening")  # drain what arrived while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("intake LISTEN lost (%s); reconnecting", err)
                await asyncio.sleep(1.0)

    async def _start_claimant(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                await self.claimant.start()
                return
            except (psycopg.Error, OSError) as err:
                log.warning("intake: cannot take its claim lock (%s); retrying", err)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)


def _expired(cmd: Command, age_s: float, max_age_s: float) -> Outcome:
    problem = {"type": "urn:semo:error:Expired", "title": "Expired", "status": 410,
               "detail": f"command was {age_s:.0f}s old when claimed (limit {max_age_s:g}s); "
                         "not executed", "command_id": str(cmd.id)}
    return Outcome(cmd.id, 410, problem)


async def run_intake(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings)
    pool = await open_pool(settings.effective_database_url(), max_size=10, name="intake")
    try:
        await Intake(CommandExecutor(client, pool, settings), pool, settings).run(stop)
    finally:
        await pool.close()
