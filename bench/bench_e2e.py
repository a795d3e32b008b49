"""End-to-end latency and throughput on the embedded stack, against the engine's own floor.

`semo dev` runs the system as it runs for a user (separate processes, HTTP in front); this
process measures through the API. The floor is a bare Temporal update that runs one activity
on another task queue, on the same server, measured in the same run, so ratios hold on a
noisy machine.

Keys: bare_update_activity_p50_ms, prompt_p50_ms, prompt_p95_ms, prompt_ratio,
completion_p50_ms, completion_p95_ms, sessions_started_per_s, session_start_p95_ms,
prompts_per_s, prompts_busy_p95_ms, history_events_per_lifecycle, history_bytes_per_job,
history_bytes_per_10mb_output (what printing 10 MB adds over the same job printing nothing),
warm_acquire_p50_ms, cold_create_p50_ms, warm_cold_ratio.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from bench.floor import BenchFloor, bench_noop
from tests.support.devstack import DevStack

REPS = 60


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --- the floor ------------------------------------------------------------------------------


async def floor_ms(address: str) -> list[float]:
    client = await Client.connect(address)
    wq, aq = f"bench-wf-{uuid.uuid4().hex[:6]}", f"bench-act-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=wq, workflows=[BenchFloor]), \
            Worker(client, task_queue=aq, activities=[bench_noop]):
        handle = await client.start_workflow(BenchFloor.run, aq, id=f"floor-{wq}", task_queue=wq)
        samples = []
        for i in range(REPS + 5):
            t = time.perf_counter()
            await handle.execute_update(BenchFloor.poke, i)
            samples.append((time.perf_counter() - t) * 1000)
        await handle.signal(BenchFloor.finish)
        return samples[5:]


# --- through the API --------------------------------------------------------------------------


async def wait_job(
    api: httpx.AsyncClient, office: str, job_id: str, poll_s: float = 0.005
) -> float:
    """Poll the job through the API until it ends; the time it was first seen ended."""
    while True:
        job = (await api.get(f"/api/offices/{office}/jobs/{job_id}")).json()
        if job["status"] != "running":
            return time.time()
        await asyncio.sleep(poll_s)


async def office(api, machine: str, **fields) -> str:
    office_id = f"bench-{uuid.uuid4().hex[:6]}"
    r = await api.post("/api/offices", json={"office_id": office_id, "name": "bench",
                                             "machine_id": machine, "agent": "shell",
                                             "warm_roles": [], **fields})
    r.raise_for_status()
    return office_id


async def measure(stack: DevStack, info: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    floor = await floor_ms(info["temporal_address"])
    async with httpx.AsyncClient(base_url=info["api_url"], timeout=120,
                                 headers={"Authorization": f"Bearer {info['token']}"},
                                 limits=httpx.Limits(max_connections=200)) as api:
        o = await office(api, stack.machine_id, max_sessions=60)
        sid = (await api.post(f"/api/offices/{o}/sessions", json={"role": "BE"})).json()[
            "session_id"
        ]
        base = f"/api/offices/{o}/sessions/{sid}"

        # prompt latency (until the prompt is in the terminal) and completion latency
        # (the agent prints the marker -> the job reads `done` through the API)
        stamp = Path(tempfile.mkdtemp()) / "marker_at"
        prompt_ms, completion_ms = [], []
        for _i in range(REPS + 5):
            t = time.perf_counter()
            r = await api.post(f"{base}/prompt", json={
                "prompt": f"sleep 0.05; date +%s.%N > {stamp}; printf '[SEMO:%s]\\n' DONE"})
            prompt_ms.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            seen_done = await wait_job(api, o, r.json()["job_id"])
            completion_ms.append((seen_done - float(stamp.read_text())) * 1000)
        prompt_ms, completion_ms = prompt_ms[5:], completion_ms[5:]

        # one lifecycle's history, and history growth while printing 10 MB
        client = await Client.connect(info["temporal_address"])
        o2 = await office(api, stack.machine_id)
        s2 = (await api.post(f"/api/offices/{o2}/sessions", json={"role": "QA"})).json()
        r = await api.post(f"/api/offices/{o2}/sessions/{s2['session_id']}/prompt",
                           json={"prompt": "printf '[SEMO:%s]\\n' DONE"})
        await wait_job(api, o2, r.json()["job_id"])
        await api.delete(f"/api/offices/{o2}/sessions/{s2['session_id']}")
        history = await client.get_workflow_handle(s2["workflow_id"]).fetch_history()
        out["history_events_per_lifecycle"] = float(len(history.events))

        # history growth from output: a job that prints 10 MB against the same job silent
        # (protobuf bytes, as Temporal stores them): output must not enter history
        async def job_history_bytes(prompt: str) -> int:
            handle = client.get_workflow_handle(f"session/{o}/{sid}")
            before = sum(e.ByteSize() for e in (await handle.fetch_history()).events)
            r = await api.post(f"{base}/prompt", json={"prompt": prompt, "timeout_s": 600})
            await wait_job(api, o, r.json()["job_id"], poll_s=0.1)
            return sum(e.ByteSize() for e in (await handle.fetch_history()).events) - before

        silent = await job_history_bytes("head -c 7500000 /dev/zero | base64 -w 100 > /dev/null;"
                                         " printf '[SEMO:%s]\\n' DONE")
        loud = await job_history_bytes("head -c 7500000 /dev/zero | base64 -w 100;"
                                       " printf '[SEMO:%s]\\n' DONE")
        out["history_bytes_per_job"] = float(silent)
        out["history_bytes_per_10mb_output"] = float(max(loud - silent, 0))

        # 50 sessions started at once, then kept busy
        o3 = await office(api, stack.machine_id, max_sessions=60)
        starts = []

        async def start_one():
            t = time.perf_counter()
            r = await api.post(f"/api/offices/{o3}/sessions", json={"role": "FE"})
            starts.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            return r.json()["session_id"]

        t0 = time.perf_counter()
        sids = await asyncio.gather(*(start_one() for _ in range(50)))
        out["sessions_started_per_s"] = 50 / (time.perf_counter() - t0)
        out["session_start_p95_ms"] = pct(starts, 0.95)

        busy_ms: list[float] = []
        deadline = time.perf_counter() + 20

        async def keep_busy(s: str) -> int:
            n = 0
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await api.post(f"/api/offices/{o3}/sessions/{s}/prompt",
                                   json={"prompt": "printf '[SEMO:%s]\\n' DONE"})
                busy_ms.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                await wait_job(api, o3, r.json()["job_id"], poll_s=0.02)
                n += 1
            return n

        t0 = time.perf_counter()
        done = await asyncio.gather(*(keep_busy(s) for s in sids))
        out["prompts_per_s"] = sum(done) / (time.perf_counter() - t0)
        out["prompts_busy_p95_ms"] = pct(busy_ms, 0.95)
        await api.delete(f"/api/offices/{o3}")

        # warm acquire vs cold create
        o4 = await office(api, stack.machine_id, warm_roles=["BE"], max_sessions=6)
        while True:
            pool = (await api.get(f"/api/offices/{o4}")).json()["pool"]
            if any(s["pool_state"] == "idle" for s in pool["sessions"]):
                break
            await asyncio.sleep(0.05)
        warm, cold = [], []
        for _ in range(20):
            t = time.perf_counter()
            r = await api.post(f"/api/offices/{o4}/sessions", json={"role": "BE"})
            warm.append((time.perf_counter() - t) * 1000)
            assert r.json()["source"] == "warm", r.text
            await api.post(f"/api/offices/{o4}/sessions/{r.json()['session_id']}/release")
        o5 = await office(api, stack.machine_id, max_sessions=6)
        for _ in range(20):
            t = time.perf_counter()
            r = await api.post(f"/api/offices/{o5}/sessions", json={"role": "BE"})
            cold.append((time.perf_counter() - t) * 1000)
            assert r.json()["source"] == "cold", r.text
            await api.delete(f"/api/offices/{o5}/sessions/{r.json()['session_id']}")

    out.update({
        "bare_update_activity_p50_ms": statistics.median(floor),
        "prompt_p50_ms": statistics.median(prompt_ms),
        "prompt_p95_ms": pct(prompt_ms, 0.95),
        "completion_p50_ms": statistics.median(completion_ms),
        "completion_p95_ms": pct(completion_ms, 0.95),
        "warm_acquire_p50_ms": statistics.median(warm),
        "cold_create_p50_ms": statistics.median(cold),
    })
    out["prompt_ratio"] = out["prompt_p50_ms"] / out["bare_update_activity_p50_ms"]
    out["warm_cold_ratio"] = out["warm_acquire_p50_ms"] / out["cold_create_p50_ms"]
    return out


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="semo-bench-"))
    stack = DevStack(root, machine_id="bench")
    try:
        info = stack.start()
        results = asyncio.run(measure(stack, info))
    finally:
        if stack.proc is not None:
            stack.stop()
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
