"""The answer path: POST .../answer on a Claude Code permission until the tool has run.

`semo dev` runs the system as for a user; its Claude Code profile runs the real CLI (the
pinned version, installed by tests/claude_standin/install.py) against the scripted stand-in
in this process. Each round: the model asks to run `touch`, the session shows the
permission as `pending_input`, and the clock runs from the POST until the stand-in receives
the tool's result (the command ran and Claude Code went back to the model).

Keys: answer_p50_ms, answer_p95_ms.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx

from bench.bench_e2e import pct
from tests.claude_standin.install import claude_path
from tests.claude_standin.server import ScriptedAnthropicStandIn
from tests.support.devstack import DevStack

REPS = 15


async def measure(stack: DevStack, info: dict, standin: ScriptedAnthropicStandIn) -> dict:
    async with httpx.AsyncClient(base_url=info["api_url"], timeout=60,
                                 headers={"Authorization": f"Bearer {info['token']}"}) as api:
        r = await api.post("/api/offices", json={"office_id": "answers", "name": "answers",
                                                 "machine_id": stack.machine_id,
                                                 "agent": "claude", "warm_roles": []})
        r.raise_for_status()
        r = await api.post("/api/offices/answers/sessions", json={"role": "BE"})
        r.raise_for_status()
        sid = r.json()["session_id"]
        samples = []
        for i in range(REPS):
            standin.reply_tool_use("Bash", {"command": f"touch f{i}", "description": "touch"})
            standin.reply_text("Done.\n[SEMO:DONE]")
            r = await api.post(f"/api/offices/answers/sessions/{sid}/prompt",
                               json={"prompt": f"make f{i}"})
            r.raise_for_status()
            job_id = r.json()["job_id"]
            while True:
                s = (await api.get(f"/api/offices/answers/sessions/{sid}")).json()
                if s["pending_input"]:
                    break
                await asyncio.sleep(0.01)
            seen = len(standin.main_requests())
            t = time.perf_counter()
            r = await api.post(f"/api/offices/answers/sessions/{sid}/answer",
                               json={"input_id": s["pending_input"]["input_id"],
                                     "decision": "allow"})
            r.raise_for_status()
            while not any(req.tool_results() for req in standin.main_requests()[seen:]):
                await asyncio.sleep(0.002)
            samples.append((time.perf_counter() - t) * 1000)
            while (await api.get(f"/api/offices/answers/jobs/{job_id}")).json()[
                "status"
            ] == "running":
                await asyncio.sleep(0.02)
    return {"answer_p50_ms": pct(samples, 0.5), "answer_p95_ms": pct(samples, 0.95)}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="semo-bench-"))
    standin = ScriptedAnthropicStandIn().start()
    home = root / "claude-home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = {"HOME": str(home), "ANTHROPIC_BASE_URL": standin.base_url,
           "ANTHROPIC_AUTH_TOKEN": "bench", "CLAUDE_CODE_MAX_RETRIES": "0",
           "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    profiles = json.dumps({"claude": {"argv": [str(claude_path())], "env": env}})
    stack = DevStack(root, machine_id="bench", agent_profiles=profiles)
    try:
        info = stack.start()
        results = asyncio.run(measure(stack, info, standin))
    finally:
        if stack.proc is not None:
            stack.stop()
        standin.stop()
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
