"""Webhook delivery latency under load, on the embedded stack (`semo dev`, real processes).

50 sessions are kept busy with prompts for a while; a webhook subscribed to `job.done` posts
to a receiver in this process. The latency of one delivery is from the state change (the
event's `at`: the time of the transaction that ended the job, by Postgres' clock, the same
machine's) to the receiver reading the request.

Keys: webhook_delivery_p50_ms, webhook_delivery_p95_ms, webhooks_delivered,
webhook_delivery_idle_p50_ms (one session alone, before the load), and
webhook_bench_prompt_p50_ms (`POST …/prompt` under the same load, for scale).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.bench_e2e import office, pct, wait_job
from tests.support.devstack import DevStack
from tests.support.webhook_receiver import Received, Receiver

SESSIONS = 50
BUSY_S = 15.0
IDLE_REPS = 20


def _latency(r: Received) -> float:
    """State change (the event's `at`) to the receiver, in ms."""
    return (r.at - datetime.fromisoformat(r.json()["at"]).timestamp()) * 1000


async def measure(stack: DevStack, info: dict, receiver: Receiver) -> dict[str, float]:
    idle: list[float] = []
    async with httpx.AsyncClient(base_url=info["api_url"], timeout=120,
                                 headers={"Authorization": f"Bearer {info['token']}"},
                                 limits=httpx.Limits(max_connections=200)) as api:
        o = await office(api, stack.machine_id, max_sessions=SESSIONS + 5)
        r = await api.post(f"/api/offices/{o}/webhooks",
                           json={"url": receiver.url, "events": ["job.done"]})
        r.raise_for_status()
        sids = await asyncio.gather(*(_start(api, o) for _ in range(SESSIONS)))
        # one session alone first: the cost of a delivery itself, without load
        for _ in range(IDLE_REPS):
            r = await api.post(f"/api/offices/{o}/sessions/{sids[0]}/prompt",
                               json={"prompt": "printf '[SEMO:%s]\\n' DONE"})
            r.raise_for_status()
            await wait_job(api, o, r.json()["job_id"])
            until = time.monotonic() + 30
            while len(receiver.requests) < len(idle) + 1 and time.monotonic() < until:
                await asyncio.sleep(0.002)
            idle.append(_latency(receiver.requests[-1]))
        receiver.requests.clear()
        deadline = time.perf_counter() + BUSY_S
        jobs: list[str] = []
        prompt_ms: list[float] = []

        async def keep_busy(s: str) -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await api.post(f"/api/offices/{o}/sessions/{s}/prompt",
                                   json={"prompt": "printf '[SEMO:%s]\\n' DONE"})
                prompt_ms.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                jobs.append(r.json()["job_id"])
                await wait_job(api, o, r.json()["job_id"], poll_s=0.02)

        await asyncio.gather(*(keep_busy(s) for s in sids))
        # every job's webhook arrives (the last ones a moment after their job ended)
        until = time.monotonic() + 60
        while len(receiver.of_type("job.done")) < len(jobs) and time.monotonic() < until:
            await asyncio.sleep(0.05)
        await api.delete(f"/api/offices/{o}")
    got = receiver.of_type("job.done")
    if len(got) < len(jobs):
        raise SystemExit(f"only {len(got)} of {len(jobs)} job.done webhooks arrived")
    latencies = [_latency(r) for r in got]
    return {"webhook_delivery_idle_p50_ms": statistics.median(idle),
            "webhook_delivery_p50_ms": statistics.median(latencies),
            "webhook_delivery_p95_ms": pct(latencies, 0.95),
            "webhooks_delivered": float(len(got)),
            # the same load's prompt latency, for scale: both wait on the same Temporal server
            "webhook_bench_prompt_p50_ms": statistics.median(prompt_ms)}


async def _start(api: httpx.AsyncClient, o: str) -> str:
    r = await api.post(f"/api/offices/{o}/sessions", json={"role": "BE"})
    r.raise_for_status()
    return r.json()["session_id"]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="semo-bench-hooks-"))
    stack = DevStack(root, machine_id="bench")
    try:
        info = stack.start()
        with Receiver() as receiver:
            results = asyncio.run(measure(stack, info, receiver))
    finally:
        if stack.proc is not None:
            stack.stop()
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
