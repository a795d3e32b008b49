"""`semo dev` as a test harness: the whole stack as real processes on free ports, in a
scratch home, for tests that kill components (which the session-wide fixtures cannot)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from dev.embedded import die_with_parent, free_port, venv_bin
from semo import procfs

COMPONENTS = {"api", "server_worker", "client_worker", "intake", "temporal", "postgres"}


def wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def alive(pid: int) -> bool:
    fields = procfs.stat(pid)
    return fields is not None and fields[procfs.STATE] != b"Z"


class DevStack:
    def __init__(self, root: Path, machine_id: str = "dev-test", **settings: str) -> None:
        self.root = root
        self.home = root / ".semo"
        self.env = {**os.environ, "SEMO_HOME": str(self.home), "SEMO_API_PORT": str(free_port()),
                    "SEMO_EMBEDDED_TEMPORAL_PORT": str(free_port()),
                    "SEMO_TEMPORAL_UI_PORT": str(free_port()),
                    "SEMO_EMBEDDED_PG_PORT": str(free_port()), "SEMO_MACHINE_ID": machine_id,
                    **{f"SEMO_{k.upper()}": str(v) for k, v in settings.items()}}
        for var in ("SEMO_TEMPORAL_ADDRESS", "SEMO_DATABASE_URL"):
            self.env.pop(var, None)
        self.machine_id = machine_id
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None

    def start(self, timeout: float = 120) -> dict:
        self.log = self.root / f"dev-{time.monotonic_ns()}.log"
        # the stack dies with its test (or benchmark) process, however that one ends
        self.proc = subprocess.Popen([str(venv_bin("semo")), "dev"], cwd=self.root, env=self.env,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        return wait(self.running_info, timeout, "semo dev to run every component")

    def running_info(self) -> dict | None:
        try:
            info = json.loads((self.home / "dev.json").read_text())
        except (OSError, ValueError):
            return None
        pids = info.get("pids", {})
        if set(pids) != COMPONENTS or not all(alive(p) for p in pids.values()):
            return None
        return info

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(90)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def api(self) -> httpx.Client:
        info = json.loads((self.home / "dev.json").read_text())
        return httpx.Client(base_url=info["api_url"], timeout=60,
                            headers={"Authorization": f"Bearer {info['token']}"})

    def restarted(self, component: str, old_pid: int, timeout: float = 60) -> dict:
        """Wait until `semo dev` has replaced a dead component; returns the new info."""
        return wait(lambda: (i := self.running_info()) and i["pids"][component] != old_pid and i,
                    timeout, f"{component} to be restarted")


def replay_and_maybe_record(stack: DevStack, workflow_id: str, name: str) -> None:
    """The same check as conftest's, against this stack's Temporal (from a sync test)."""
    import asyncio

    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from tests.support.histories import replay_and_maybe_record as replay

    async def run() -> None:
        info = stack.running_info()
        client = await Client.connect(info["temporal_address"], data_converter=pydantic_data_converter)
        await replay(client, workflow_id, name)

    asyncio.run(run())
