"""The keeper (keeper/), as a real process with real agents in real PTYs: the master fd
handed over SCM_RIGHTS, a worker killed with `kill -9` and its agent's output kept until the
next worker claims it, the lease's epoch, the bounded buffer, reaping and exit statuses, the
grace for unclaimed agents, and its own stop."""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from keeper.client import KeeperClient, KeeperError, ensure_keeper
from semo import procfs
from tests.support.devstack import alive, wait
from tests.support.paths import REPO


class Keeper:
    """A keeper process of this test's own, on its own socket."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.path = str(tmp / "keeper.sock")
        self.log = tmp / "keeper.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "keeper", "--socket", self.path, *args],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        wait(lambda: os.path.exists(self.path), 15, "the keeper's socket")

    def client(self) -> KeeperClient:
        return KeeperClient(self.path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


@pytest.fixture
def keeper(tmp_path):
    k = Keeper(tmp_path, "--grace", "60")
    yield k
    k.stop()


def read_until(fd: int, needle: bytes, timeout: float = 15.0, got: bytes = b"") -> bytes:
    """Read a master fd until `needle` has been seen (everything read is returned)."""
    deadline = time.monotonic() + timeout
    data = bytearray(got)
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen within {timeout} s; got {bytes(data[-300:])!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError as err:
                assert err.errno == errno.EIO, err
                chunk = b""
            assert chunk, f"EOF before {needle!r}; got {bytes(data[-300:])!r}"
            data += chunk
    return bytes(data)


def spawn(client: KeeperClient, key: str, script: str, cwd: str, generation: int = 0):
    return client.spawn(key, generation, ["sh", "-c", script], cwd,
                        {"PATH": os.environ["PATH"], "TERM": "dumb"}, 24, 80,
                        meta={"job": "j1"})


def test_the_master_is_handed_over_and_the_agent_runs_in_its_own_session(keeper, tmp_path):
    with keeper.client() as c:
        got = spawn(c, "s1", "echo hello; read x; echo got-$x; sleep 60", str(tmp_path))
        assert got.master is not None and got.info["epoch"] == 1
        pid = got.info["pid"]
        # the agent is a child of the keeper, in a session and process group of its own
        stat = procfs.stat(pid)
        assert int(stat[procfs.PPID]) == keeper.proc.pid
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid
        assert os.getsid(pid) != os.getsid(keeper.proc.pid)
        read_until(got.master, b"hello")
        os.write(got.master, b"abc\r")
        read_until(got.master, b"got-abc")
        c.stop("s1", 0, 1.0)
        wait(lambda: not alive(pid), 15, "the agent stopped")
        os.close(got.master)


def test_an_exec_failure_is_refused_with_its_reason_and_leaves_no_child(keeper, tmp_path):
    with keeper.client() as c:
        with pytest.raises(KeeperError, match="No such file"):
            c.spawn("s1", 0, ["/no/such/program"], str(tmp_path), {}, 24, 80)
        with pytest.raises(KeeperError, match="No such file"):
            c.spawn("s1", 0, ["sh"], str(tmp_path / "missing"), {}, 24, 80)
        assert c.agents() == []
    assert procfs.children(keeper.proc.pid) == set()


WORKER = textwrap.dedent("""
    import os, sys, time
    from keeper.client import KeeperClient
    c = KeeperClient(sys.argv[1])
    got = c.spawn("s1", 3, ["sh", "-c", sys.argv[2]], sys.argv[3], {"PATH": os.environ["PATH"]},
                  24, 80)
    print(got.info["pid"], flush=True)
    time.sleep(600)  # holds the agent and reads nothing until it is killed
""")


def test_a_worker_killed_leaves_its_agent_running_and_every_byte_to_the_next(keeper, tmp_path):
    # the agent prints a line every 20 ms; its worker is killed with SIGKILL mid-way
    script = "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo line-$i; sleep 0.02; done; " \
             "echo all-done; sleep 60"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, keeper.path, script, str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(worker.stdout.readline())
        worker.kill()
        worker.wait(10)
    finally:
        worker.stdout.close()
    assert alive(pid)
    with keeper.client() as c:
        # the keeper reads the agent's output meanwhile; nothing holds it
        wait(lambda: c.agents()[0]["buffered"] > 0 and not c.agents()[0]["held"], 15,
             "the keeper reading the orphaned agent")
        [info] = c.agents()
        assert info["pid"] == pid and info["generation"] == 3 and not info["exited"]
        got = c.claim("s1", 3)
        assert got.info["pid"] == pid and got.info["epoch"] == 2
        assert got.info["buffered_from"] == 0
        data = read_until(got.master, b"all-done", got=got.buffered)
        lines = [ln for ln in data.decode().split("\r\n") if ln.startswith("line-")]
        assert lines == [f"line-{i}" for i in range(1, 151)]  # all, once, in order
        c.stop("s1", 3, 1.0)
        os.close(got.master)
    wait(lambda: not alive(pid), 15, "the agent stopped")


def test_a_newer_claim_revokes_the_older_holder(keeper, tmp_path):
    with keeper.client() as a, keeper.client() as b:
        first = spawn(a, "s1", "sleep 60", str(tmp_path))
        second = b.claim("s1")
        assert second.info["epoch"] == 2 and second.info["pid"] == first.info["pid"]
        ev = a.next_event(10)
        assert ev == {"event": "revoked", "key": "s1", "generation": 0, "epoch": 2}
        # the revoked holder's release (its old epoch) does not take the agent from b
        a.release("s1", 1)
        assert b.agents()[0]["held"] and b.agents()[0]["epoch"] == 2
        # b's own release gives it back to the keeper
        b.release("s1", 2)
        assert not b.agents()[0]["held"]
        b.stop("s1", 0, 1.0)
        ev = b.next_event(0.2)  # b no longer holds it: the exit is not sent to it
        assert ev is None
        wait(lambda: b.agents()[0]["exited"], 15, "the agent's exit")
        for got in (first, second):
            os.close(got.master)


def test_the_buffer_is_bounded_and_the_agent_waits_instead_of_losing_bytes(tmp_path):
    k = Keeper(tmp_path, "--buffer-bytes", "65536")
    try:
        with k.client() as c:
            n = 400_000
            got = spawn(c, "s1", f"head -c {n} /dev/zero | tr '\\0' x; echo; echo END; sleep 60",
                        str(tmp_path))
            pid = got.info["pid"]
            c.release("s1", 1)
            os.close(got.master)
            wait(lambda: c.agents()[0]["buffered"] >= 65536, 15, "the buffer full")
            assert c.agents()[0]["buffered"] == 65536 and alive(pid)
            got = c.claim("s1")
            assert len(got.buffered) == 65536
            data = read_until(got.master, b"END", timeout=30, got=got.buffered)
            assert data.count(b"x") == n
            c.stop("s1", 0, 1.0)
            os.close(got.master)
        wait(lambda: not alive(pid), 15, "the agent stopped")
    finally:
        k.stop()


def test_exit_statuses_are_kept_until_taken_and_every_child_is_reaped(keeper, tmp_path):
    with keeper.client() as c:
        # the background sleep outlives its shell: the keeper adopts and reaps it too
        got = spawn(c, "s1", "(sleep 0.3 &); echo bye; exit 7", str(tmp_path))
        pid = got.info["pid"]
        ev = c.next_event(15)
        assert ev is not None and ev["event"] == "exited" and ev["exit_code"] == 7
        os.close(got.master)
    with keeper.client() as c:  # a later worker still finds the status
        [info] = c.agents()
        assert info["exited"] and info["exit_code"] == 7 and info["pid"] == pid
        with pytest.raises(KeeperError, match="no agent"):
            c.forget("s1", 99)
        c.forget("s1", 0)
        assert c.agents() == []
    # no zombie left under the keeper: the leader and the adopted sleep are reaped
    wait(lambda: procfs.children(keeper.proc.pid) == set(), 15, "no child of the keeper")
    assert procfs.stat(pid) is None


def test_an_agent_output_written_before_its_exit_goes_to_the_next_worker(keeper, tmp_path):
    with keeper.client() as c:
        got = spawn(c, "s1", "read x; echo last-words-$x; exit 3", str(tmp_path))
        c.release("s1", 1)
        os.write(got.master, b"zz\r")
        os.close(got.master)
        wait(lambda: c.agents()[0]["exited"], 15, "the agent's exit")
        again = c.claim("s1")
        assert b"last-words-zz" in again.buffered
        assert again.master is None and again.info["exit_code"] == 3


def test_an_agent_nobody_claims_within_the_grace_is_stopped(tmp_path):
    k = Keeper(tmp_path, "--grace", "1", "--kill-grace", "1")
    try:
        with k.client() as c:
            held = spawn(c, "held", "sleep 60", str(tmp_path))
            left = spawn(c, "left", "trap '' TERM HUP; sleep 60", str(tmp_path))
            c.release("left", 1)
            os.close(left.master)
            # ignoring SIGTERM only buys the kill grace
            wait(lambda: not alive(left.info["pid"]), 15, "the unclaimed agent stopped")
            assert alive(held.info["pid"])  # held all along: not touched
            agents = {a["key"]: a for a in c.agents()}
            assert agents["left"]["exit_signal"] == signal.SIGKILL
            os.close(held.master)
            c.stop("held", 0, 1.0)
            wait(lambda: not alive(held.info["pid"]), 15, "the held agent stopped")
    finally:
        k.stop()


def test_sigterm_stops_every_agent_and_the_keeper(tmp_path):
    k = Keeper(tmp_path, "--kill-grace", "1")
    with k.client() as c:
        pids = [spawn(c, f"s{i}", "trap '' TERM HUP; sleep 60", str(tmp_path)).info["pid"]
                for i in range(3)]
    k.stop()
    assert k.proc.returncode == 0
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(k.path)


def test_a_worker_finds_or_starts_the_keeper_outside_its_own_group(tmp_path):
    path = str(tmp_path / "k" / "keeper.sock")
    with ensure_keeper(path, exit_when_idle_s=1, log_path=str(tmp_path / "k.log")) as c:
        pid = c.ping()["pid"]
        assert os.getsid(pid) == pid != os.getsid(0)
        assert os.getpgid(pid) != os.getpgid(0)
        assert int(procfs.stat(pid)[procfs.PPID]) != os.getpid()  # not our child
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        with ensure_keeper(path) as again:  # the second worker finds the first one's
            assert again.ping()["pid"] == pid
        # and a second keeper on the same socket refuses to start
        second = subprocess.run([sys.executable, "-m", "keeper", "--socket", path], cwd=REPO,
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 3 and "already serves" in second.stderr
    wait(lambda: not alive(pid), 15, "the idle keeper's exit")


def test_another_users_connection_is_refused(keeper, tmp_path):
    if os.getuid() != 0:
        pytest.fail("this check needs root, to connect as another user")
    # past the socket's mode and its folder's (a second name for it, open to all): the
    # peer's uid is still checked
    open_dir = Path(tempfile.mkdtemp(prefix="keeper-peer-"))
    try:
        open_dir.chmod(0o755)
        os.link(keeper.path, open_dir / "k.sock")
        os.chmod(open_dir / "k.sock", 0o666)
        probe = textwrap.dedent("""
            import os, sys
            from keeper.client import KeeperClient, KeeperError
            os.setgid(65534); os.setuid(65534)
            try:
                KeeperClient(sys.argv[1]).ping()
            except KeeperError as err:
                print("refused", err)
            else:
                print("served")
        """)
        out = subprocess.run([sys.executable, "-c", probe, str(open_dir / "k.sock")], cwd=REPO,
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.startswith("refused"), out.stdout + out.stderr
        # it connected (the mode let it) and the keeper hung up on it
        assert "another user" in keeper.log.read_text()
    finally:
        shutil.rmtree(open_dir)
    with keeper.client() as c:  # and its own user is still served
        assert c.ping()["pid"] == keeper.proc.pid
