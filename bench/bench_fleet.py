"""Against the peers' substrate, and at fleet load: `python -m bench.bench_fleet`.

Runs `semo dev` (tests/support/devstack.py: every component a real process on free ports) and
measures, in one run:

  tmux_mb_s           `cat` of a flood file (bench_monitor's synthetic Claude Code output)
                      into a pane of a private tmux server (`tmux -S SOCK -f /dev/null`,
                      200x50), timed until the pane's `tmux wait-for -S` after the cat
  pipeline_cat_mb_s   the same `cat` of the same file through our client pipeline, as
                      bench_terminal measures it (SessionManager, OutputMonitor,
                      PgOutputStore, until the last byte is committed to Postgres)
  pipeline_vs_tmux    pipeline_cat_mb_s / tmux_mb_s (goal >= 2.0); runs alternate, best of each
  tui_client_cpu_pct  the client worker's CPU (percent of one core, /proc/<pid>/stat) with
                      FLEET sessions (tests/support/fleet_load.py: a ~10 KB Claude-like
                      screen redrawn ten times a second) created through the API and watched
                      as Claude Code's are (a ClaudeDriver each) (goal <= 50)
  viewer_ws_latency_p50_ms / _p95_ms, viewer_sse_latency_p50_ms / _p95_ms
                      under that load: a frame's stamp written by one agent until the attach
                      WebSocket (and the SSE output stream) delivers it to a viewer
                      (frames a viewer had not received CATCH_UP_S after the window count
                      as that long: a lower bound; viewer_*_caught_up says 0 then); of the
                      worst of `--windows` (3) windows, one after another, over one fleet
  viewer_latency_runs  each window's worse p95 of the two (load_avg_1m_runs: the machine's
                      1-minute load at the end of each window)
  viewer_latency_p95_ms  the worst of them (goal <= 100)
  hop_<hop>_p50_ms / _p95_ms  where the time goes: per hop of the watched session's output
                      (semo/hops.py: read from the PTY, handed to the store, taken into a
                      save, committed, heard by the API, read back, sent on the WebSocket;
                      `viewer` is the WebSocket viewer's receipt), ms from a frame's stamp
                      until its last byte passed that hop, over every window's frames
  tui_offered_mb_s / tui_persisted_mb_s  what the agents wrote, and what reached Postgres,
                      over the same window; plus the API's, Postgres's and Temporal's CPU

Prints one JSON dict as its last line; goals are reported on stderr, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report_goals
from semo import procfs
from tests.support import fleet_load
from tests.support.devstack import DevStack
from tests.support.fleet_load import Fleet, Viewer, watch_sse, watch_ws

GOALS = {"pipeline_vs_tmux": (">=", 2.0), "tui_client_cpu_pct": ("<=", 50),
         "viewer_latency_p95_ms": ("<=", 100)}
TICK = os.sysconf("SC_CLK_TCK")
#: how long after the window the viewers may take to deliver its frames
CATCH_UP_S = 30.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else -1.0


# --- tmux against the pipeline -----------------------------------------------------------------


def ensure_tmux() -> str:
    """tmux's path, installing it (Debian's package, as root) when it is missing."""
    found = shutil.which("tmux")
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "tmux"], check=True, timeout=600,
                       stdout=subprocess.DEVNULL, env={**os.environ,
                                                       "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("tmux")
    if found is None:
        raise SystemExit("tmux is missing and could not be installed (not root?)")
    return found


def write_flood(path: Path, size: int) -> None:
    from bench.bench_monitor import make_stream

    block = make_stream(20_000_000).replace(b"\r\n", b"\n")
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:left])
            left -= len(block)


def tmux_cat(tmux: str, sock: Path, flood: Path) -> float:
    """MB/s of `cat` into a 200x50 pane of a private server, until its wait-for signal."""
    base = [tmux, "-S", str(sock), "-f", "/dev/null"]
    cmd = (f"cat {shlex.quote(str(flood))}; {shlex.quote(tmux)} -S {shlex.quote(str(sock))} "
           f"wait-for -S flood-done; sleep 600")
    t0 = time.perf_counter()
    subprocess.run([*base, "new-session", "-d", "-x", "200", "-y", "50", cmd], check=True,
                   timeout=60, env={**os.environ, "TERM": "xterm-256color"})
    subprocess.run([*base, "wait-for", "flood-done"], check=True, timeout=600)
    elapsed = time.perf_counter() - t0
    subprocess.run([*base, "kill-server"], timeout=30, stderr=subprocess.DEVNULL)
    return flood.stat().st_size / elapsed / 1e6


async def tmux_vs_pipeline(info: dict, root: Path, mb: float, runs: int) -> dict:
    from bench.bench_terminal import pipeline
    from db.pool import open_pool

    tmux = ensure_tmux()
    flood = root / "flood.bin"
    write_flood(flood, int(mb * 1e6))
    sock = root / "tmux.sock"
    workdir = root / "pipeline"
    workdir.mkdir()
    pool = await open_pool(info["database_url"], max_size=4, name="bench-fleet")
    tm, piped = [], []
    try:
        for n in range(runs):
            tm.append(await asyncio.to_thread(tmux_cat, tmux, sock, flood))
            piped.append((await pipeline(pool, 0, workdir, n, info["pids"]["postgres"],
                                         argv=["cat", str(flood)]))[0])
            print(f"run {n}: tmux {tm[-1]:.1f} MB/s, pipeline {piped[-1]:.1f} MB/s",
                  file=sys.stderr, flush=True)
    finally:
        await pool.close()
        if sock.exists():  # a run that failed half-way: its server goes too
            subprocess.run([tmux, "-S", str(sock), "kill-server"], timeout=30,
                           stderr=subprocess.DEVNULL)
        flood.unlink(missing_ok=True)
    return {"tmux_mb_s": round(max(tm), 1), "pipeline_cat_mb_s": round(max(piped), 1),
            "pipeline_vs_tmux": round(max(piped) / max(tm), 3), "flood_mb": mb}


# --- the fleet ---------------------------------------------------------------------------------


def cpu_s(pid: int, tree: bool = False) -> float:
    """CPU seconds of `pid` (with `tree`: and its direct children, as Postgres's backends)."""
    if not tree:
        f = procfs.stat(pid)
        return (int(f[procfs.UTIME]) + int(f[procfs.STIME])) / TICK if f else 0.0
    return sum(int(f[procfs.UTIME]) + int(f[procfs.STIME]) for p, f in procfs.processes()
               if p == pid or int(f[procfs.PPID]) == pid) / TICK


#: the hops a traced frame passes (semo/hops.py), in order; then the viewer's own receipt
HOPS = ("read", "stored", "batched", "committed", "notified", "ws_read", "ws_sent")


def read_hops(trace_dir: Path, sid: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per hop, the marks of `sid` in time order as (running max of end offset, time)."""
    marks: dict[str, list[tuple[float, int]]] = {}
    for path in trace_dir.glob("*.hops"):
        for line in path.read_text().splitlines():
            hop, who, end, at = line.split()
            if who == sid:
                marks.setdefault(hop, []).append((float(at), int(end)))
    out = {}
    for hop, items in marks.items():
        items.sort()
        ends, top = [], 0
        for _, end in items:
            top = max(top, end)
            ends.append(top)
        out[hop] = (ends, [at for at, _ in items])
    return out


def hop_latencies(viewer: Viewer, marks: dict, windows: list[tuple[float, float]]
                  ) -> dict[str, list[float]]:
    """For each hop, each frame written in a window: ms from its stamp until the first mark of
    that hop covering its last byte."""
    out: dict[str, list[float]] = {}
    for n, (wrote, got) in viewer.arrived.items():
        if not any(a <= wrote <= b for a, b in windows):
            continue
        offset = viewer.offsets[n]
        for hop, (ends, times) in marks.items():
            i = bisect.bisect_left(ends, offset)
            if i < len(ends):
                out.setdefault(hop, []).append((times[i] - wrote) * 1000)
        out.setdefault("viewer", []).append((got - wrote) * 1000)
    return out


async def fleet(info: dict, machine: str, go: Path, count: int, warm_s: float,
                window_s: float, windows: int, trace_dir: Path,
                timeline: Path | None = None) -> dict:
    import psycopg

    f = Fleet(info, machine, go, count)
    out: dict = {}
    tasks: list[asyncio.Task] = []
    try:
        out["fleet_create_s"] = round(await f.start(), 1)
        out["fleet_sessions"] = len(f.sids)
        watched = f.sids[0]
        (trace_dir / "sessions").write_text(watched + "\n")
        ws, sse = Viewer(), Viewer()
        tasks = [asyncio.create_task(watch_ws(info, f.office, watched, ws)),
                 asyncio.create_task(watch_sse(info, f.office, watched, sse))]
        await asyncio.wait_for(asyncio.gather(ws.ready.wait(), sse.ready.wait()), 60)
        go.touch()  # every agent starts redrawing
        await asyncio.sleep(warm_s)
        pids = info["pids"]
        cpu = {k: 0.0 for k in ("client_worker", "api", "postgres", "temporal",
                                "server_worker")}
        persisted, walls, spans, runs, loads = 0, 0.0, [], [], []
        async with await psycopg.AsyncConnection.connect(info["database_url"], autocommit=True,
                                                         connect_timeout=10) as conn:
            for run in range(windows):
                p0 = sum((await f.persisted(conn)).values())
                c0 = {k: cpu_s(pids[k], tree=k == "postgres") for k in cpu}
                t0 = time.time()
                await asyncio.sleep(window_s)
                t1 = time.time()
                c1 = {k: cpu_s(pids[k], tree=k == "postgres") for k in cpu}
                p1 = sum((await f.persisted(conn)).values())
                for k in cpu:
                    cpu[k] += c1[k] - c0[k]
                persisted += p1 - p0
                walls += t1 - t0
                spans.append((t0, t1))
                loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
                # every frame written in the window has reached a viewer once it has one
                # written after the window (frames arrive in order); bounded: one that has not
                # caught up by then counts what it still lacks at the bound (a lower bound,
                # said by _caught_up)
                bound = time.time() + CATCH_UP_S
                while time.time() < bound and not (ws.caught_up(t1) and sse.caught_up(t1)):
                    await asyncio.sleep(0.2)
                worst = 0.0
                for name, v in (("ws", ws), ("sse", sse)):
                    lat = v.latencies_ms(t0, t1)
                    behind = 0 if v.caught_up(t1) else v.missing(t0, t1, hz=10.0)
                    lat += [CATCH_UP_S * 1000 + window_s * 1000] * behind
                    p50, p95 = (round(statistics.median(lat), 1) if lat else -1,
                                round(pct(lat, 0.95), 1))
                    print(f"window {run}: {name} p50 {p50} p95 {p95} ms, {len(lat)} frames"
                          f"{'' if v.caught_up(t1) else ', NOT caught up'}",
                          file=sys.stderr, flush=True)
                    key = f"viewer_{name}_latency"
                    if run == 0 or p95 > out[f"{key}_p95_ms"]:  # the worst window's figures
                        out[f"{key}_p50_ms"], out[f"{key}_p95_ms"] = p50, p95
                        out[f"viewer_{name}_frames"] = len(lat) - behind
                        out[f"viewer_{name}_caught_up"] = int(v.caught_up(t1))
                    worst = max(worst, p95)
                runs.append(worst)
        for k in cpu:
            out[f"tui_{k}_cpu_pct"] = round(cpu[k] / walls * 100, 1)
        out["tui_client_cpu_pct"] = out.pop("tui_client_worker_cpu_pct")
        out["tui_offered_mb_s"] = round(count * fleet_load.FRAME_BYTES * 10 / 1e6, 2)
        out["tui_persisted_mb_s"] = round(persisted / walls / 1e6, 2)
        out["viewer_latency_runs"] = runs
        out["load_avg_1m_runs"] = loads  # at the end of each window: what else ran
        out["viewer_latency_p95_ms"] = max(runs)
        # where the time went: per hop, ms from a frame's stamp until it passed that hop
        await asyncio.sleep(1.5)  # the processes write their marks every half second
        marks = read_hops(trace_dir, watched)
        by_hop = hop_latencies(ws, marks, spans)
        for hop in (*HOPS, "viewer"):
            lat = by_hop.get(hop, [])
            out[f"hop_{hop}_p50_ms"] = round(statistics.median(lat), 1) if lat else -1
            out[f"hop_{hop}_p95_ms"] = round(pct(lat, 0.95), 1)
        print("hops (ms after the agent wrote a frame, p50 / p95): " + ", ".join(
            f"{hop} {out[f'hop_{hop}_p50_ms']}/{out[f'hop_{hop}_p95_ms']}"
            for hop in (*HOPS, "viewer")), file=sys.stderr, flush=True)
        if timeline is not None:  # every frame the WebSocket viewer had: when written, got
            t0 = spans[0][0]
            timeline.write_text("".join(f"{n} {w - t0:.3f} {(g - w) * 1000:.1f}\n"
                                        for n, (w, g) in sorted(ws.arrived.items())))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await f.close(delete=False)  # the stack's stop ends them all at once
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="flood size, 10^6 bytes")
    ap.add_argument("--runs", type=int, default=2, help="tmux/pipeline pairs (best of each)")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--warm-s", type=float, default=5.0)
    ap.add_argument("--window-s", type=float, default=20.0)
    ap.add_argument("--windows", type=int, default=3, help="fleet windows, one after another;"
                    " viewer_latency_p95_ms is the worst window's")
    ap.add_argument("--skip-tmux", action="store_true")
    ap.add_argument("--timeline", type=Path, help="write each frame's (n, written after the "
                    "window's start s, latency ms) as the WebSocket viewer saw it")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="semo-bench-fleet-"))
    go = root / "go"
    # the agents draw through every window and the viewers' catch-up after each
    frames = int((args.warm_s + args.windows * (args.window_s + 5) + 10) * 10)
    trace_dir = root / "hops"
    trace_dir.mkdir()
    os.environ["SEMO_HOP_TRACE"] = str(trace_dir)  # the stack's processes mark each hop
    machine = "bench-fleet"
    stack = DevStack(root, machine_id=machine, agent_profiles=json.dumps(
        {"tui": fleet_load.profile(str(go), frames)}))
    figures: dict = {"load_avg_1m": float(Path("/proc/loadavg").read_text().split()[0])}
    try:
        info = stack.start()
        if not args.skip_tmux:
            figures.update(asyncio.run(tmux_vs_pipeline(info, root, args.mb, args.runs)))
        figures.update(asyncio.run(fleet(info, machine, go, args.sessions, args.warm_s,
                                         args.window_s, args.windows, trace_dir,
                                         args.timeline)))
    finally:
        if stack.proc is not None:
            stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    report_goals(figures, GOALS)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
