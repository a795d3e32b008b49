"""What tripped a person following the README on a fresh clone (issue 30), checked the way
they met it, outside the browser: a machine without Claude Code, seeing the machines, the
CLI on an 80-column terminal, a shell office's usage, a client worker started elsewhere.
(The console's points are in tests/api/test_console_first_hour.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import signal
import subprocess
import time
import uuid

import pytest
from ptyprocess import PtyProcess

from activities.monitor import strip_terminal_escapes
from dev.embedded import venv_bin
from tests.support.api_calls import job_when, new_session, send_prompt
from tests.support.paths import REPO
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for
from worker.client import register_machine

README = (REPO / "README.md").read_text()
MARKER = "printf '[SEMO:%s]\\n' DONE"


async def semo_cli(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    """The installed `semo` command, its output piped."""
    proc = await asyncio.create_subprocess_exec(
        str(venv_bin("semo")), *args, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def on_terminal(args: list[str], env: dict[str, str], cols: int = 80,
                timeout: float = 60) -> str:
    """What `semo ARGS` shows on a terminal of `cols` columns (a real PTY), escapes removed."""
    proc = PtyProcess.spawn([str(venv_bin("semo")), *args], env=env, dimensions=(24, cols))
    raw = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(proc.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            raw += chunk
        else:
            raise AssertionError(f"`semo {' '.join(args)}` did not finish: {raw[-2000:]!r}")
    finally:
        proc.close(force=True)
    return strip_terminal_escapes(raw).replace("\r\n", "\n")


@pytest.fixture(autouse=True)
async def office_deleted_after(http, office):
    """Each test's office goes with its sessions: live terminals of the in-process worker
    would otherwise outlive the test."""
    yield
    r = await http.delete(f"/api/offices/{office}")
    assert r.status_code in (200, 404), r.text


@pytest.fixture
def shell_env(api_url, tmp_path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "SEMO_API_URL": api_url, "SEMO_TOKEN": token_for(["*"]),
            "SEMO_HOME": str(tmp_path / "no-dev-json"), "HOME": str(tmp_path),
            "TERM": "xterm-256color", "LANG": "C.UTF-8"}


@pytest.fixture
async def machine_without_claude(settings, pool, tmp_path, monkeypatch):
    """A second machine whose worker found no `claude` on its PATH (it has only bash), as a
    client worker registers it at start; the row is gone after the test."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to("/bin/bash")
    monkeypatch.setenv("PATH", str(bin_dir))
    machine_id = f"noclaude-{uuid.uuid4().hex[:8]}"
    await register_machine(pool, settings.model_copy(update={"machine_id": machine_id}))
    monkeypatch.undo()
    yield machine_id
    async with pool.connection() as conn:
        await conn.execute("delete from client_machines where id = %s", (machine_id,))


async def _recorded(pool, office: str) -> tuple[int, int]:
    async with pool.connection() as conn:
        commands = (await (await conn.execute(
            "select count(*) from agent_commands where office_id = %s and type = 'create_session'",
            (office,))).fetchone())[0]
        sessions = (await (await conn.execute(
            "select count(*) from agent_sessions where office_id = %s", (office,))).fetchone())[0]
    return commands, sessions


# --- 2. a machine without Claude Code ------------------------------------------------------


async def test_a_missing_agent_program_is_a_422_before_anything_is_recorded(
        http, pool, machine_without_claude, shell_env, caplog):
    machine = machine_without_claude
    office = f"t-try-{uuid.uuid4().hex[:8]}"
    # the office is created (claude is the default agent), with a warning that says why not
    r = await http.post("/api/offices", json={"office_id": office, "name": "Try",
                                              "machine_id": machine, "warm_roles": []})
    assert r.status_code == 201, r.text
    [warning] = r.json()["warnings"]
    assert f"agent 'claude' cannot run on machine '{machine}'" in warning, warning
    assert "npm install -g @anthropic-ai/claude-code" in warning and "SEMO_AGENT_PROFILES" in warning

    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert detail == warning, detail  # one rule, one message: machine, profile and the fix
    assert await _recorded(pool, office) == (0, 0)

    code, out, err = await semo_cli("session", "create", "-o", office, "--role", "BE", env=shell_env)
    assert code == 1, (code, out, err)
    assert "cannot run on machine" in err and "(422)" in err, err
    assert "readyz" not in err and "semo worker client`), or" not in err, err  # not an outage
    assert await _recorded(pool, office) == (0, 0)

    code, out, err = await semo_cli("office", "create", "Again", "--id", f"{office}-2",
                                    "--machine", machine, "--no-warm", env=shell_env)
    assert code == 0, err
    assert "warning: agent 'claude' cannot run on machine" in " ".join(err.split()), err

    for o in (office, f"{office}-2"):
        r = await http.delete(f"/api/offices/{o}")
        assert r.status_code == 200 and r.json()["terminated_sessions"] == [], r.text


async def test_the_worker_does_not_warn_about_a_claude_it_was_not_asked_to_run(
        settings, pool, tmp_path, monkeypatch, caplog):
    """Only a shell profile configured, no `claude` on PATH: nothing to warn about (it used to
    warn that it could not tell the Claude Code version); a configured one that is missing is
    a warning naming it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to("/bin/bash")
    monkeypatch.setenv("PATH", str(bin_dir))
    machine_id = f"shellonly-{uuid.uuid4().hex[:8]}"
    shell_only = settings.model_copy(update={"machine_id": machine_id})
    try:
        with caplog.at_level(logging.INFO):
            await register_machine(pool, shell_only)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warned == [], warned
        assert not any("Claude Code version" in r.getMessage() for r in caplog.records)

        configured = settings.model_copy(update={
            "machine_id": machine_id,
            "agent_profiles": {"claude": settings.profiles["claude"]}})
        caplog.clear()
        with caplog.at_level(logging.INFO):
            await register_machine(pool, configured)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warned == ["agent profile 'claude': `claude` was not found on this machine's PATH"]
    finally:
        async with pool.connection() as conn:
            await conn.execute("delete from client_machines where id = %s", (machine_id,))


# --- 3. seeing the machines -----------------------------------------------------------------


async def test_machines_are_listed_with_their_agents_and_live_sessions(
        http, office, api_url, machine_without_claude, shell_env):
    sid = (await new_session(http, office))["session_id"]
    r = await http.get("/api/machines", headers={"Authorization": f"Bearer {token_for([office])}"})
    assert r.status_code == 200, r.text
    machines = {m["machine_id"]: m for m in r.json()["machines"]}
    here = machines[MACHINE_ID]
    assert set(here) == {"machine_id", "hostname", "agent_profiles", "agent_versions",
                         "workspace_roots", "last_seen_at", "live_sessions"}
    assert "shell" in here["agent_profiles"] and here["agent_versions"]["shell"]["runs"] is True
    assert here["workspace_roots"] and here["last_seen_at"]
    assert here["live_sessions"] == 1  # this token's office's one session
    elsewhere = machines[machine_without_claude]
    assert elsewhere["agent_versions"]["claude"]["runs"] is False
    assert elsewhere["agent_versions"]["shell"]["runs"] is True and elsewhere["live_sessions"] == 0

    # another token's count leaves this office's session out
    r = await http.get("/api/machines", headers={"Authorization": f"Bearer {token_for(['nope'], sub='stranger')}"})
    assert {m["machine_id"]: m["live_sessions"] for m in r.json()["machines"]}[MACHINE_ID] == 0
    assert (await http.get("/api/machines", headers={"Authorization": "Bearer x.y.z"})).status_code == 401

    code, out, err = await semo_cli("machine", "list", env={**shell_env,
                                                            "SEMO_TOKEN": token_for([office])})
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split("\t") == ["MACHINE", "AGENTS", "LIVE", "LAST SEEN", "WORKSPACE ROOTS"]
    cells = {row.split("\t")[0]: row.split("\t") for row in rows}
    assert "shell" in cells[MACHINE_ID][1] and cells[MACHINE_ID][2] == "1"
    assert "claude (missing)" in cells[machine_without_claude][1]
    assert f"{machine_without_claude}: claude: `claude` was not found" in " ".join(err.split())
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


# --- 5. the CLI on an 80-column terminal ----------------------------------------------------


async def test_session_list_and_job_events_fit_an_80_column_terminal(http, office, shell_env):
    ready = (await new_session(http, office, role="QA"))["session_id"]
    busy = (await new_session(http, office))["session_id"]
    await send_prompt(http, office, busy, "sleep 600")
    job = await send_prompt(http, office, ready, f"echo hi; {MARKER}")
    await job_when(http, office, job, "done")

    env = {**shell_env, "SEMO_OFFICE": office}
    shown = await asyncio.to_thread(on_terminal, ["session", "list"], env)
    lines = [ln for ln in shown.splitlines() if ln]
    assert lines[0].startswith("SESSION") and len(lines) == 3, shown  # one line per session
    assert all(len(ln) <= 80 and ln == ln.rstrip() for ln in lines), shown
    for sid in (ready, busy):  # whole, where a person copies them from
        assert any(ln.split()[0] == sid for ln in lines[1:]), shown
    assert "LAST ACTIVITY" in lines[0] and all(re.search(r"\d\d:\d\d:\d\d$", ln)
                                               for ln in lines[1:]), shown

    shown = await asyncio.to_thread(on_terminal, ["job", "show", job], env)
    at = shown.index("AT ")
    events = [ln for ln in shown[at:].splitlines() if ln]
    assert events[0].split() == ["AT", "EVENT", "DATA"], shown
    assert all(ln == ln.rstrip() and len(ln) <= 80 for ln in events), shown  # no padding
    assert len(events) == 1 + len((await http.get(f"/api/offices/{office}/jobs/{job}")).json()
                                  ["events"]), shown  # one line per event: nothing wrapped
    assert any("job_done" in ln and '{"kind": "marker"' in ln for ln in events), shown

    # a wide terminal shows every column, as the README's transcript does
    shown = await asyncio.to_thread(on_terminal, ["session", "list"], env, 140)
    assert shown.splitlines()[0].split() == ["SESSION", "ROLE", "AGENT", "STATUS", "JOB",
                                             "RESTARTS", "CIRCUIT", "MACHINE", "LAST", "ACTIVITY"]
    await http.post(f"/api/offices/{office}/sessions/{busy}/cancel")


# --- 6. a shell office's usage --------------------------------------------------------------


async def test_a_shell_office_has_null_usage_and_says_so(http, office, shell_env):
    sid = (await new_session(http, office))["session_id"]
    await job_when(http, office, await send_prompt(http, office, sid, f"echo hi; {MARKER}"), "done")
    r = await http.get(f"/api/offices/{office}/usage")
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [] and r.json()["total"] is None, r.json()
    assert (await http.get(f"/api/offices/{office}")).json()["usage"] is None

    code, out, err = await semo_cli("office", "usage", office, "--json", env=shell_env)
    assert code == 0 and json.loads(out)["total"] is None, (out, err)
    code, out, err = await semo_cli("office", "usage", office, env=shell_env)
    assert code == 0, err
    message = " ".join(err.split())
    assert "none of its sessions runs an agent that reports it" in message, err
    assert "in that time" not in message and "0.0" not in out + err


# --- 7. a client worker started in another folder -------------------------------------------


def readme_worker_env() -> dict[str, str]:
    """The variables README's "A client worker on another machine" block exports."""
    section = README[README.index("## A client worker on another machine"):]
    block = re.search(r"^```\n(.*?)^```", section, flags=re.S | re.M).group(1)
    return dict(re.findall(r"^export (\w+)=(\S+)$", block, flags=re.M))


async def test_a_client_worker_keeps_its_state_in_semo_home(settings, pool, http, tmp_path):
    """Started as the README says, from some folder: its state goes to SEMO_HOME, not a
    `.semo` in that folder; with only a shell profile, its log warns about nothing."""
    readme = readme_worker_env()
    assert "SEMO_HOME" in readme, "the README says where the worker keeps its state"
    machine_id = f"alice-{uuid.uuid4().hex[:8]}"
    home, roots, cwd = tmp_path / "alice-semo", tmp_path / "work", tmp_path / "somewhere"
    cwd.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           **{k: v for k, v in readme.items() if k not in ("SEMO_AGENT_PROFILES",)},
           "SEMO_TEMPORAL_ADDRESS": settings.temporal_address,
           "SEMO_DATABASE_URL": settings.effective_database_url(),
           "SEMO_MACHINE_ID": machine_id, "SEMO_HOME": str(home),
           "SEMO_WORKSPACE_ROOTS": str(roots),
           "SEMO_AGENT_PROFILES": '{"shell": {"argv": ["bash", "--noprofile", "--norc"]}}'}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(venv_bin("semo")), "worker", "client"], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        async def registered():
            async with pool.connection() as conn:
                return await (await conn.execute(
                    "select agent_versions from client_machines where id = %s",
                    (machine_id,))).fetchone()
        row = await wait_for(registered, timeout=90, interval=0.3, what="the worker to register")
        assert row[0]["shell"]["runs"] is True
        office = f"t-alice-{uuid.uuid4().hex[:8]}"
        r = await http.post("/api/offices", json={"office_id": office, "name": "on alice's",
                                                  "machine_id": machine_id, "agent": "shell",
                                                  "warm_roles": []})
        assert r.status_code == 201 and r.json()["warnings"] == [], r.text
        sid = (await new_session(http, office))["session_id"]
        assert (home / "transcripts" / f"{sid}.log").exists()
        assert (await http.delete(f"/api/offices/{office}")).status_code == 200
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
        async with pool.connection() as conn:
            await conn.execute("delete from client_machines where id = %s", (machine_id,))
    assert not (cwd / ".semo").exists(), sorted(p.name for p in (cwd / ".semo").rglob("*"))
    lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert lines, log.read_text()
    warned = [ln["event"] for ln in lines if ln["level"] not in ("debug", "info")]
    assert warned == [], warned  # it used to warn it could not tell the Claude Code version
