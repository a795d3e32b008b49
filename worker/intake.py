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
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from commands.executor import BACKGROUND_LIMIT_S, Command, CommandExecutor, Outcome
from db.claims import HELD_LOCKS, Claimant
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
#: two int4 keys for `pg_advisory_xact_lock`: "semo", claims. Bigint-keyed locks are the
#: claimants' own (db/claims.py); this pair can never be mistaken for one of them.
CLAIM_MUTEX = (0x5E305E30, 1)
#: how long a stopping intake lets its running commands finish before leaving them to others
STOP_GRACE_S = 10.0

_CLAIM = f"""
with held as materialized ({HELD_LOCKS.strip()}),
open as materialized (
    select a.id, a.seq, a.status, a.claimed_by,
           coalesce(a.session_id, 'office:' || a.office_id) as queue,
           a.status = 'running'
             and coalesce(a.claimed_at > now() - make_interval(secs => %(lease)s), false)
             and (a.claim_lock is null or a.claim_lock in (select lock_key from held)) as in_flight
    from agent_commands a
    where a.status in ('pending', 'running')
),
blocked as (
    select distinct queue from open where in_flight and claimed_by is distinct from %(me)s
),
mine as (
    select queue, count(*) as n from open
    where status = 'running' and claimed_by = %(me)s group by queue
),
candidates as (
    select o.id, o.seq, row_number() over (partition by o.queue order by o.seq)
                        + coalesce((select m.n from mine m where m.queue = o.queue), 0) as rn
    from open o
    where (o.status = 'pending' or (not o.in_flight and o.claimed_by is distinct from %(me)s))
      and o.queue not in (select queue from blocked)
      and not exists (select 1 from agent_command_results r where r.command_id = o.id)
),
picked as (
    select a.id from agent_commands a join candidates c on c.id = a.id
    where c.rn <= %(per_queue)s
    order by c.seq
    limit %(limit)s
    for update of a skip locked
)
update agent_commands c set status = 'running', claimed_by = %(me)s, claim_lock = %(lock)s,
    claimed_at = now(), attempts = c.attempts + 1, updated_at = now()
from picked where c.id = picked.id
returning c.*, extract(epoch from now() - c.created_at)::float8 as age_s
"""

# Still ours, still unanswered? Then (unless it is about to expire) it is started now, and its
# lease runs from now.
_START = """
update agent_commands a set claimed_at = now(), updated_at = now(),
    started_at = case when %(start)s then coalesce(a.started_at, now()) else a.started_at end
where a.id = %(id)s and a.claimed_by = %(me)s and a.attempts = %(attempt)s and a.status = 'running'
  and not exists (select 1 from agent_command_results r where r.command_id = a.id)
returning a.id
"""

# A stopping intake hands back the rows it claimed and never started.
_RELEASE = """
update agent_commands set status = 'pending', claimed_by = null, claim_lock = null,
    claimed_at = null, updated_at = now()
where id = any(%(ids)s) and claimed_by = %(me)s and status = 'running' and started_at is null
"""


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
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("select pg_advisory_xact_lock(%s, %s)", CLAIM_MUTEX)
                async with conn.cursor(row_factory=dict_row) as cur:
                    rows = await (await cur.execute(_CLAIM, {
                        "me": self.me, "lock": lock, "lease": LEASE_S, "limit": self.batch,
                        "per_queue": PER_QUEUE})).fetchall()
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
                async with self.pool.connection() as conn:
                    cur = await conn.execute(_START, {"id": claim.cmd.id, "me": self.me,
                                                      "attempt": claim.attempt, "start": start})
                    return await cur.fetchone() is not None
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
                async with self.pool.connection() as conn:
                    await conn.execute(_RELEASE, {"ids": [c.cmd.id for _, c in claims],
                                                  "me": self.me})

    async def _listen(self, stop: asyncio.Event) -> None:
        url = self.settings.effective_database_url()
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                        url, autocommit=True, connect_timeout=10,
                        application_name="semo-intake-listen") as conn:
                    await conn.execute("listen agent_commands")
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
