"""Behaviour under fleet load: 200 Claude-like TUIs redrawing ~10 KB screens ten times a
second (tests/fleet_load.py), every component a real process (`semo dev`, tests/devstack.py),
each session created through the API and watched by a ClaudeDriver.

What a user checks, not how fast: a viewer attached through the WebSocket, and one on the SSE
stream, receive every byte one agent wrote, in order; what retention keeps in
`session_output` is a contiguous tail of what each agent wrote, up to its last byte; and no
session is starved: every one's output is all in Postgres within a generous bound.

Retention is set low (SEMO_OUTPUT_RETENTION_BYTES) so that trimming happens in a short run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import psycopg
import pytest

import fleet_load
from devstack import DevStack
from fleet_load import Fleet, Viewer, watch_sse, watch_ws

SESSIONS = 200
FRAMES = 12  # 1.2 s of redraws: ~120 KB an agent, 23 MB in all
RETENTION = 32 * 1024
TOTAL = fleet_load.total_bytes(FRAMES)
MACHINE = "fleet-test"


class Run:
    def __init__(self) -> None:
        self.ws = Viewer()
        self.sse = Viewer()
        self.rows: dict[str, list[tuple[int, int, bytes]]] = {}
        self.ends: dict[str, int] = {}
        self.sids: list[str] = []
        self.timings: dict[str, float] = {}


async def _load(info: dict, go: Path) -> Run:
    run = Run()
    fleet = Fleet(info, MACHINE, go, SESSIONS)
    tasks: list[asyncio.Task] = []
    try:
        run.timings["create_s"] = await fleet.start(parallel=16)
        t0 = time.monotonic()
        run.sids = fleet.sids
        tasks = [asyncio.create_task(watch_ws(info, fleet.office, fleet.sids[0], run.ws)),
                 asyncio.create_task(watch_sse(info, fleet.office, fleet.sids[0], run.sse))]
        await asyncio.wait_for(asyncio.gather(run.ws.ready.wait(), run.sse.ready.wait()), 60)
        go.touch()
        async with await psycopg.AsyncConnection.connect(info["database_url"], autocommit=True,
                                                         connect_timeout=10) as conn:
            deadline = time.monotonic() + 180  # generous: the agents alone need four seconds
            while time.monotonic() < deadline:
                run.ends = await fleet.persisted(conn)
                if len(run.ends) == SESSIONS and all(e == TOTAL for e in run.ends.values()):
                    break
                await asyncio.sleep(0.5)
            run.timings["saved_s"] = time.monotonic() - t0
            for sid in fleet.sids:
                run.rows[sid] = [(s, e, bytes(d)) for s, e, d in await (await conn.execute(
                    "select start_offset, end_offset, data from session_output"
                    " where session_id = %s order by start_offset", (sid,))).fetchall()]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(run.ws.data) < TOTAL
                                               or len(run.sse.data) < TOTAL):
            if any(t.done() for t in tasks):
                break  # a viewer ended early: its bytes are what the tests check
            await asyncio.sleep(0.2)
        run.timings["viewed_s"] = time.monotonic() - t0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fleet.close()
    print(f"fleet: {run.timings}", file=sys.stderr)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("fleet")
    go = root / "go"
    stack = DevStack(root, machine_id=MACHINE, output_retention_bytes=str(RETENTION),
                     command_timeout_s="120",
                     agent_profiles=json.dumps({"tui": fleet_load.profile(str(go), FRAMES)}))
    try:
        info = stack.start()
        return asyncio.run(_load(info, go))
    finally:
        if stack.proc is not None:
            stack.stop()


def _frames(data: bytes) -> list[int]:
    return [int(m.group(2)) for m in fleet_load.STAMP.finditer(data)]


@pytest.mark.parametrize("viewer", ["ws", "sse"])
def test_a_viewer_receives_every_byte_one_agent_wrote_in_order(run, viewer):
    data = bytes(getattr(run, viewer).data)
    assert _frames(data) == list(range(FRAMES))
    assert len(data) == TOTAL
    assert data == fleet_load.expected(data)


def test_retention_keeps_a_contiguous_tail_up_to_the_last_byte(run):
    for sid in run.sids:
        rows = run.rows[sid]
        assert rows, f"{sid}: nothing kept"
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:])), f"{sid}: a gap in the rows"
        assert rows[-1][1] == TOTAL, f"{sid}: kept up to {rows[-1][1]} of {TOTAL}"
        kept_from = rows[0][0]
        assert 0 < kept_from <= TOTAL - RETENTION, f"{sid}: retention kept from {kept_from}"
        kept = b"".join(d for _, _, d in rows)
        # from the first whole frame kept (before it: the tail of one cut by retention)
        whole = kept[kept.index(fleet_load.FRAME_START):]
        assert len(kept) - len(whole) < fleet_load.FRAME_BYTES
        frames = _frames(whole)
        assert frames == list(range(frames[0], FRAMES)), f"{sid}: frames {frames[:3]}..."
        assert whole == fleet_load.expected(whole)[len(fleet_load.INIT):], f"{sid}: bytes differ"


def test_no_session_is_starved(run):
    assert len(run.ends) == SESSIONS
    behind = {sid: end for sid, end in run.ends.items() if end != TOTAL}
    assert not behind, f"{len(behind)} sessions not all saved within the bound: {behind}"
