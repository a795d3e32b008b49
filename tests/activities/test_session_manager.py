"""SessionManager with real PTYs and real programs: bash, python, process families that
fight back, floods, bad bytes; and the terminal as the API shows it.

Most tests use `RecordingSink`, an in-memory OutputSink test double; those about
persistence use the real PgOutputStore against the test Postgres."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from activities.monitor import strip_terminal_escapes
from activities.output_store import PgOutputStore
from activities.terminal import SessionManager, TerminalError, become_subreaper, sweep_strays
from semo import procfs
from semo.settings import BUILTIN_PROFILES, AgentProfile
from tests.support.paths import REPO
from tests.support.processes import live_pids_with_env
from tests.support.terminals import RecordingSink
from tests.support.waiting import wait_for

ROOT = REPO  # the repository
#: in the ids of sessions whose processes are looked for machine-wide: two suites at once
#: on one machine must not see each other's
RUN = uuid.uuid4().hex[:8]


def profiles(**extra: list[str]) -> dict[str, AgentProfile]:
    return {**BUILTIN_PROFILES,
            "python": AgentProfile(argv=[sys.executable, "-q"]),
            **{name: AgentProfile(argv=argv) for name, argv in extra.items()}}


@pytest.fixture
async def make_manager(tmp_path):
    made = []

    def make(sink=None, **kw) -> SessionManager:
        kw.setdefault("kill_grace_s", 0.5)
        kw.setdefault("transcripts_dir", tmp_path / "transcripts")
        m = SessionManager(kw.pop("profiles", profiles()), sink or RecordingSink(), **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        await m.close_all()


@pytest.fixture
def subreaper():
    """This process adopts orphans while the test runs, as the client worker's process does
    (`run_client_worker` makes it a subreaper)."""
    assert become_subreaper()
    yield
    become_subreaper(False)


async def output_contains(manager: SessionManager, sid: str, needle: bytes | re.Pattern,
                          timeout=10.0) -> bytes:
    """Wait until the session's output has `needle` (bytes, or a compiled regex)."""
    async def probe():
        data = manager.get_output(sid)[1]
        found = needle.search(data) if isinstance(needle, re.Pattern) else needle in data
        return data if found else None
    return await wait_for(probe, timeout=timeout, what=f"{needle!r} in {sid}'s output")


def gone(pid: int) -> bool:
    """Neither running nor a zombie."""
    return not os.path.exists(f"/proc/{pid}")


def zombie_children() -> list[int]:
    me = os.getpid()
    return [pid for pid, f in procfs.processes()
            if f[procfs.STATE] == b"Z" and int(f[procfs.PPID]) == me]


# --- real programs ------------------------------------------------------------------------


async def test_bash_runs_commands_and_reports_its_exit(make_manager, tmp_path):
    m = make_manager()
    term = await m.create("bash-1", tmp_path, "shell")
    await m.execute("bash-1", "echo answer-$((6*7)) in $PWD")
    await output_contains(m, "bash-1", f"answer-42 in {tmp_path}".encode())
    await m.execute("bash-1", "exit 3")
    await asyncio.wait_for(term.exited.wait(), 10)
    assert (term.exit_code, term.exit_signal) == (3, None)
    assert m.sink.data("bash-1") == m.get_output("bash-1")[1]
    with pytest.raises(TerminalError):
        await m.execute("bash-1", "echo too late")


async def test_agents_get_default_signals_markers_and_no_worker_secrets(make_manager, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("SEMO_DATABASE_URL", "postgresql://secret@db/x")
    m = make_manager()
    await m.create("env-1", tmp_path, "shell")
    # Python ignores SIGPIPE; an agent must not inherit that (`yes | head` would complain)
    await m.execute("env-1", "grep -E '^Sig(Ign|Blk)' /proc/$$/status; env | grep ^SEMO_ | sort")
    out = (await output_contains(m, "env-1", b"SEMO_WORKER=")).decode()
    ignored = int(re.search(r"SigIgn:\s*([0-9a-f]+)", out).group(1), 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), out
    assert "SEMO_SESSION_ID=env-1" in out and "secret" not in out


async def test_python_repl(make_manager, tmp_path):
    m = make_manager()
    term = await m.create("py-1", tmp_path, "python")
    await m.execute("py-1", "print('py', 6 * 7)")
    await output_contains(m, "py-1", b"py 42")
    await m.send_keystrokes("py-1", ["ctrl+d"])
    await asyncio.wait_for(term.exited.wait(), 10)
    assert term.exit_code == 0


async def test_keystrokes_interrupt_a_running_command(make_manager, tmp_path):
    m = make_manager()
    await m.create("keys-1", tmp_path, "shell")
    await m.execute("keys-1", "sleep 30; echo not-interrupted")
    await asyncio.sleep(0.3)
    await m.send_keystrokes("keys-1", ["ctrl+c"])
    await m.execute("keys-1", "echo back-$((1+1))")
    out = await output_contains(m, "keys-1", b"back-2")
    assert not re.search(rb"(^|\n)not-interrupted\r", out)  # echoes of the command only
    with pytest.raises(TerminalError):
        await m.send_keystrokes("keys-1", ["no-such-key"])


async def test_text_is_typed_before_the_keys(make_manager, tmp_path):
    """`{"text": "...", "keys": ["enter"]}` runs the line: text first, then the keys."""
    m = make_manager()
    await m.create("order-1", tmp_path, "shell")
    await m.send_keystrokes("order-1", ["enter"], "echo typed-$((40+2))")
    await output_contains(m, "order-1", b"typed-42\r")


FAMILY = textwrap.dedent("""
    import os, signal, sys, time
    for sig in (signal.SIGTERM, signal.SIGHUP):  # inherited by every fork below
        signal.signal(sig, signal.SIG_IGN)
    child = os.fork()
    if child == 0:  # a child with a grandchild of its own, all deaf to SIGTERM
        if os.fork() == 0:
            time.sleep(600); os._exit(0)
        time.sleep(600); os._exit(0)
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # a double-forking daemon: new session, parent gone, stdio closed
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            time.sleep(600); os._exit(0)
        os._exit(0)
    os.waitpid(mid, 0)
    daemon = int(os.read(r, 64))
    print(f"family child={child} daemon={daemon} ready", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("adopting", [True, False], ids=["subreaper", "marker-scan"])
async def test_terminate_kills_forks_double_fork_daemons_and_sigterm_ignorers(make_manager,
                                                                              tmp_path, adopting):
    script = tmp_path / "family.py"
    script.write_text(FAMILY)
    if adopting:
        become_subreaper()
    try:
        await _terminate_family(make_manager, tmp_path, script, adopting)
    finally:
        become_subreaper(False)


async def _terminate_family(make_manager, tmp_path, script, adopting):
    m = make_manager(profiles=profiles(family=[sys.executable, str(script)]))
    zombies = set(zombie_children())
    term = await m.create(f"fam-{RUN}-1", tmp_path, "family")
    out = (await output_contains(m, f"fam-{RUN}-1", b" ready")).decode()
    child, daemon = (int(x) for x in re.search(r"child=(\d+) daemon=(\d+)", out).groups())
    members = set(live_pids_with_env("SEMO_SESSION_ID", f"fam-{RUN}-1"))
    assert {term.pid, child, daemon} <= members and len(members) == 4, members
    # the daemon left its parent, its process group and its session: a subreaper adopts it
    parent = int(procfs.stat(daemon)[procfs.PPID])
    assert (parent == os.getpid()) == adopting

    started = time.monotonic()
    await asyncio.wait_for(m.terminate(f"fam-{RUN}-1"), 10)
    took = time.monotonic() - started
    assert 0.4 < took < 3.0, took  # SIGTERM was ignored: SIGKILL after the 0.5 s grace
    assert term.exit_signal == signal.SIGKILL
    await wait_for(lambda: _async(all(gone(pid) for pid in members)), timeout=5,
                   what="every process of the session gone, zombies reaped")
    assert not live_pids_with_env("SEMO_SESSION_ID", f"fam-{RUN}-1")
    assert set(zombie_children()) <= zombies


async def test_nothing_of_a_session_outlives_its_leader(make_manager, tmp_path):
    m = make_manager()
    term = await m.create(f"exit-{RUN}-1", tmp_path, "shell")
    await m.execute(f"exit-{RUN}-1", "sleep 600 & echo bg=$!; (trap '' TERM HUP; exec sleep 601) &")
    out = (await output_contains(m, f"exit-{RUN}-1", re.compile(rb"bg=\d+"))).decode()
    await asyncio.sleep(0.2)
    members = set(live_pids_with_env("SEMO_SESSION_ID", f"exit-{RUN}-1")) - {term.pid}
    assert int(re.search(r"bg=(\d+)", out).group(1)) in members and len(members) == 2
    await m.execute(f"exit-{RUN}-1", "exit 0")  # the leader leaves; its background jobs must not stay
    await asyncio.wait_for(term.exited.wait(), 10)
    assert term.exit_code == 0
    assert not live_pids_with_env("SEMO_SESSION_ID", f"exit-{RUN}-1")
    # (re-parented to init, which reaps them in its own time)
    await wait_for(lambda: _async(all(gone(pid) for pid in members)), timeout=5,
                   what="the background jobs gone")


async def test_orphans_are_reaped_while_the_session_lives(subreaper, make_manager, tmp_path):
    zombies = set(zombie_children())
    m = make_manager(tick_s=0.05)
    await m.create(f"orph-{RUN}-1", tmp_path, "shell")
    # the subshell exits at once: its `sleep` is re-parented to this worker, then exits
    await m.execute(f"orph-{RUN}-1", "(sleep 0.4 & echo orphan=$!); (setsid sh -c 'sleep 0.4' &)")
    out = (await output_contains(m, f"orph-{RUN}-1", re.compile(rb"orphan=\d+"))).decode()
    orphan = int(re.search(r"orphan=(\d+)", out).group(1))
    await asyncio.sleep(0.2)
    assert orphan in live_pids_with_env("SEMO_SESSION_ID", f"orph-{RUN}-1")
    await wait_for(lambda: _async(gone(orphan)), timeout=5, what="the orphan reaped")
    await asyncio.sleep(0.2)
    assert set(zombie_children()) <= zombies
    assert m.require(f"orph-{RUN}-1").alive


async def _async(value):
    return value


async def test_other_children_keep_their_exit_status(subreaper, make_manager, tmp_path):
    """The subreaper only reaps processes it knows are agents'."""
    m = make_manager(tick_s=0.02)
    await m.create("keep-1", tmp_path, "shell")
    await m.execute("keep-1", "(sleep 0.2 &) ; (setsid sleep 0.3 &)")  # orphans to reap meanwhile
    popen = subprocess.Popen(["sh", "-c", "exit 5"])
    leader = subprocess.Popen(["sh", "-c", "exit 6"], start_new_session=True)
    proc = await asyncio.create_subprocess_exec("sh", "-c", "sleep 0.2; exit 7")
    await asyncio.sleep(0.6)  # many ticks while the two Popen children are zombies
    assert await proc.wait() == 7
    assert popen.wait() == 5 and leader.wait() == 6


# --- output ---------------------------------------------------------------------------------


BAD_BYTES = textwrap.dedent("""
    import os, time
    os.write(1, b"bad \\xff\\xfe bytes, euro \\xe2\\x82")  # a character split across writes
    time.sleep(0.3)
    os.write(1, b"\\xac, \\x1b[1;31mred\\x1b")  # ... and an escape sequence
    time.sleep(0.3)
    os.write(1, b"[0m done\\n")
""")


async def test_invalid_utf8_and_split_sequences_are_kept_and_readable(make_manager, tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(BAD_BYTES)
    m = make_manager(profiles=profiles(bad=[sys.executable, str(script)]))
    term = await m.create("bad-1", tmp_path, "bad")
    await asyncio.wait_for(term.exited.wait(), 10)
    raw = m.sink.data("bad-1")
    assert raw == b"bad \xff\xfe bytes, euro \xe2\x82\xac, \x1b[1;31mred\x1b[0m done\r\n"
    assert len(m.sink.chunks["bad-1"]) >= 3  # it did arrive in pieces
    assert strip_terminal_escapes(raw) == "bad \ufffd\ufffd bytes, euro \u20ac, red done\n"
    transcript = (tmp_path / "transcripts" / "bad-1.log").read_bytes()
    assert transcript == raw


async def test_back_pressure_pauses_the_reader_instead_of_buffering(make_manager, tmp_path):
    sink = RecordingSink(cap=256 * 1024)
    m = make_manager(sink, profiles=profiles(yes=["yes", "flood " * 20]))
    term = await m.create("bp-1", tmp_path, "yes")
    await wait_for(lambda: _async(term.paused), timeout=10, what="reading paused")
    offset = term.offset
    await asyncio.sleep(0.3)
    assert term.paused and term.offset - offset < 256 * 1024  # the agent blocks on write
    assert sink.peak_unsaved < 256 * 1024 + 2 * 64 * 1024
    assert len(term.tail) <= 320 * 1024
    sink.release()
    await wait_for(lambda: _async(term.offset > offset + 1_000_000), timeout=10,
                   what="reading again")
    await m.terminate("bp-1")
    assert sink.data("bp-1")  # contiguous


async def test_flood_of_50_mb_is_persisted_whole_with_bounded_memory(make_manager, tmp_path, pool):
    store = PgOutputStore(pool, retention_bytes=64 * 1024 * 1024)
    store.start()
    flood = tmp_path / "flood.py"
    flood.write_text(textwrap.dedent("""
        import os
        line = b"".join(b"%07d flood \\xe2\\x9c\\x93 \\x1b[32mok\\x1b[0m\\n" % i for i in range(1000))
        for _ in range(50_000_000 // len(line) + 1):
            os.write(1, line)
    """))
    m = make_manager(store, profiles=profiles(flood=[sys.executable, str(flood)]))
    try:
        started = time.monotonic()
        term = await m.create("flood-1", tmp_path, "flood")
        await asyncio.wait_for(term.exited.wait(), 60)
        await store.flush("flood-1")
        took = time.monotonic() - started
        assert term.exit_code == 0
        async with pool.connection() as conn:
            rows = await (await conn.execute(
                "select start_offset, end_offset, length(data) from session_output"
                " where session_id = 'flood-1' order by start_offset")).fetchall()
            sample = (await (await conn.execute(
                "select data from session_output where session_id = 'flood-1'"
                " and start_offset = %s", (rows[len(rows) // 2][0],))).fetchone())[0]
        assert rows[0][0] == 0 and rows[-1][1] == term.offset > 50_000_000
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False)), "offsets must be contiguous"
        assert all(end - start == n <= 64 * 1024 for start, end, n in rows)
        assert b" flood \xe2\x9c\x93 \x1b[32mok\x1b[0m\r\n" in sample
        assert store.peak_pending <= store.session_cap + 2 * 64 * 1024
        assert len(term.tail) <= 320 * 1024
        transcript = tmp_path / "transcripts" / "flood-1.log"
        assert transcript.stat().st_size == term.offset
        print(f"50 MB flood: {term.offset / took / 1e6:.1f} MB/s, {len(rows)} rows, "
              f"peak unsaved {store.peak_pending} bytes")
    finally:
        await m.close_all()
        await store.close()
        async with pool.connection() as conn:
            await conn.execute("delete from session_output where session_id = 'flood-1'")


async def test_offsets_continue_when_a_session_restarts(make_manager, tmp_path, pool):
    store = PgOutputStore(pool)
    store.start()
    m = make_manager(store)
    try:
        await m.create("gen-1", tmp_path, "shell")
        await m.execute("gen-1", "echo first-$((1+1))")
        await output_contains(m, "gen-1", b"first-2")
        await m.terminate("gen-1")
        end = await store.end_offset("gen-1")
        assert end > 0
        store2 = PgOutputStore(pool)  # a restarted worker knows only the table
        assert await store2.end_offset("gen-1") == end
        term = await m.create("gen-1", tmp_path, "shell", generation=1)
        assert term.base_offset == end
        await m.execute("gen-1", "echo second-$((1+1))")
        await output_contains(m, "gen-1", b"second-2")
        await m.terminate("gen-1")
        async with pool.connection() as conn:
            rows = await (await conn.execute(
                "select start_offset, end_offset, data from session_output"
                " where session_id = 'gen-1' order by start_offset")).fetchall()
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
        text = b"".join(r[2] for r in rows)
        assert b"first-2" in text and b"second-2" in text
    finally:
        await store.close()


async def test_input_larger_than_the_terminal_buffers_waits_for_the_agent(make_manager, tmp_path):
    """300 KB typed to an agent that starts reading only later: the PTY's input buffer fills,
    the write waits until the agent reads, and nothing is lost."""
    m = make_manager(profiles=profiles(late=["sh", "-c", "sleep 1; wc -l"]))
    await m.create("late-1", tmp_path, "late")
    lines = "".join(f"{i:07d} {'x' * 90}\n" for i in range(3000))
    await asyncio.wait_for(m.send_keystrokes("late-1", [], lines), 60)
    await m.send_keystrokes("late-1", ["ctrl+d"])
    await output_contains(m, "late-1", re.compile(rb"^3000\r$", re.M), timeout=60)


async def test_old_transcripts_of_sessions_gone_are_pruned(make_manager, tmp_path):
    m = make_manager()
    await m.create("live-1", tmp_path, "shell")
    await m.execute("live-1", "echo kept")
    await output_contains(m, "live-1", b"kept")
    folder = tmp_path / "transcripts"
    (folder / "old-1.log").write_bytes(b"weeks ago")
    (folder / "recent-1.log").write_bytes(b"an hour ago")
    (folder / "notes.txt").write_bytes(b"not a transcript")
    month, hour = time.time() - 30 * 86400, time.time() - 3600
    for name, when in (("old-1.log", month), ("recent-1.log", hour), ("notes.txt", month),
                       ("live-1.log", month)):  # a live session that has been quiet long
        os.utime(folder / name, (when, when))

    assert m.prune_transcripts(14 * 86400) == ["old-1"]
    assert sorted(p.name for p in folder.iterdir()) == ["live-1.log", "notes.txt", "recent-1.log"]
    await m.terminate("live-1")
    assert m.prune_transcripts(14 * 86400) == []  # its last words were just written
    os.utime(folder / "live-1.log", (month, month))
    assert m.prune_transcripts(14 * 86400) == ["live-1"]  # gone, and quiet long enough


async def test_transcript_file_holds_everything_and_is_closed(make_manager, tmp_path):
    m = make_manager()
    await m.create("tx-1", tmp_path, "shell")
    await m.execute("tx-1", "echo in-the-transcript")
    await output_contains(m, "tx-1", b"in-the-transcript\r\n")
    path = (tmp_path / "transcripts" / "tx-1.log").resolve()
    assert _open_files().count(str(path)) == 1
    await m.terminate("tx-1")
    assert path.read_bytes() == m.sink.data("tx-1")
    assert str(path) not in _open_files()


def _open_files() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


# --- terminal ---------------------------------------------------------------------------------


async def test_resize_reaches_the_agent_as_sigwinch(make_manager, tmp_path):
    m = make_manager()
    term = await m.create("size-1", tmp_path, "shell")
    await m.execute("size-1", "trap 'echo winch $(stty size)' WINCH; stty size")
    await output_contains(m, "size-1", b"40 120")
    m.resize("size-1", 50, 100)
    await output_contains(m, "size-1", b"winch 50 100")
    assert (term.rows, term.cols) == (50, 100)
    with pytest.raises(TerminalError):
        m.resize("size-1", 0, 100)


async def test_stall_is_reported_once_while_a_prompt_runs_quietly(make_manager, tmp_path):
    events = []

    async def on_event(term, ev):
        events.append(ev)

    m = make_manager(on_event=on_event, stall_after_s=0.4, tick_s=0.05)
    await m.create("stall-1", tmp_path, "shell")
    await asyncio.sleep(0.7)  # idle, not busy: no stall
    assert not [e for e in events if e.kind == "stall"]
    await m.execute("stall-1", "sleep 1.2; printf '[SEMO:%s]\\n' DONE", job_id="job-1")
    await wait_for(lambda: _async([e for e in events if e.kind == "stall"]), timeout=5,
                   what="a stall event")
    await wait_for(lambda: _async([e for e in events if e.kind == "completion"]), timeout=5,
                   what="the completion")
    await asyncio.sleep(0.7)  # done: not busy any more, no new stall
    stalls = [e for e in events if e.kind == "stall"]
    assert len(stalls) == 1 and stalls[0].data["job_id"] == "job-1"
    assert stalls[0].data["idle_s"] >= 0.4


async def test_spawn_failure_leaves_nothing_behind(make_manager, tmp_path):
    m = make_manager()
    fds, zombies = _session_fds(tmp_path), set(zombie_children())
    with pytest.raises(FileNotFoundError):
        await m.create("nowhere-1", tmp_path / "missing", "shell")
    with pytest.raises(TerminalError):
        await m.create("nowhere-2", tmp_path, "no-such-agent")
    assert _session_fds(tmp_path) == fds
    assert set(zombie_children()) <= zombies and m.get("nowhere-1") is None


async def test_a_thousand_create_terminate_cycles_leak_nothing(make_manager, tmp_path):
    m = make_manager()
    for i in range(5):  # warm up (imports, caches)
        await m.create(f"warm-{i}", tmp_path, "shell")
        await m.terminate(f"warm-{i}")
    fds, zombies = _session_fds(tmp_path), set(zombie_children())
    started = time.monotonic()

    async def cycles(lane: int) -> None:
        for i in range(lane, 1000, 4):
            await m.create(f"cycle-{RUN}-{i}", tmp_path, "shell")
            await m.terminate(f"cycle-{RUN}-{i}")

    await asyncio.gather(*(cycles(lane) for lane in range(4)))
    took = time.monotonic() - started
    assert not m.terminals
    assert _session_fds(tmp_path) == fds
    assert not _marked_pids(f"SEMO_SESSION_ID=cycle-{RUN}-".encode())
    assert set(zombie_children()) <= zombies
    print(f"1000 create/terminate cycles: {took:.1f}s ({took:.2f} ms each)")


def _session_fds(tmp_path) -> dict[str, int]:
    """This process's open PTY masters, pidfds and transcript files (other parts of the
    test process open and close their own fds meanwhile)."""
    counts = {"pty": 0, "pidfd": 0, "transcript": 0}
    for target in _open_files():
        if target == "/dev/ptmx" or target.startswith("/dev/pts/"):
            counts["pty"] += 1
        elif target == "anon_inode:[pidfd]":
            counts["pidfd"] += 1
        elif target.startswith(str(tmp_path)):
            counts["transcript"] += 1
    return counts


def _marked_pids(prefix: bytes) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if any(v.startswith(prefix) for v in f.read().split(b"\0")):
                        out.append(int(entry))
            except OSError:
                pass
    return out


WORKER_THAT_DIES = textwrap.dedent("""
    import asyncio, os, re, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from activities.terminal import SessionManager, become_subreaper
    from semo.settings import BUILTIN_PROFILES

    class NullSink:
        def append(self, *args): pass
        def pending(self, sid): return 0
        def congested(self, sid): return False
        async def wait_drained(self, sid): pass
        async def flush(self, sid=None): pass
        async def end_offset(self, sid): return 0
        def forget(self, sid): pass

    async def main():
        become_subreaper()  # as run_client_worker does
        m = SessionManager(BUILTIN_PROFILES, NullSink())
        sid = sys.argv[3]
        term = await m.create(sid, Path(sys.argv[2]), "shell")
        await m.execute(sid, "sleep 600 & echo bg=$!; sleep 601")
        while not re.search(rb"bg=\\d+", m.get_output(sid)[1]):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        bg = re.search(rb"bg=(\\d+)", m.get_output(sid)[1]).group(1).decode()
        print(term.pid, bg, flush=True)
        os._exit(0)  # the worker dies without stopping anything

    asyncio.run(main())
""")


async def test_agents_die_with_their_worker_and_strays_are_swept(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER_THAT_DIES, str(ROOT), str(tmp_path), f"dies-{RUN}-1",
        stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    leader, bg = (int(x) for x in out.split())
    # the leader had PR_SET_PDEATHSIG; the foreground sleep got the terminal's hangup
    await wait_for(lambda: _async(not [p for p in live_pids_with_env("SEMO_SESSION_ID", f"dies-{RUN}-1")
                                       if p != bg]), timeout=10, what="leader gone")
    # a background job may outlive the hangup: the next worker sweeps it (so does any other
    # SessionManager starting on this machine meanwhile)
    sweep_strays()
    await wait_for(lambda: _async(not live_pids_with_env("SEMO_SESSION_ID", f"dies-{RUN}-1")),
                   timeout=10, what="strays gone")
    for pid in (leader, bg):  # re-parented to this (subreaper) process: reap them here
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


# --- the terminal as the API shows it (shell agent, through HTTP) -----------------------------


SHOW = r"""printf '\033[2J\033[HA \033[1;31mred\033[0m caf\303\251 \377 end\n'
printf '\342\202'; sleep 0.3; printf '\254 euro\n'
"""


async def _session(http, office) -> dict:
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    return r.json()


async def _run(http, office, session_id: str, prompt: str) -> dict:
    r = await http.post(f"/api/offices/{office}/sessions/{session_id}/prompt",
                        json={"prompt": prompt})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]

    async def finished():
        job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
        return job if job["status"] not in ("queued", "running") else None
    return await wait_for(finished, what="the job's end")


async def test_api_text_pages_and_screen_show_what_a_person_sees(http, office):
    created = await _session(http, office)
    sid, base = created["session_id"], f"/api/offices/{office}/sessions/{created['session_id']}"
    (Path(created["working_dir"]) / "show.sh").write_text(SHOW)
    job = await _run(http, office, sid, "sh show.sh; printf '[SEMO:%s]\\n' DONE")
    assert job["status"] == "done", job

    full = (await http.get(f"{base}/output", params={"limit": 1024 * 1024})).json()
    assert "A red café \ufffd end\n€ euro\n[SEMO:DONE]" in full["data"]
    # paging through in small pieces cuts no character and no escape sequence in two
    pages, since = [], 0
    while since < full["next_offset"]:
        page = (await http.get(f"{base}/output", params={"since": since, "limit": 16})).json()
        assert page["since"] == since and page["next_offset"] > since
        pages.append(page["data"])
        since = page["next_offset"]
    paged = "".join(pages)
    assert "caf\u00e9" in paged and "\u20ac euro" in paged, paged
    assert paged.count("\ufffd") == 1 and "[0m" not in paged and "31m" not in paged

    screen = (await http.get(f"{base}/screen")).json()
    assert screen["lines"][:3] == ["A red café \ufffd end", "€ euro", "[SEMO:DONE]"]
    assert (screen["rows"], screen["cols"]) == (40, 120)
    await http.delete(base)


async def test_api_output_beyond_the_retention_cap_is_truncated_before(http, office, settings,
                                                                       pool):
    created = await _session(http, office)
    sid, base = created["session_id"], f"/api/offices/{office}/sessions/{created['session_id']}"
    size = settings.output_retention_bytes + 2 * 1024 * 1024
    job = await _run(http, office, sid,
                     f"yes 0123456789abcdef | head -c {size}; printf '\\n[SEMO:%s]\\n' DONE")
    assert job["status"] == "done", job
    head = (await http.get(f"{base}/output", params={"since": 0, "limit": 100})).json()
    assert head["truncated_before"] and head["since"] == head["truncated_before"] > 0
    page = (await http.get(f"{base}/output", params={"since": head["truncated_before"],
                                                      "limit": 1000})).json()
    assert page["truncated_before"] is None and page["since"] == head["since"]
    async with pool.connection() as conn:
        end = (await (await conn.execute("select max(end_offset) from session_output"
                                         " where session_id = %s", (sid,))).fetchone())[0]
    kept = end - head["truncated_before"]
    assert end > size and settings.output_retention_bytes <= kept
    assert kept <= settings.output_retention_bytes * 1.2
    last = (await http.get(f"{base}/output", params={"since": end - 200, "limit": 1000})).json()
    assert last["next_offset"] == end and "0123456789abcdef\n[SEMO:DONE]" in last["data"]
    await http.delete(base)


async def test_sweep_kills_agents_of_dead_workers_only(make_manager, tmp_path):
    m = make_manager()
    mine = await m.create(f"sweep-{RUN}-1", tmp_path, "shell")
    dead_worker = {**os.environ, "SEMO_SESSION_ID": f"sweep-{RUN}-2", "SEMO_WORKER": "999999999:1:1"}
    stray = subprocess.Popen(["sleep", "600"], env=dead_worker)
    try:
        sweep_strays()
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert mine.alive and live_pids_with_env("SEMO_SESSION_ID", f"sweep-{RUN}-1") == [mine.pid]
    finally:
        stray.kill()
        stray.wait()
