"""The terminal runtime under load: `python -m bench.bench_terminal`.

Starts an embedded Postgres (free port, temporary directory) and measures, in this process
acting as the client worker:

  pty_raw_mb_s        ptyprocess alone reading a program that prints 200 MB (10^6 bytes/s) of
                      bench_monitor's synthetic Claude Code output
  pipeline_mb_s       the whole client pipeline on the same program: SessionManager reading,
                      OutputMonitor scanning, PgOutputStore persisting to Postgres, timed
                      until the last byte is committed
  pipeline_ratio      pipeline_mb_s / pty_raw_mb_s (goal >= 0.8)
  monitor_mb_s        bench_monitor's scan rate, measured in this run (in the 128 KiB batches
                      the SessionManager feeds it under a flood; monitor_4k_mb_s: 4 KiB)
  monitor_vs_pty      monitor_mb_s / pty_raw_mb_s (goal >= 10)
  concurrent_sessions shell sessions live at once on one SessionManager, each answering a
                      command (goal >= 200)
  client_rss_mb_per_session   growth of this process's RSS per live session (goal <= 2)
  idle_cpu_pct        this process's CPU with those sessions idle (goal <= 5)
  idle_cpu_pct_claude the same with as many sessions watched as Claude Code's are (a real
                      ClaudeDriver on each PTY, whose program draws Claude's idle input box
                      and sleeps: the CLI itself is too big to run 200 times here)
  leaked_processes    agent processes (and zombies) left after they are all terminated (0)
  create_terminate_ms one create + terminate cycle of a shell session

Raw and pipeline runs alternate (best of `--runs` each), so both see the same machine.
Prints one JSON dict as its last line; goals are reported on stderr, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ptyprocess import PtyProcess

from activities.output_store import PgOutputStore
from activities.terminal import SessionManager
from bench import report_goals
from db.migrate import migrate
from db.pool import open_pool
from dev.embedded import free_port, start_postgres, stop_postgres
from semo import procfs
from semo.settings import BUILTIN_PROFILES, AgentProfile

#: prints argv[2] bytes of the file argv[1] (over and over) as fast as it can, 64 KiB a write
FLOOD = r"""
import os, sys
data, n, w = open(sys.argv[1], "rb").read(), int(sys.argv[2]), 0
while w < n:
    i = w % len(data)
    w += os.write(1, data[i:i + min(65536, n - w)])
"""

GOALS = {"pipeline_ratio": (">=", 0.8), "monitor_vs_pty": (">=", 10),
         "concurrent_sessions": (">=", 200), "client_rss_mb_per_session": ("<=", 2),
         "idle_cpu_pct": ("<=", 5), "idle_cpu_pct_claude": ("<=", 5),
         "leaked_processes": ("<=", 0)}

#: Claude Code's idle screen (its input box), drawn once; then the program just waits
IDLE_CLAUDE = r"""
import sys, time
w = 100
sys.stdout.write("\x1b[2J\x1b[H\u25cf Ready.\r\n\r\n\u256d" + "\u2500" * (w - 2) + "\u256e\r\n"
                 "\u2502 > " + " " * (w - 5) + "\u2502\r\n\u2570" + "\u2500" * (w - 2)
                 + "\u256f\r\n  ? for shortcuts")
sys.stdout.flush()
time.sleep(3600)
"""


def flood_argv(size: int) -> list[str]:
    return [sys.executable, "-c", FLOOD, str(STREAM), str(size)]


#: what the flood prints: bench_monitor's synthetic Claude Code output (escape-heavy
#: repaints, colour, box drawing, prose), with LF line ends as a program writes them
STREAM = Path(tempfile.gettempdir()) / f"semo-bench-stream-{os.getpid()}.bin"


def write_stream(size: int = 20_000_000) -> None:
    from bench.bench_monitor import make_stream

    STREAM.write_bytes(make_stream(size).replace(b"\r\n", b"\n"))


def pty_raw(size: int) -> tuple[float, int]:
    """(MB/s, bytes) of ptyprocess reading the flood program until EOF."""
    t0 = time.perf_counter()
    proc = PtyProcess.spawn(flood_argv(size), dimensions=(40, 120))
    total = 0
    while True:
        try:
            data = proc.read(65536)
        except EOFError:
            break
        total += len(data)
    elapsed = time.perf_counter() - t0
    proc.close(force=True)
    return total / elapsed / 1e6, total


async def pipeline(pool, size: int, workdir: Path, n: int, pg_pid: int,
                   argv: list[str] | None = None) -> tuple[float, int, dict]:
    """(MB/s, bytes, CPU ms per MB of this process and of Postgres) of the client pipeline
    on the flood program (or `argv`: bench_fleet's `cat` of a file), until all is committed."""
    store = PgOutputStore(pool)
    store.start()
    profiles = {"flood": AgentProfile(argv=argv or flood_argv(size), monitor="claude")}
    manager = SessionManager(profiles, store, transcripts_dir=workdir / "transcripts")
    sid = f"bench-flood-{n}"
    cpu0, pg0 = cpu_s(), tree_cpu_s(pg_pid)
    t0 = time.perf_counter()
    term = await manager.create(sid, workdir, "flood")
    await term.exited.wait()
    await store.flush(sid)
    elapsed = time.perf_counter() - t0
    total = term.offset
    mb = total / 1e6
    cpu = {
        "worker": (cpu_s() - cpu0) * 1000 / mb,
        "postgres": (tree_cpu_s(pg_pid) - pg0) * 1000 / mb,
    }
    async with pool.connection() as conn:
        end = (await (await conn.execute(
            "select max(end_offset) from session_output where session_id = %s", (sid,)
        )).fetchone())[0]
    assert end == total, f"persisted up to {end}, read {total}"
    await manager.close_all()
    await store.close()
    async with pool.connection() as conn:
        await conn.execute("delete from session_output where session_id = %s", (sid,))
    (workdir / "transcripts" / f"{sid}.log").unlink(missing_ok=True)
    return total / elapsed / 1e6, total, cpu


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def cpu_pct_over(seconds: float) -> float:
    """This process's CPU use, in percent of one core, while the event loop runs `seconds`."""
    c0, w0 = cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (cpu_s() - c0) / (time.perf_counter() - w0) * 100


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its children (Postgres: the postmaster and its backends)."""
    ticks = sum(int(f[procfs.UTIME]) + int(f[procfs.STIME]) for p, f in procfs.processes()
                if p == pid or int(f[procfs.PPID]) == pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def leftovers(prefix: str) -> int:
    """Live processes whose SEMO_SESSION_ID starts with `prefix`, plus our zombie children."""
    needle = f"SEMO_SESSION_ID={prefix}".encode()
    me = os.getpid()
    return sum(1 for pid, f in procfs.processes()
               if (f[procfs.STATE] == b"Z" and int(f[procfs.PPID]) == me)
               or any(v.startswith(needle) for v in procfs.environ(pid)))


async def sessions(pool, count: int, workdir: Path, idle_s: float) -> dict:
    store = PgOutputStore(pool)
    store.start()
    manager = SessionManager(BUILTIN_PROFILES, store, transcripts_dir=workdir / "transcripts")
    # warm up: the first session pays for imports and caches
    await manager.create("bench-warm", workdir, "shell")
    await manager.terminate("bench-warm")
    cycles = 50
    t0 = time.perf_counter()
    for i in range(cycles):
        await manager.create(f"bench-cycle-{i}", workdir, "shell")
        await manager.terminate(f"bench-cycle-{i}")
    cycle_ms = (time.perf_counter() - t0) / cycles * 1000
    await asyncio.sleep(0.5)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    for i in range(count):
        await manager.create(f"bench-s{i}", workdir, "shell")
    create_s = time.perf_counter() - t0
    for i in range(count):
        await manager.execute(f"bench-s{i}", f"echo answer-$(({i}+1000))")

    async def answered(i: int) -> bool:
        want = f"answer-{i + 1000}".encode()
        for _ in range(300):
            if want in manager.get_output(f"bench-s{i}")[1]:
                return True
            await asyncio.sleep(0.05)
        return False

    live = sum(await asyncio.gather(*(answered(i) for i in range(count))))
    await asyncio.sleep(1.0)  # let the output settle and be saved
    rss1 = rss_mb()
    idle_cpu = await cpu_pct_over(idle_s)
    t0 = time.perf_counter()
    await manager.close_all()
    stop_s = time.perf_counter() - t0
    await store.close()
    await asyncio.sleep(0.2)
    claude_cpu = await claude_idle_cpu(pool, count, workdir, idle_s)
    return {
        "concurrent_sessions": live,
        "client_rss_mb_per_session": round((rss1 - rss0) / count, 3),
        "idle_cpu_pct": round(idle_cpu, 2),
        "idle_cpu_pct_claude": round(claude_cpu, 2),
        "leaked_processes": leftovers("bench-"),
        "create_terminate_ms": round(cycle_ms, 2),
        "sessions_create_s": round(create_s, 2),
        "sessions_terminate_all_s": round(stop_s, 2),
    }


async def claude_idle_cpu(pool, count: int, workdir: Path, idle_s: float) -> float:
    """This process's CPU with `count` idle sessions whose screens ClaudeDrivers watch."""
    from activities.claude import ClaudeDriver

    store = PgOutputStore(pool)
    store.start()
    profile = AgentProfile(argv=[sys.executable, "-c", IDLE_CLAUDE], monitor="claude")
    manager = SessionManager({"idle-claude": profile}, store)

    async def no_events(term, ev) -> None:
        pass

    drivers = []
    for i in range(count):
        term = await manager.create(f"bench-claude-{i}", workdir, "idle-claude")
        driver = ClaudeDriver(manager, term.session_id, term.generation, profile, no_events)
        driver.attach(term)
        drivers.append(driver)

    async def drawn(driver) -> bool:
        for _ in range(600):
            if any("? for shortcuts" in line for line in driver.lines()):
                return True
            await asyncio.sleep(0.05)
        return False

    assert all(await asyncio.gather(*(drawn(d) for d in drivers))), "a screen was not drawn"
    await asyncio.sleep(1.0)
    cpu = await cpu_pct_over(idle_s)
    for driver in drivers:
        await driver.close()
    await manager.close_all()
    await store.close()
    return cpu


async def run(url: str, size: int, runs: int, count: int, idle_s: float, workdir: Path,
              pg_pid: int) -> dict:
    from bench.bench_monitor import run as monitor_run

    pool = await open_pool(url, max_size=10, name="bench")
    try:
        # first, while this process is still small and has freed nothing: RSS growth is
        # what the sessions cost
        out = await sessions(pool, count, workdir, idle_s)
        raw, piped = [], []
        load = float(Path("/proc/loadavg").read_text().split()[0])
        for n in range(runs):
            raw.append(await asyncio.to_thread(pty_raw, size))
            piped.append(await pipeline(pool, size, workdir, n, pg_pid))
            print(f"run {n}: raw {raw[-1][0]:.1f} MB/s, pipeline {piped[-1][0]:.1f} MB/s",
                  file=sys.stderr, flush=True)
        raw_best, piped_best = max(r for r, _ in raw), max(p for p, _, _ in piped)
        cpu = min((c for _, _, c in piped), key=lambda c: c["worker"])
        scan = monitor_run(repeat=3)
        monitor = scan["monitor_mb_s"]
        out.update({
            "pty_raw_mb_s": round(raw_best, 1),
            "pipeline_mb_s": round(piped_best, 1),
            "pipeline_ratio": round(piped_best / raw_best, 3),
            "monitor_mb_s": monitor,
            "monitor_vs_pty": round(monitor / raw_best, 2),
            "monitor_4k_mb_s": scan["monitor_4k_mb_s"],
            "pipeline_mb": round(piped[-1][1] / 1e6, 1),
            # where the pipeline's time goes: CPU per MB of the client worker (read, monitor,
            # store) and of Postgres; and how busy the machine was (the figures are wall-clock)
            "pipeline_worker_cpu_ms_per_mb": round(cpu["worker"], 2),
            "pipeline_postgres_cpu_ms_per_mb": round(cpu["postgres"], 2),
            "load_avg_1m": load,
        })
        return out
    finally:
        await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0, help="size of the flood, 10^6 bytes")
    ap.add_argument("--runs", type=int, default=3, help="raw/pipeline pairs (best of each)")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--idle-s", type=float, default=10.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="semo-bench-"))
    write_stream()
    port = free_port()
    pg = start_postgres(root / "postgres", port)
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        migrate(url)
        workdir = root / "work"
        workdir.mkdir()
        figures = asyncio.run(run(url, int(args.mb * 1e6), args.runs, args.sessions,
                                  args.idle_s, workdir, pg.pid))
    finally:
        stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)
        STREAM.unlink(missing_ok=True)
    report_goals(figures, GOALS)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
