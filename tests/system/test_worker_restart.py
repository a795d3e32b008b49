"""A client worker restart is not a session restart (issue 25): `semo dev` runs the stack
with the keeper (keeper/) forking the agents; the client worker is killed with SIGKILL in the
middle of a shell job, `semo dev` starts a new one, and the session re-attaches to the same
agent: the job ends `done`, every line it printed is stored, nothing restarts. A machine
that loses its agent as well still restarts the session, truthfully."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from dev.embedded import venv_bin
from semo import procfs
from tests.claude_standin.install import claude_path
from tests.claude_standin.server import ScriptedAnthropicStandIn
from tests.codex_standin.install import codex_path, pinned_version
from tests.codex_standin.server import ScriptedResponsesStandIn
from tests.support.codex import user_config
from tests.support.devstack import DevStack, alive, replay_and_maybe_record, wait
from tests.support.processes import live_pids_with_env


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = DevStack(tmp_path_factory.mktemp("restart"), machine_id="restart-test",
                     heartbeat_timeout_s=5)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def api(stack):
    with stack.api() as client:
        yield client


def new_session(api, stack, machine_id: str | None = None) -> tuple[str, str]:
    office = f"r-{uuid.uuid4().hex[:8]}"
    r = api.post("/api/offices", json={"office_id": office, "name": "restart", "agent": "shell",
                                       "machine_id": machine_id or stack.machine_id,
                                       "warm_roles": []})
    assert r.status_code == 201, r.text
    r = api.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    wait(lambda: session(api, office, sid)["status"] == "ready", 60, "the session ready")
    return office, sid


def session(api, office, sid) -> dict:
    return api.get(f"/api/offices/{office}/sessions/{sid}").json()


def output(api, office, sid) -> str:
    return api.get(f"/api/offices/{office}/sessions/{sid}/output",
                   params={"limit": 1_000_000}).json()["data"]


def agent_leader(sid: str) -> int:
    """The session's shell: the process of the session's that leads its own session."""
    leaders = [p for p in live_pids_with_env("SEMO_SESSION_ID", sid) if os.getsid(p) == p]
    assert len(leaders) == 1, leaders
    return leaders[0]


def job_of(api, office, job_id) -> dict:
    return api.get(f"/api/offices/{office}/jobs/{job_id}").json()


LINES = 60
#: a line every 0.25 s; the marker printed by printf, so the typed command's echo is not it
JOB = (f"for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.25; done; "
       "printf '[SEMO:%s]\\n' DONE")


def test_a_client_worker_killed_mid_job_leaves_the_job_running_to_its_end(stack, api):
    office, sid = new_session(api, stack)
    pid = agent_leader(sid)
    # the keeper is the agent's parent, not the worker
    worker = stack.running_info()["pids"]["client_worker"]
    assert int(procfs.stat(pid)[procfs.PPID]) != worker
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": JOB})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    wait(lambda: re.search(r"^line-8\r?$", output(api, office, sid), re.M), 30,
         "line 8 in the stored output")
    os.kill(worker, signal.SIGKILL)
    stack.restarted("client_worker", worker)

    job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j, 90,
               "the job to end")
    assert job["status"] == "done", job
    kinds = [e["kind"] for e in job["events"]]
    assert "worker_lost" in kinds and "reattached" in kinds, kinds
    assert "interrupted" not in kinds
    out = output(api, office, sid)
    lines = re.findall(r"^line-(\d+)\r?$", out, re.M)
    assert lines == [str(i) for i in range(1, LINES + 1)], lines  # every line, once, in order
    s = session(api, office, sid)
    assert s["restarts"] == 0 and s["status"] == "ready", s
    assert agent_leader(sid) == pid  # the same agent, not a new one
    # and it still takes prompts, typed into the same shell
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                 json={"prompt": "echo after-$((20+22)) $$"})
    assert r.status_code == 200, r.text
    wait(lambda: f"after-42 {pid}" in output(api, office, sid), 30, "the same shell answering")
    replay_and_maybe_record(stack, f"session/{office}/{sid}", "session_worker_lost_reattached")


def test_temporal_frozen_longer_than_the_heartbeat_timeout_restarts_nothing(stack, api):
    office, sid = new_session(api, stack)
    pid = agent_leader(sid)
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": JOB})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    wait(lambda: re.search(r"^line-4\r?$", output(api, office, sid), re.M), 30,
         "line 4 in the stored output")
    temporal = stack.running_info()["pids"]["temporal"]
    os.kill(temporal, signal.SIGSTOP)
    try:
        time.sleep(35)  # the outage: seven heartbeat timeouts (5 s) long, the job's end in it
    finally:
        os.kill(temporal, signal.SIGCONT)
    job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j, 90,
               "the job to end")
    assert job["status"] == "done", job
    # (whether the heartbeat timed out depends on what the server does first once it runs
    # again: time the activity out, or take the heartbeat waiting on its socket; the next
    # test makes it time out for sure)
    assert "interrupted" not in [e["kind"] for e in job["events"]]
    lines = re.findall(r"^line-(\d+)\r?$", output(api, office, sid), re.M)
    assert lines == [str(i) for i in range(1, LINES + 1)], lines
    s = session(api, office, sid)
    assert s["restarts"] == 0 and s["status"] == "ready", s
    assert agent_leader(sid) == pid


def test_a_heartbeat_timed_out_is_not_a_lost_agent(stack, api):
    """The client worker frozen longer than the heartbeat timeout (as it is to the server
    during an outage): once it runs again, the session re-attaches to the agent it still
    holds; nothing restarts and the job goes on."""
    office, sid = new_session(api, stack)
    pid = agent_leader(sid)
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": JOB})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    wait(lambda: re.search(r"^line-4\r?$", output(api, office, sid), re.M), 30, "line 4")
    worker = stack.running_info()["pids"]["client_worker"]
    os.kill(worker, signal.SIGSTOP)
    try:
        wait(lambda: "worker_lost" in [e["kind"] for e in job_of(api, office, job_id)["events"]],
             60, "the heartbeat timeout seen by the session")
    finally:
        os.kill(worker, signal.SIGCONT)
    job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j, 90,
               "the job to end")
    assert job["status"] == "done", job
    kinds = [e["kind"] for e in job["events"]]
    assert "reattached" in kinds and "interrupted" not in kinds, kinds
    lines = re.findall(r"^line-(\d+)\r?$", output(api, office, sid), re.M)
    assert lines == [str(i) for i in range(1, LINES + 1)], lines
    s = session(api, office, sid)
    assert s["restarts"] == 0 and s["status"] == "ready", s
    assert agent_leader(sid) == pid
    assert stack.running_info()["pids"]["client_worker"] == worker  # never restarted


def test_a_worker_and_its_agent_both_killed_restart_the_session(stack, api):
    office, sid = new_session(api, stack)
    pid = agent_leader(sid)
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                 json={"prompt": "sleep 60; echo typed-once-$((6*7))"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    wait(lambda: "typed-once" in output(api, office, sid), 30, "the prompt in the output")
    worker = stack.running_info()["pids"]["client_worker"]
    os.kill(worker, signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)  # the shell and the sleep it runs
    job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j, 90,
               "the job to end")
    assert job["status"] == "failed" and job["error"] == "interrupted", job
    kinds = [e["kind"] for e in job["events"]]
    assert "worker_lost" in kinds and "reattached" not in kinds, kinds
    s = wait(lambda: (s := session(api, office, sid))["status"] == "ready" and s, 90,
             "the session to be ready again")
    assert s["restarts"] == 1
    assert not alive(pid) and agent_leader(sid) != pid
    out = output(api, office, sid)
    assert out.count("typed-once") == 1, "the prompt must not be typed again after the restart"
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "echo back-$((1+1))"})
    assert r.status_code == 200, r.text
    wait(lambda: "back-2" in output(api, office, sid), 30, "the restarted shell to answer")
    replay_and_maybe_record(stack, f"session/{office}/{sid}", "session_worker_lost_restart")


def test_the_keeper_killed_leaves_held_agents_running_and_the_next_start_gets_a_new_one(
        stack, api):
    office, sid = new_session(api, stack)
    pid = agent_leader(sid)
    keeper = int(procfs.stat(pid)[procfs.PPID])
    os.kill(keeper, signal.SIGKILL)
    wait(lambda: not alive(keeper), 15, "the keeper gone")
    # the worker holds the agent's terminal: it runs on, and takes prompts
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                 json={"prompt": "echo still-$((40+2)) $$"})
    assert r.status_code == 200, r.text
    wait(lambda: f"still-42 {pid}" in output(api, office, sid), 30, "the agent answering")
    # a new session's agent is forked by a keeper the worker started again
    office2, sid2 = new_session(api, stack)
    keeper2 = int(procfs.stat(agent_leader(sid2))[procfs.PPID])
    assert keeper2 != keeper and "keeper" in procfs.read(f"/proc/{keeper2}/cmdline").decode()
    assert session(api, office, sid)["restarts"] == 0


def client_worker(stack, home, machine_id: str, *args: str,
                  env: dict[str, str] | None = None) -> subprocess.Popen:
    """`semo worker client` of a machine of its own, on the stack's Temporal and Postgres."""
    info = stack.running_info()
    env = {**os.environ, "SEMO_HOME": str(home), "SEMO_MACHINE_ID": machine_id,
           "SEMO_DATABASE_URL": info["database_url"],
           "SEMO_TEMPORAL_ADDRESS": info["temporal_address"],
           "SEMO_WORKSPACE_ROOTS": json.dumps([str(home / "ws")]), **(env or {})}
    log = open(home / "worker.log", "ab")  # noqa: SIM115
    try:
        return subprocess.Popen([str(venv_bin("semo")), "worker", "client", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        log.close()


def registered_since(stack, machine_id: str, since: float) -> bool:
    with psycopg.connect(stack.running_info()["database_url"], connect_timeout=5) as conn:
        row = conn.execute("select extract(epoch from started_at) from client_machines"
                           " where id = %s", (machine_id,)).fetchone()
    return row is not None and float(row[0]) >= since


def test_sigterm_leaves_the_agents_to_the_next_worker(stack, api, tmp_path):
    machine = f"up-{uuid.uuid4().hex[:6]}"
    since = time.time() - 1
    first = client_worker(stack, tmp_path, machine)
    try:
        wait(lambda: registered_since(stack, machine, since), 60, "the worker registered")
        office, sid = new_session(api, stack, machine)
        pid = agent_leader(sid)
        r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": JOB})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]
        wait(lambda: re.search(r"^line-4\r?$", output(api, office, sid), re.M), 30, "line 4")
        first.send_signal(signal.SIGTERM)  # an upgrade: the old worker goes ...
        assert first.wait(60) == 0
        assert alive(pid)  # ... and leaves its agent running
        since = time.time() - 1
        second = client_worker(stack, tmp_path, machine, "--stop-agents")  # ... the new one comes
        try:
            job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j,
                       90, "the job to end")
            assert job["status"] == "done", job
            kinds = [e["kind"] for e in job["events"]]
            assert "worker_lost" in kinds and "reattached" in kinds, kinds
            lines = re.findall(r"^line-(\d+)\r?$", output(api, office, sid), re.M)
            assert lines == [str(i) for i in range(1, LINES + 1)], lines
            s = session(api, office, sid)
            assert s["restarts"] == 0 and s["status"] == "ready", s
            assert agent_leader(sid) == pid
        finally:
            second.send_signal(signal.SIGTERM)  # --stop-agents: this one stops them
            assert second.wait(60) == 0
        wait(lambda: not alive(pid), 30, "the agent stopped")
    finally:
        for proc in (first, second) if "second" in locals() else (first,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_second_worker_of_a_machine_is_refused_and_takes_no_agent(stack, api, tmp_path):
    """Two client workers of one machine (and SEMO_HOME) would claim each other's agents from
    the keeper: the second one waits for the first to exit, then stops, naming it and the
    fix; the first one's agent runs on, untouched."""
    machine = f"two-{uuid.uuid4().hex[:6]}"
    since = time.time() - 1
    first = client_worker(stack, tmp_path, machine, "--stop-agents")
    second = None
    try:
        wait(lambda: registered_since(stack, machine, since), 60, "the worker registered")
        office, sid = new_session(api, stack, machine)
        pid = agent_leader(sid)
        second = subprocess.Popen(
            [str(venv_bin("semo")), "worker", "client"], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "SEMO_HOME": str(tmp_path), "SEMO_MACHINE_ID": machine,
                 "SEMO_DATABASE_URL": stack.running_info()["database_url"],
                 "SEMO_TEMPORAL_ADDRESS": stack.running_info()["temporal_address"],
                 "SEMO_WORKSPACE_ROOTS": json.dumps([str(tmp_path / "ws")])})
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        message = err.decode()
        assert f"another client worker of machine {machine}" in message, message
        assert f"(pid {first.pid})" in message and "SEMO_MACHINE_ID" in message, message
        assert first.poll() is None and agent_leader(sid) == pid
        r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                     json={"prompt": "echo still-$((40+2)) $$"})
        assert r.status_code == 200, r.text
        wait(lambda: f"still-42 {pid}" in output(api, office, sid), 30, "the agent answering")
        assert session(api, office, sid)["restarts"] == 0
    finally:
        first.send_signal(signal.SIGTERM)  # --stop-agents: its agents go with it
        for proc in (first, second):
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_ctrl_c_of_semo_dev_leaves_no_keeper_and_no_agent(tmp_path):
    stack = DevStack(tmp_path, machine_id="restart-stop")
    stack.start()
    try:
        with stack.api() as api:
            office, sid = new_session(api, stack)
            pid = agent_leader(sid)
            r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                         json={"prompt": "sleep 600"})
            assert r.status_code == 200, r.text
        keeper = int(procfs.stat(pid)[procfs.PPID])
        assert "keeper" in " ".join(procfs.read(f"/proc/{keeper}/cmdline").decode().split("\0"))
    finally:
        assert stack.stop() == 0
    wait(lambda: not alive(keeper) and not alive(pid), 30, "the keeper and the agent gone")
    assert not live_pids_with_env("SEMO_SESSION_ID", sid)



class AgentMachine:
    """A machine of its own whose client worker runs one agent CLI from a profile of only
    `argv` and `env` (`self.env`, set by the subclass), against a scripted stand-in;
    `restart()` kills its worker with SIGKILL and starts the next one (with --stop-agents,
    so the test's end stops them)."""

    agent = ""

    def __init__(self, stack, home: Path) -> None:
        self.stack, self.home = stack, home
        self.machine_id = f"cq-{uuid.uuid4().hex[:6]}"
        self.env: dict[str, str] = {}
        self.workers: list[subprocess.Popen] = []

    def start(self) -> None:
        since = time.time() - 1
        self.workers.append(client_worker(self.stack, self.home, self.machine_id, env=self.env))
        wait(lambda: registered_since(self.stack, self.machine_id, since), 60,
             "the worker registered")

    def restart(self) -> None:
        first = self.workers[-1]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        self.workers.append(client_worker(self.stack, self.home, self.machine_id,
                                          "--stop-agents", env=self.env))

    def session(self, api) -> tuple[str, str, Path]:
        office = f"r-{uuid.uuid4().hex[:8]}"
        r = api.post("/api/offices", json={"office_id": office, "name": "restart",
                                           "agent": self.agent, "machine_id": self.machine_id,
                                           "warm_roles": []})
        assert r.status_code == 201, r.text
        r = api.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
        assert r.status_code == 201, r.text
        sid, wd = r.json()["session_id"], Path(r.json()["working_dir"])
        wait(lambda: session(api, office, sid)["status"] == "ready", 120, f"{self.agent} ready")
        return office, sid, wd

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class ClaudeMachine(AgentMachine):
    """Claude Code with the README's profile, against the scripted Anthropic stand-in."""

    agent = "claude"

    def __init__(self, stack, home: Path, standin: ScriptedAnthropicStandIn) -> None:
        super().__init__(stack, home)
        self.standin = standin
        claude_home = home / "claude-home"
        claude_home.mkdir()
        (claude_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
        env = {"HOME": str(claude_home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "ANTHROPIC_BASE_URL": standin.base_url, "ANTHROPIC_AUTH_TOKEN": "standin-token",
               "CLAUDE_CODE_MAX_RETRIES": "0", "DISABLE_AUTOUPDATER": "1",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        self.env = {"SEMO_AGENT_PROFILES": json.dumps(
            {"claude": {"argv": [str(claude_path())], "env": env}})}


class CodexMachine(AgentMachine):
    """The Codex CLI (the pinned version) as docs/codex.md sets it up: a profile of only
    `argv` and `env`, the user's own $CODEX_HOME/config.toml naming the scripted Responses
    API stand-in as its model provider."""

    agent = "codex"

    def __init__(self, stack, home: Path, standin: ScriptedResponsesStandIn) -> None:
        super().__init__(stack, home)
        self.standin = standin
        codex_home = home / "codex-user" / ".codex"
        codex_home.mkdir(parents=True)
        (codex_home / "config.toml").write_text(user_config(standin.base_url))
        # the workspace root a git repository, as tests/support/codex.py's: Codex asks about
        # every session's folder (its trust screen, answered by policy) and, trusted, asks
        # before a command leaves its sandbox (elsewhere it runs commands unasked)
        subprocess.run(["git", "init", "-q", str(home / "ws")], check=True, timeout=30)
        env = {"HOME": str(codex_home.parent), "CODEX_HOME": str(codex_home),
               "STANDIN_API_KEY": "sk-standin", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.env = {"SEMO_AGENT_PROFILES": json.dumps(
            {"codex": {"argv": [str(codex_path(pinned_version()))], "env": env}})}


def _pending_permission_survives_a_worker_kill(api, machine) -> None:
    """The scripted turn asks to `touch allowed.txt`; the worker is killed while it waits; the
    next worker's session still has it pending, an answer allows it, the command runs, the job
    ends `done` on the same agent, and nothing restarted."""
    office, sid, wd = machine.session(api)
    pid = agent_leader(sid)
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                 json={"prompt": "Create allowed.txt"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    pending = wait(lambda: (s := session(api, office, sid))["status"] == "waiting_input"
                   and s["pending_input"], 60, "the permission pending")
    assert pending["kind"] == "permission" and pending["tool"] == "Bash", pending

    machine.restart()
    wait(lambda: "reattached" in [e["kind"] for e in job_of(api, office, job_id)["events"]],
         90, "the session re-attached to its agent")
    s = session(api, office, sid)
    assert s["status"] == "waiting_input" and s["pending_input"] == pending, s
    assert not (wd / "allowed.txt").exists()

    r = api.post(f"/api/offices/{office}/sessions/{sid}/answer",
                 json={"input_id": pending["input_id"], "decision": "allow"})
    assert r.status_code == 200, r.text
    job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j,
               90, "the job to end")
    assert job["status"] == "done", job
    assert (wd / "allowed.txt").exists(), "the allowed command ran"
    kinds = [e["kind"] for e in job["events"]]
    assert "worker_lost" in kinds and "interrupted" not in kinds, kinds
    s = session(api, office, sid)
    assert s["restarts"] == 0 and s["status"] == "ready" and s["pending_input"] is None, s
    assert agent_leader(sid) == pid  # the same agent, not a new one
    api.delete(f"/api/offices/{office}/sessions/{sid}")


def _turn_ending_while_no_worker_listens_ends_done(api, machine, turn_under_way) -> dict:
    """The scripted turn is slow; the worker is killed once `turn_under_way()` holds; the
    turn's Stop hook reaches the next worker and the job ends `done` on the same agent, which
    then takes the next prompt. Returns the first job."""
    office, sid, _ = machine.session(api)
    pid = agent_leader(sid)
    machine.standin.reply_slow(3, "Slow but sure.\n[SEMO:DONE]")
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "Take a while"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    wait(turn_under_way, 60, "the turn under way")
    machine.restart()
    first = job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j,
                       90, "the job to end")
    assert job["status"] == "done", job
    assert job["completion"]["source"] == "hook", job  # its Stop hook, not lost
    kinds = [e["kind"] for e in job["events"]]
    assert "worker_lost" in kinds and "reattached" in kinds, kinds
    s = session(api, office, sid)
    assert s["restarts"] == 0 and s["status"] == "ready", s
    assert agent_leader(sid) == pid
    machine.standin.reply_text("Again.\n[SEMO:DONE]")
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "Once more"})
    assert r.status_code == 200, r.text
    job = wait(lambda: (j := job_of(api, office, r.json()["job_id"]))["status"] != "running"
               and j, 90, "the next job to end")
    assert job["status"] == "done", job
    api.delete(f"/api/offices/{office}/sessions/{sid}")
    return first


@pytest.fixture
def claude_machine(stack, tmp_path):
    with ScriptedAnthropicStandIn() as standin:
        machine = ClaudeMachine(stack, tmp_path, standin)
        try:
            machine.start()
            yield machine
        finally:
            machine.stop()


def test_a_permission_pending_across_a_worker_kill_is_answered_and_the_tool_runs(
        api, claude_machine):
    """Claude Code asks to run a command; its client worker is killed with SIGKILL while the
    question waits. The next worker takes the same agent up: the question is still the
    session's `pending_input`, POST .../answer allows it, the command runs, the job ends
    `done`, and nothing restarted."""
    claude_machine.standin.reply_tool_use("Bash", {"command": "touch allowed.txt",
                                                   "description": "Create the file"})
    claude_machine.standin.reply_text("Created it.\n[SEMO:DONE]")
    _pending_permission_survives_a_worker_kill(api, claude_machine)

def test_a_claude_turn_that_ends_while_no_worker_listens_ends_its_job_done(
        api, claude_machine):
    """The client worker is killed with SIGKILL mid-turn; the turn ends (Claude Code's Stop
    hook) before the next worker has taken the agent up, or while its session has not
    re-attached yet. The hook reaches the next worker and the job ends `done`, with the
    reply; the same agent then takes the next prompt."""
    _turn_ending_while_no_worker_listens_ends_done(
        api, claude_machine,
        lambda: any(r.kind == "main" for r in list(claude_machine.standin.requests)))

@pytest.fixture
def codex_machine(stack, tmp_path):
    standin = ScriptedResponsesStandIn().start()
    machine = CodexMachine(stack, tmp_path, standin)
    try:
        machine.start()
        yield machine
    finally:
        machine.stop()
        standin.stop()


def test_a_codex_approval_pending_across_a_worker_kill_is_answered_and_the_command_runs(
        api, codex_machine):
    """Codex asks to run a command outside its sandbox; its client worker is killed with
    SIGKILL while the approval waits (the held PermissionRequest hook loses its worker, so
    Codex asks on its own screen). The next worker takes the same Codex up: the approval is
    still the session's `pending_input`, POST .../answer allows it, the command runs, the
    job ends `done`, and nothing restarted."""
    codex_machine.standin.reply_command("touch allowed.txt", escalated=True)
    codex_machine.standin.reply_text("Created it.\n[SEMO:DONE]")
    _pending_permission_survives_a_worker_kill(api, codex_machine)

def test_a_codex_turn_that_ends_while_no_worker_listens_ends_its_job_done(
        api, codex_machine):
    """The client worker is killed with SIGKILL mid-turn; the turn ends (Codex's Stop hook)
    before the next worker has taken the agent up, or while its session has not re-attached
    yet. The hook reaches the next worker and the job ends `done`; the same Codex then takes
    the next prompt."""
    job = _turn_ending_while_no_worker_listens_ends_done(
        api, codex_machine, codex_machine.standin.main_requests)
    assert job["usage"]["responses"] == 1, job  # the reply's usage, recorded by the next worker

def test_a_codex_turn_the_model_api_refuses_while_no_worker_listens_fails_its_job(
        api, codex_machine):
    """A refused turn has no hook: only Codex's rollout file says so, under the turn's id,
    which the dead worker's driver had learned from the prompt's hook. The turn is refused
    while the client worker is down: the next worker's driver knows which turn runs and
    where its rollout file is, and the job fails with the API's reason."""
    office, sid, _ = codex_machine.session(api)
    pid = agent_leader(sid)
    codex_machine.standin.reply_error(400, "Invalid request: refused after a while", delay_s=3)
    r = api.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={"prompt": "Summarise"})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    wait(lambda: codex_machine.standin.main_requests(), 60, "the turn under way")
    codex_machine.restart()
    job = wait(lambda: (j := job_of(api, office, job_id))["status"] != "running" and j,
               90, "the job to end")
    assert job["status"] == "failed" and "refused after a while" in job["error"], job
    kinds = [e["kind"] for e in job["events"]]
    assert "worker_lost" in kinds and "reattached" in kinds, kinds
    s = session(api, office, sid)
    assert s["restarts"] == 0 and s["status"] == "ready", s
    assert agent_leader(sid) == pid
    api.delete(f"/api/offices/{office}/sessions/{sid}")
