"""Behaviour under fleet load: 200 Claude-like TUIs redrawing ~10 KB screens ten times a
second (tests/support/fleet_load.py), every component a real process (`semo dev`, tests/support/devstack.py),
each session created through the API and watched by a ClaudeDriver.

What a user checks, not how fast: a viewer attached through the WebSocket, and one on the SSE
stream, receive every byte one agent wrote, in order; what retention keeps in
`session_output` is a contiguous tail of what each agent wrote, up to its last byte; and no
session is starved: every one's output is all in Postgres within a generous bound.

The fleet redraws for three seconds (~300 KB an agent, 60 MB in all: what the client worker
reads in about as long, see README's Performance), and the session the viewers watch for
six, long enough for retention (set low with SEMO_OUTPUT_RETENTION_BYTES) to trim it while
they watch.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import psycopg
import pytest

from semo import procfs
from tests.support import fleet_load
from tests.support.devstack import DevStack
from tests.support.fleet_load import Fleet, Viewer, watch_sse, watch_ws

SESSIONS = 200
FRAMES = 30  # the fleet: 3 s of redraws, ~300 KB an agent
WATCHED_FRAMES = 60  # the watched session: 6 s, ~584 KB
#: well below what the watched agent writes (so it is trimmed), well above what one save
#: holds of it: rows trimmed in the save that inserts them were never there to be read
RETENTION = 256 * 1024
MACHINE = "fleet-test"


class Run:
    def __init__(self) -> None:
        self.ws = Viewer()
        self.sse = Viewer()
        self.rows: dict[str, list[tuple[int, int, bytes]]] = {}
        self.ends: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.watched = ""
        self.timings: dict[str, float] = {}
        self.left: list[int] = []  # agent processes alive after the stack stopped


async def _load(info: dict, go: Path) -> Run:
    run = Run()
    fleets = [Fleet(info, MACHINE, go, 1, agent="tui-watched"),
              Fleet(info, MACHINE, go, SESSIONS - 1)]
    tasks: list[asyncio.Task] = []
    try:
        t0 = time.monotonic()
        for fleet in fleets:
            await fleet.start(parallel=16)
        run.timings["create_s"] = time.monotonic() - t0
        watched, office = fleets[0].sids[0], fleets[0].office
        run.watched = watched
        run.totals = {sid: fleet_load.total_bytes(FRAMES) for sid in fleets[1].sids}
        run.totals[watched] = fleet_load.total_bytes(WATCHED_FRAMES)
        tasks = [asyncio.create_task(watch_ws(info, office, watched, run.ws)),
                 asyncio.create_task(watch_sse(info, office, watched, run.sse))]
        await asyncio.wait_for(asyncio.gather(run.ws.ready.wait(), run.sse.ready.wait()), 60)
        go.touch()  # every agent starts redrawing
        t0 = time.monotonic()
        sids = list(run.totals)
        async with await psycopg.AsyncConnection.connect(info["database_url"], autocommit=True,
                                                         connect_timeout=10) as conn:
            deadline = t0 + 180  # generous: the agents alone need a few seconds
            while time.monotonic() < deadline:
                run.ends = {sid: end for sid, end in await (await conn.execute(
                    "select session_id, max(end_offset) from session_output"
                    " where session_id = any(%s) group by session_id", (sids,))).fetchall()}
                if run.ends == run.totals:
                    break
                await asyncio.sleep(0.5)
            run.timings["saved_s"] = time.monotonic() - t0
            for sid in sids:
                run.rows[sid] = [(s, e, bytes(d)) for s, e, d in await (await conn.execute(
                    "select start_offset, end_offset, data from session_output"
                    " where session_id = %s order by start_offset", (sid,))).fetchall()]
        total = run.totals[watched]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(run.ws.data) < total
                                               or len(run.sse.data) < total):
            if any(t.done() for t in tasks):
                break  # a viewer ended early: its bytes are what the tests check
            await asyncio.sleep(0.2)
        run.timings["viewed_s"] = time.monotonic() - t0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fleet in fleets:
            await fleet.close(delete=False)  # the stack's stop ends them all at once
    print(f"fleet: {run.timings}", file=sys.stderr)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("fleet")
    go = root / "go"
    profiles = {"tui": fleet_load.profile(str(go), FRAMES),
                "tui-watched": fleet_load.profile(str(go), WATCHED_FRAMES)}
    stack = DevStack(root, machine_id=MACHINE, output_retention_bytes=str(RETENTION),
                     command_timeout_s="300", agent_profiles=json.dumps(profiles))
    try:
        info = stack.start()
        run = asyncio.run(_load(info, go))
    finally:
        if stack.proc is not None:
            stack.stop()
    marks = {f"SEMO_SESSION_ID={sid}".encode() for sid in run.totals}
    run.left = [pid for pid, f in procfs.processes()
                if f[procfs.STATE] != b"Z" and marks.intersection(procfs.environ(pid))]
    return run


def _frames(data: bytes) -> list[int]:
    return [int(m.group(2)) for m in fleet_load.STAMP.finditer(data)]


@pytest.mark.parametrize("viewer", ["ws", "sse"])
def test_a_viewer_receives_every_byte_one_agent_wrote_in_order(run, viewer):
    data = bytes(getattr(run, viewer).data)
    assert _frames(data) == list(range(WATCHED_FRAMES))
    assert len(data) == run.totals[run.watched]
    assert data == fleet_load.expected(data)


def test_retention_keeps_a_contiguous_tail_up_to_the_last_byte(run):
    for sid, total in run.totals.items():
        rows = run.rows[sid]
        assert rows, f"{sid}: nothing kept"
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False)), f"{sid}: a gap in the rows"
        assert rows[-1][1] == total, f"{sid}: kept up to {rows[-1][1]} of {total}"
        kept_from = rows[0][0]
        assert kept_from <= total - min(RETENTION, total), f"{sid}: kept from {kept_from}"
        kept = b"".join(d for _, _, d in rows)
        if kept_from == 0:
            assert kept == fleet_load.expected(kept), f"{sid}: bytes differ"
            continue
        # from the first whole frame kept (before it: the tail of one cut by retention)
        whole = kept[kept.index(fleet_load.FRAME_START):]
        assert len(kept) - len(whole) < fleet_load.FRAME_BYTES
        frames = _frames(whole)
        assert frames == list(range(frames[0], frames[0] + len(frames))) and frames, sid
        assert whole == fleet_load.expected(whole)[len(fleet_load.INIT):], f"{sid}: bytes differ"
    assert run.rows[run.watched][0][0] > 0, "retention never trimmed the watched session"


def test_no_session_is_starved(run):
    behind = {sid: run.ends.get(sid) for sid, total in run.totals.items()
              if run.ends.get(sid) != total}
    assert not behind, f"{len(behind)} sessions not all saved within the bound: {behind}"


def test_no_agent_outlives_the_stack(run):
    assert run.left == []
