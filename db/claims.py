"""Claimant liveness: whether whoever claimed an `agent_commands` row may still be at work.

Every process that claims rows (the API for the rows it records and runs itself, the intake
for everyone else's) holds one Postgres session-level advisory lock for as long as it lives,
on a connection of its own, and writes the lock's key into each row it claims
(`agent_commands.claim_lock`). When the process dies, however it dies, its connection ends,
Postgres drops the lock, and the row is claimable again at once (`HELD_LOCKS` below); while the
process lives, nobody takes its rows from it.

The connection must be a session connection (direct, or a session-mode pooler): advisory
locks mean nothing through a transaction-mode pooler. A claimant whose connection drops
stops being a claimant (`key` is None) until it has reconnected and taken its lock again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

#: advisory locks held right now in this database, as the bigint keys `pg_advisory_lock` took
HELD_LOCKS = """
select (l.classid::bigint << 32) | l.objid::bigint as lock_key
from pg_locks l
where l.locktype = 'advisory' and l.objsubid = 1 and l.granted
  and l.database = (select oid from pg_database where datname = current_database())
"""

#: how often the lock's connection is checked
WATCH_INTERVAL_S = 2.0
#: Postgres notices a silently vanished client host after about idle + interval * count
_KEEPALIVE = ("set tcp_keepalives_idle = 10; set tcp_keepalives_interval = 5;"
              " set tcp_keepalives_count = 3")


def new_key() -> int:
    """A random positive 62-bit key: no two claimants, live or dead, share one."""
    return secrets.randbelow(2**62 - 1) + 1


class Claimant:
    def __init__(self, database_url: str, *, name: str = "claimant",
                 on_regained: Callable[[], None] | None = None) -> None:
        self.database_url = database_url
        self.name = name
        #: called when the lock is held again after its connection was lost (rows claimed
        #: meanwhile by others are theirs; the caller may want to drain)
        self.on_regained = on_regained
        self._key = new_key()
        self._conn: psycopg.AsyncConnection | None = None
        self._held = False
        self._watch: asyncio.Task | None = None
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def key(self) -> int | None:
        """The lock's key while this process holds it, else None."""
        return self._key if self._held else None

    async def start(self) -> int:
        """Connect and take the lock; raises when Postgres cannot be reached."""
        async with self._starting:
            if self._held:
                return self._key
            await self._acquire()
            if self._watch is None:
                self._watch = asyncio.create_task(self._watch_loop(), name=f"{self.name}-watch")
            return self._key

    async def ensure(self) -> int | None:
        """The key, taking the lock first if need be; None when that fails (the caller's
        rows are then only reclaimed after the lease, as if this process had no lock)."""
        if self._held:
            return self._key
        if self._closed:
            return None
        try:
            return await self.start()
        except (psycopg.Error, OSError) as err:
            log.warning("%s: cannot take the claim lock (%s); claims fall back to the lease",
                        self.name, err)
            return None

    async def close(self) -> None:
        self._closed = True
        self._held = False
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()  # ending the session drops the lock
            self._conn = None

    async def _acquire(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, connect_timeout=10,
            application_name=f"semo-{self.name}")
        try:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(_KEEPALIVE)
            while not (await (await conn.execute(
                    "select pg_try_advisory_lock(%s)", (self._key,))).fetchone())[0]:
                self._key = new_key()  # someone holds this key: astronomically unlikely
        except BaseException:
            await conn.close()
            raise
        old, self._conn = self._conn, conn
        self._held = True
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()

    async def _watch_loop(self) -> None:
        delay = 0.5
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL_S if self._held else delay)
            if self._held:
                try:
                    await asyncio.wait_for(self._conn.execute("select 1"), WATCH_INTERVAL_S * 5)
                    continue
                except (TimeoutError, psycopg.Error, OSError) as err:
                    self._held = False
                    log.warning("%s: claim lock connection lost (%s); reconnecting", self.name, err)
            try:
                async with self._starting:
                    if self._held:  # `start()` got there first
                        continue
                    await self._acquire()
                delay = 0.5
                log.info("%s: claim lock held again", self.name)
                if self.on_regained is not None:
                    self.on_regained()
            except (psycopg.Error, OSError) as err:
                delay = min(delay * 2, 10.0)
                log.warning("%s: claim lock not regained (%s); retrying in %.1fs", self.name, err,
                            delay)


# --- the intake's claims on other processes' rows ------------------------------------------

#: two int4 keys for `pg_advisory_xact_lock`: "semo", claims. Bigint-keyed locks are the
#: claimants' own (db/claims.py); this pair can never be mistaken for one of them.
CLAIM_MUTEX = (0x5E305E30, 1)

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




async def claim_batch(pool: AsyncConnectionPool, *, me: str, lock: int, lease_s: float,
                      limit: int, per_queue: int) -> list[dict]:
    """Claim up to `limit` open rows for `me` (at most `per_queue` per session or office queue,
    in order, none of a queue another live claimant is working on), one claimant at a time."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(%s, %s)", CLAIM_MUTEX)
        async with conn.cursor(row_factory=dict_row) as cur:
            return await (await cur.execute(_CLAIM, {
                "me": me, "lock": lock, "lease": lease_s, "limit": limit,
                "per_queue": per_queue})).fetchall()


async def start_claimed(pool: AsyncConnectionPool, command_id, *, me: str, attempt: int,
                        start: bool) -> bool:
    """Mark a claimed row started (its lease runs from now); False when it was taken over or
    answered meanwhile."""
    async with pool.connection() as conn:
        cur = await conn.execute(_START, {"id": command_id, "me": me, "attempt": attempt,
                                          "start": start})
        return await cur.fetchone() is not None


async def release_unstarted(pool: AsyncConnectionPool, command_ids: list, *, me: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(_RELEASE, {"ids": command_ids, "me": me})
