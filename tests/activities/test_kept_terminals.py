"""SessionManager with the keeper (activities/terminal/kept.py): a worker process killed
with SIGKILL after it read output it had not stored yet, and the next worker storing every
byte once, in order (the dead worker's transcript, then what the keeper buffered), from the
same agent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from activities.terminal import SessionManager
from keeper.client import ensure_keeper
from semo.settings import AgentProfile
from tests.support.devstack import alive, wait
from tests.support.paths import REPO
from tests.support.waiting import wait_for

SCRIPT = "echo one; echo two; read go; echo three-$go; sleep 60"
PROFILES = {"sh": AgentProfile(argv=["sh", "-c", SCRIPT])}


class StoreNothingYet:
    """An OutputSink whose appends are stored only in this process's memory (what a worker
    killed before its next flush had)."""

    def __init__(self) -> None:
        self.data: dict[str, bytearray] = {}
        self.ends: dict[str, int] = {}

    def append(self, session_id: str, start_offset: int, data: bytes) -> None:
        buf = self.data.setdefault(session_id, bytearray())
        assert start_offset == self.ends.get(session_id, 0), "appends are contiguous"
        buf += data
        self.ends[session_id] = start_offset + len(data)

    def pending(self, session_id: str) -> int:
        return 0

    def congested(self, session_id: str) -> bool:
        return False

    def watched(self, session_id: str) -> bool:
        return False

    async def wait_drained(self, session_id: str) -> None:
        pass

    async def flush(self, session_id: str | None = None) -> None:
        pass

    async def end_offset(self, session_id: str) -> int:
        return self.ends.get(session_id, 0)

    def forget(self, session_id: str) -> None:
        pass


FIRST_WORKER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from tests.activities.test_kept_terminals import PROFILES, StoreNothingYet
    from activities.terminal import SessionManager
    from keeper.client import ensure_keeper

    async def main():
        manager = SessionManager(PROFILES, StoreNothingYet(), transcripts_dir=Path(sys.argv[2]),
                                 keeper=ensure_keeper(sys.argv[1]), hygiene=False)
        term = await manager.create("s1", Path(sys.argv[2]), "sh", generation=2)
        while b"two" not in term.tail:
            await asyncio.sleep(0.01)
        print(term.pid, flush=True)
        await asyncio.sleep(600)  # read, not stored: killed here

    asyncio.run(main())
""")


async def test_a_killed_worker_s_unstored_bytes_reach_the_next_worker_once(tmp_path):
    sock = str(tmp_path / "run" / "keeper.sock")
    first = subprocess.Popen([sys.executable, "-c", FIRST_WORKER, sock, str(tmp_path)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(await asyncio.to_thread(first.stdout.readline))
    finally:
        first.kill()
        first.wait(10)
        first.stdout.close()
    keeper = ensure_keeper(sock, exit_when_idle_s=1)
    sink = StoreNothingYet()  # nothing of the first worker's reached the store
    manager = SessionManager(PROFILES, sink, transcripts_dir=tmp_path, keeper=keeper,
                             hygiene=False)
    try:
        assert await manager.adopt_kept() == ["s1"]
        term = manager.get("s1")
        assert term.pid == pid and term.generation == 2 and term.parked
        manager.resume_parked("s1", None)
        await manager.send_keystrokes("s1", ["enter"], "go")
        async def next_line() -> bool:
            return b"three-go" in sink.data.get("s1", b"")
        await wait_for(next_line, timeout=15, what="the agent's next line")
        text = bytes(sink.data["s1"]).decode()
        # from offset 0 (nothing was stored): every line once, in order
        assert text.startswith("one\r\ntwo\r\n"), text
        assert text.count("one") == 1 and text.count("two") == 1
        assert text.index("two") < text.index("three-go")
        keeper_pid = keeper.ping()["pid"]
    finally:
        await manager.close_all()
        keeper.close()
    wait(lambda: not alive(pid), 15, "the agent stopped")
    # the first worker started the keeper (with no idle exit): this test's to stop
    os.kill(keeper_pid, signal.SIGTERM)
    wait(lambda: not alive(keeper_pid), 15, "the keeper stopped")
