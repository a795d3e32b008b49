"""A client worker killed mid-job (issue 25): how long the agents' output stops reaching a
viewer, and whether any of it is lost.

`semo dev` runs the system as for a user; a shell session's job prints a numbered line with
its write time every 10 ms. Each round kills the client worker with SIGKILL; `semo dev`
starts a new one, which adopts the agent from the keeper. The clock runs from the kill
until the first line written after it can be read through the API (GET .../output).

Keys: worker_restart_gap_ms (median over the rounds; goal <= 2000),
worker_restart_lost_bytes (bytes of the numbered lines missing from the stored output,
summed over the rounds; goal 0).
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import httpx

from bench.bench_e2e import pct
from tests.support.devstack import DevStack, wait

ROUNDS = 3
LINES = 1500
#: a line every 10 ms, each with its round, number and the time it was written (ns)
JOB = ("i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo r{r}-$i-$(date +%s%N); sleep 0.01; "
       "done; printf '[SEMO:%s]\\n' DONE")


def measure(stack: DevStack, info: dict) -> dict:
    with httpx.Client(base_url=info["api_url"], timeout=60,
                      headers={"Authorization": f"Bearer {info['token']}"}) as api:
        r = api.post("/api/offices", json={"office_id": "restarts", "name": "restarts",
                                           "machine_id": stack.machine_id, "agent": "shell",
                                           "warm_roles": []})
        r.raise_for_status()
        r = api.post("/api/offices/restarts/sessions", json={"role": "BE"})
        r.raise_for_status()
        sid = r.json()["session_id"]
        base = f"/api/offices/restarts/sessions/{sid}"
        gaps, lost = [], 0
        for rnd in range(ROUNDS):
            pattern = re.compile(rf"^r{rnd}-(\d+)-(\d+)\r?$", re.M)

            def lines(pattern=pattern) -> list[tuple[int, int]]:
                data = api.get(f"{base}/output", params={"limit": 1_000_000}).json()["data"]
                return [(int(a), int(b)) for a, b in pattern.findall(data)]

            r = api.post(f"{base}/prompt", json={"prompt": JOB.format(n=LINES, r=rnd)})
            r.raise_for_status()
            job_id = r.json()["job_id"]
            wait(lambda: len(lines()) > 100, 60, "the job printing")
            worker = stack.running_info()["pids"]["client_worker"]
            killed_ns = time.time_ns()
            os.kill(worker, signal.SIGKILL)
            while not any(t > killed_ns for _, t in lines()):
                time.sleep(0.005)
            gaps.append((time.time_ns() - killed_ns) / 1e6)
            job = wait(lambda job_id=job_id: (j := api.get(f"/api/offices/restarts/jobs/{job_id}")
                                                .json())["status"] != "running" and j,
                       180, "the job to end")
            assert job["status"] == "done", job
            seen = {n for n, _ in lines()}
            # a line is "r<round>-<n>-<19 digits>\r\n"
            lost += sum(len(f"r{rnd}-{n}-") + 19 + 2 for n in range(1, LINES + 1)
                        if n not in seen)
            s = api.get(base).json()
            assert s["restarts"] == 0, s
    return {"worker_restart_gap_ms": pct(gaps, 0.5), "worker_restart_lost_bytes": float(lost)}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="semo-bench-"))
    stack = DevStack(root, machine_id="bench-restart")
    try:
        info = stack.start()
        results = measure(stack, info)
    finally:
        if stack.proc is not None:
            stack.stop()
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
