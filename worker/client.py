"""The client worker: this machine's terminals (task queue `semo-machine-{machine_id}`).

It registers the machine (roots and agent profiles, so the API can refuse bad input early),
keeps `last_seen_at` fresh, kills terminals whose workflow stopped supervising them. Its
agents are forked by this machine's keeper (keeper/): a new worker adopts those a dead or
restarted one left, and on SIGTERM `semo worker client` leaves them running to the keeper
(`--stop-agents`: stops them, as `semo dev` does).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import socket
import time
from contextlib import asynccontextmanager
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.worker import Worker

from activities import agent_programs
from activities.client import ClientActivities
from activities.output_store import PgOutputStore
from activities.session_changes import ChangesActivities
from activities.terminal import SessionManager, become_subreaper
from activities.usage import UsageTracker
from db import machines, reads
from db.pool import open_pool
from keeper.client import KeeperClient, KeeperError, ensure_keeper
from semo.errors import ConfigError
from semo.observability import ContextInterceptor, OutputCounter, meter_of, report_terminals
from semo.settings import Settings
from semo.temporal import connect

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 15.0
#: how long a client worker waits for an earlier one of its machine to exit (an upgrade
#: that starts the next before the last has left)
MACHINE_LOCK_WAIT_S = 10.0
#: how often old transcripts are looked for (a directory scan)
PRUNE_EVERY_S = 3600.0


async def register_machine(pool: AsyncConnectionPool, settings: Settings) -> None:
    # whether each profile's program is here (and a Claude Code CLI's version), so the API
    # refuses a session whose agent cannot start on this machine
    versions = await asyncio.to_thread(agent_programs.survey, settings.profiles,
                                       set(settings.agent_profiles))
    await machines.register(
        pool, settings.machine_id, hostname=socket.gethostname(),
        task_queue=settings.machine_task_queue,
        workspace_roots=[str(r) for r in settings.resolved_workspace_roots],
        agent_profiles=sorted(settings.profiles), agent_versions=versions)


@asynccontextmanager
async def client_runtime(settings: Settings, client: Client, pool: AsyncConnectionPool,
                         *, leave_agents: bool = False):
    """The client worker's parts, running; on exit every agent is stopped and output
    flushed. `leave_agents`: those the keeper keeps are left running to it instead (an
    upgrade or a restart: the next worker adopts them and their sessions re-attach)."""
    for root in settings.resolved_workspace_roots:
        root.mkdir(parents=True, exist_ok=True)
    store = PgOutputStore(pool, interval_s=settings.output_flush_interval_s,
                          flush_bytes=settings.output_flush_bytes,
                          retention_bytes=settings.output_retention_bytes)
    store.start()
    meter = meter_of(client)
    keeper = await asyncio.to_thread(start_keeper, settings) if settings.keeper else None
    manager = SessionManager(settings.profiles, OutputCounter(store, meter),
                             transcripts_dir=(settings.home / "transcripts").resolve(),
                             rows=settings.terminal_rows, cols=settings.terminal_cols,
                             stall_after_s=settings.stall_after_s, keeper=keeper)
    usage = UsageTracker(pool, meter, interval_s=settings.usage_interval_s)
    usage.start()
    acts = ClientActivities(settings, manager, client,
                            office_policy=lambda office_id: reads.office_policy(pool, office_id),
                            usage=usage)
    # the agents a worker of this machine left (it died, or was restarted): their sessions
    # re-attach to them (reattach_agent) instead of restarting
    adopted = await acts.adopt_kept()
    if adopted:
        log.info("adopted %d live agents from the keeper", len(adopted))
    changes = ChangesActivities(settings)
    await register_machine(pool, settings)
    worker = Worker(
        client,
        task_queue=settings.machine_task_queue,
        activities=[acts.start_agent, acts.watch_agent, acts.send_input, acts.stop_agent,
                    acts.resize_terminal, acts.answer_input, acts.reattach_agent,
                    changes.read_changes, changes.hand_off],
        interceptors=[ContextInterceptor()],
        max_concurrent_activities=2000,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    housekeeping = asyncio.create_task(_housekeeping(acts, pool, settings))
    left: list[str] = []
    gauges = asyncio.create_task(report_terminals(manager, meter))
    try:
        async with worker:
            yield acts
            if leave_agents and keeper is not None:
                left.extend(await manager.leave_all())
                log.info("left %d agents running to the keeper", len(left))
            # stop agents first, telling their sessions it is a drain: their watch activities
            # then finish and the worker can shut down (those left to the keeper fail theirs
            # as "worker left" when the shutdown cancels them: their sessions re-attach)
            await manager.close_all(drain=True)
    finally:
        housekeeping.cancel()
        gauges.cancel()
        await manager.close_all()
        await acts.aclose()
        await usage.close()
        await store.close()
        if keeper is not None and not left:
            # its agents are stopped: with no other worker, the keeper goes too
            try:
                await asyncio.to_thread(keeper.exit_if_idle)
            except KeeperError as err:
                log.warning("keeper: %s", err)
            keeper.close()


def start_keeper(settings: Settings) -> KeeperClient:
    """This machine's keeper: found at its socket, or started (see keeper/)."""
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # a keeper with no agent and no worker for the grace has nothing left to keep
    return ensure_keeper(str(settings.keeper_socket), grace_s=settings.keeper_grace_s,
                         exit_when_idle_s=settings.keeper_grace_s,
                         log_path=str(logs / "keeper.log"))


async def _housekeeping(
    acts: ClientActivities, pool: AsyncConnectionPool, settings: Settings
) -> None:
    next_prune = 0.0
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        try:
            await acts.reap_orphans()
            await machines.touch(pool, settings.machine_id)
            if settings.transcript_retention_days and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                pruned = acts.manager.prune_transcripts(settings.transcript_retention_days * 86400)
                if pruned:
                    log.info("deleted %d old transcripts", len(pruned))
        except Exception:
            log.exception("client housekeeping failed")


def hold_machine(settings: Settings, wait_s: float = MACHINE_LOCK_WAIT_S) -> int:
    """Make this process the one client worker of its machine and SEMO_HOME: a second one
    would claim the first one's agents from the keeper while it still reads them. An
    exclusive lock, which the kernel lets go of however the process ends (kill -9 too);
    raises ConfigError, naming the other worker, if it is not free within `wait_s`.
    Returns the lock's fd: keep it open."""
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.machine_id)[:64]
    fd = os.open(run / f"client-worker-{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if time.monotonic() > deadline:
                os.close(fd)
                raise ConfigError(
                    f"another client worker of machine {settings.machine_id} runs with "
                    f"SEMO_HOME {settings.home} (pid {holder}): stop it first, or give this one "
                    "its own SEMO_MACHINE_ID and SEMO_HOME") from None
            if not waiting:
                log.warning("waiting for the client worker of machine %s (pid %s) to exit",
                            settings.machine_id, holder)
                waiting = True
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


async def run_client_worker(settings: Settings, stop: asyncio.Event, *,
                            leave_agents: bool = True) -> None:
    lock = await asyncio.to_thread(hold_machine, settings)
    try:
        await _run_client_worker(settings, stop, leave_agents=leave_agents)
    finally:
        os.close(lock)


async def _run_client_worker(settings: Settings, stop: asyncio.Event, *,
                             leave_agents: bool) -> None:
    if not settings.keeper:
        # this process owns the agents: their orphans (double-forked daemons, ...) come here
        become_subreaper()
    client = await connect(settings)
    pool = await open_pool(settings.effective_database_url(), max_size=10, name="client-worker")
    try:
        async with client_runtime(settings, client, pool, leave_agents=leave_agents):
            log.info("client worker %s on %s", settings.machine_id, settings.machine_task_queue)
            await stop.wait()
    finally:
        await pool.close()
