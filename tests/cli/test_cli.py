"""The `semo` CLI's API commands against the real stack: every command, its JSON and its
human output, its exit codes and its hints.

Commands run in-process through typer's CliRunner, in a thread (the API they call runs on
this test's event loop), with SEMO_API_URL / SEMO_TOKEN as a user would set them; one test
runs the installed console script as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest

from cli.client import ClientConfig, resolve_config
from dev.embedded import free_port, venv_bin
from semo.errors import ConfigError
from tests.support.cli import as_json
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for

MARKER = "printf '[SEMO:%s]\\n' DONE"


# --- offices ------------------------------------------------------------------------------------


async def test_office_create_list_show_delete(semo):
    office = f"t-cli-{uuid.uuid4().hex[:8]}"
    r = await semo("office", "create", "CLI office", "--id", office, "--machine", MACHINE_ID,
                   "--agent", "shell", "--warm", "BE", "--max-sessions", "3", "--wait", "--json")
    created = as_json(r)
    assert created["office_id"] == office and created["warm_roles"] == ["BE"]
    # --wait waited for the warm pool: the answer is the office with its ready warm session
    [warm] = created["pool"]["sessions"]
    assert warm["warm"] and warm["status"] == "ready" and warm["role"] == "BE"

    r = await semo("office", "list")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(office))
    assert "CLI office" in line and MACHINE_ID in line and "shell" in line
    offices = as_json(await semo("office", "list", "--json"))["offices"]
    assert office in [o["office_id"] for o in offices]

    r = await semo("office", "show", office)
    assert "capacity 3" in r.stdout and warm["session_id"] in r.stdout and "ready" in r.stdout

    r = await semo("office", "delete", office, code=2)  # not a terminal: it wants --yes
    assert "--yes" in r.stderr
    r = await semo("office", "delete", office, "--yes", "--json")
    assert as_json(r)["terminated_sessions"] == [warm["session_id"]]

    r = await semo("office", "show", office, code=1)
    assert "not found (404)" in r.stderr and "semo office list" in r.stderr


# --- sessions, jobs, commands -------------------------------------------------------------------


async def test_session_commands_end_to_end(semo, office, pool):
    o = ["--office", office]
    created = as_json(await semo("session", "create", *o, "--role", "BE", "--json"))
    sid = created["session_id"]
    assert created["status"] == "ready" and created["source"] == "cold"
    r = await semo("session", "create", *o, "--role", "QA")
    assert "is ready" in r.stdout and "cold" in r.stdout
    other = r.stdout.split("session ", 1)[1].split()[0]

    listed = as_json(await semo("session", "list", *o, "--json"))["sessions"]
    assert {s["session_id"] for s in listed} == {sid, other}
    r = await semo("session", "list", *o)
    assert sid in r.stdout and "ready" in r.stdout and "LAST ACTIVITY" in r.stdout

    r = await semo("session", "show", f"{office}/{sid}")  # OFFICE/SESSION works as well
    assert "working dir" in r.stdout and created["working_dir"] in r.stdout
    assert as_json(await semo("session", "show", sid, *o, "--json"))["status"] == "ready"

    # prompt --wait: the job runs to `done`
    r = await semo("session", "prompt", sid, MARKER, *o, "--wait", "--json")
    job = as_json(r)
    assert job["status"] == "done" and job["completion"]["kind"] == "marker"
    r = await semo("job", "show", job["job_id"], *o)
    assert "done" in r.stdout and "[SEMO:%s]" in r.stdout
    r = await semo("job", "show", f"{office}/{job['job_id']}", "--json")  # OFFICE/JOB works too
    assert as_json(r)["status"] == "done"

    # the prompt's command, as `semo command show` tells it
    cmds = await _commands_of(pool, sid)
    r = await semo("command", "show", cmds["send_prompt"], *o)
    assert "send_prompt" in r.stdout and "result: ok" in r.stdout
    cmd = as_json(await semo("command", "show", cmds["send_prompt"], *o, "--json"))
    assert cmd["result"]["result"]["job_id"] == job["job_id"]

    # keys: the text, then Enter, in one command (the API types text before keys)
    r = await semo("session", "keys", sid, *o, "--text", "echo keys-$((6*7))", "--enter", "--json")
    assert as_json(r)["command_id"]

    async def printed(what):
        r = await semo("session", "output", sid, *o)
        return r.stdout if what in r.stdout else None

    out = await wait_for(lambda: printed("keys-42"), what="the keys' output")
    assert "[SEMO:DONE]" in out
    raw = as_json(await semo("session", "output", sid, *o, "--raw", "--json"))
    assert raw["format"] == "raw" and "keys-42" in raw["data"] and raw["next_offset"] > 0
    tail = await semo("session", "output", sid, *o, "--since", str(raw["next_offset"] - 20))
    assert len(tail.stdout) <= 20

    r = await semo("session", "screen", sid, *o)
    assert "keys-42" in r.stdout
    shot = as_json(await semo("session", "screen", sid, *o, "--json"))
    assert shot["rows"] == 40 and shot["cols"] == 120

    # a busy session: prompt is refused with a hint; cancel ends the job
    sent = as_json(await semo("session", "prompt", sid, "sleep 30", *o, "--json"))
    r = await semo("session", "prompt", sid, "echo no", *o, code=1)
    assert "(409)" in r.stderr and "semo session cancel" in r.stderr
    r = await semo("session", "cancel", sid, *o)
    assert f"cancelled job {sent['job_id']}" in r.stdout
    assert as_json(await semo("job", "show", sent["job_id"], *o, "--json"))["status"] == "cancelled"

    r = await semo("session", "release", sid, *o, "--json")
    assert as_json(r)["pool_state"] == "idle"
    r = await semo("session", "terminate", sid, *o)
    assert f"terminated {sid}" in r.stdout
    assert as_json(await semo("session", "show", sid, *o, "--json"))["status"] == "terminated"
    r = await semo("session", "list", *o, "--json")
    assert [s["session_id"] for s in as_json(r)["sessions"]] == [other]
    r = await semo("session", "list", *o, "--all", "--json")
    assert {s["session_id"] for s in as_json(r)["sessions"]} == {sid, other}
    await semo("session", "terminate", other, *o, "--json")


async def _commands_of(pool, sid: str) -> dict[str, str]:
    """The session's command ids by type (the API has no list of them)."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "select type, id::text from agent_commands where session_id = %s order by created_at",
            (sid,))).fetchall()
    return dict(rows)


async def test_prompt_wait_exit_codes(semo, office):
    o = ["--office", office]
    sid = as_json(await semo("session", "create", *o, "--role", "BE", "--json"))["session_id"]
    r = await semo("session", "prompt", sid, "printf '[SEMO:%s] %s\\n' ERROR 'red tests'", *o,
                   "--wait", code=6)
    assert "failed" in r.stdout and "red tests" in r.stdout
    r = await semo("session", "prompt", sid, "sleep 20", *o, "--wait", "--wait-timeout", "0.5",
                   code=4)
    assert "still running" in r.stderr
    job_id = r.stderr.split("job ", 1)[1].split()[0]
    r = await semo("job", "show", job_id, *o, "--wait", "--wait-timeout", "0.3", code=4)
    await semo("session", "cancel", sid, *o)
    r = await semo("job", "show", job_id, *o, "--wait", code=6)
    assert "cancelled" in r.stdout
    await semo("session", "terminate", sid, *o)


async def test_output_follow_streams_until_the_session_ends(semo, office, http):
    o = ["--office", office]
    sid = as_json(await semo("session", "create", *o, "--role", "BE", "--json"))["session_id"]
    follow = asyncio.create_task(semo("session", "output", sid, *o, "--follow"))
    await asyncio.sleep(1.0)  # the stream is open and has caught up
    for i in range(3):
        # the first job stays busy a while: a job that ends before the stream next reads the
        # session shows no `busy` (a status stream reports states, not every flip)
        hold = "sleep 2; " if i == 0 else ""
        r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt",
                            json={"prompt": f"echo line-$((100+{i})); {hold}{MARKER}"})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]
        await wait_for(lambda: _job_done(http, office, job_id), what="the job")  # noqa: B023
    assert not follow.done()
    await http.delete(f"/api/offices/{office}/sessions/{sid}")
    result = await asyncio.wait_for(follow, 30)
    lines = result.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("line-")] == ["line-100", "line-101", "line-102"]
    assert "busy" in result.stderr and "terminated" in result.stderr  # status changes, on stderr

    # --json: one JSON object per event
    r = await semo("session", "output", sid, *o, "--follow", "--json")
    events = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert {e["event"] for e in events} == {"output", "status"}
    assert "line-101" in "".join(e.get("data", "") for e in events if e["event"] == "output")


async def _job_done(http, office, job_id):
    job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
    return job["status"] == "done"


# --- errors: exit codes and hints ---------------------------------------------------------------


async def test_errors_say_what_to_do(semo, office, api_url):
    r = await semo("office", "list", env={"SEMO_TOKEN": ""}, code=2)
    assert "no API token" in r.stderr and "semo dev" in r.stderr and "semo token" in r.stderr

    r = await semo("office", "list", env={"SEMO_TOKEN": "not-a-jwt"}, code=1)
    assert "(401)" in r.stderr and "from SEMO_TOKEN" in r.stderr and "semo token" in r.stderr
    r = await semo("--token", "not-a-jwt", "office", "list", code=1)  # semo's own flags work too
    assert "(401)" in r.stderr and "from --token" in r.stderr

    stranger = token_for(["some-other-office"], sub="stranger")
    r = await semo("office", "show", office, "--token", stranger, code=1)
    assert "not found (404)" in r.stderr and "semo office list" in r.stderr

    r = await semo("session", "show", "no-such-session", "--office", office, code=1)
    assert "(404)" in r.stderr and f"semo session list --office {office}" in r.stderr

    r = await semo("session", "show", "be-123", code=2)
    assert "--office" in r.stderr

    closed = f"http://127.0.0.1:{free_port()}"
    r = await semo("office", "list", "--api-url", closed, code=3)
    assert f"cannot reach the API at {closed}" in r.stderr and "semo dev" in r.stderr

    r = await semo("session", "keys", "x", "--office", office, code=2)
    assert "nothing to send" in r.stderr
    r = await semo("session", "keys", "no-such", "bogus-key", "--office", office, code=1)
    assert "(422)" in r.stderr or "(404)" in r.stderr
    r = await semo("office", "create", "x", "--machine", MACHINE_ID, "--max-sessions", "1",
                   "--warm", "A", "--warm", "B", code=1)
    assert "(422)" in r.stderr and "max_sessions" in r.stderr


def test_config_comes_from_flags_then_env_then_dev_json(tmp_path):
    project = tmp_path / "project"
    (project / ".semo").mkdir(parents=True)
    (project / ".semo" / "dev.json").write_text(json.dumps(
        {"api_url": "http://dev:1", "token": "dev-token", "machine_id": "m"}))
    deep = project / "a" / "b"
    deep.mkdir(parents=True)

    found = resolve_config(env={}, cwd=deep)  # found from a subfolder, as git finds .git
    assert (found.api_url, found.token) == ("http://dev:1", "dev-token")
    assert found.token_from.endswith("dev.json") and found.dev_info["machine_id"] == "m"

    env = {"SEMO_API_URL": "http://env:2/", "SEMO_TOKEN": "env-token"}
    found = resolve_config(env=env, cwd=deep)
    assert (found.api_url, found.token, found.token_from) == \
        ("http://env:2", "env-token", "SEMO_TOKEN")

    found = resolve_config("http://flag:3", "flag-token", env=env, cwd=deep)
    assert (found.api_url, found.token, found.api_url_from) == \
        ("http://flag:3", "flag-token", "--api-url")

    found = resolve_config(env={"SEMO_HOME": str(project / ".semo")}, cwd=tmp_path)
    assert found.token == "dev-token"
    with pytest.raises(ConfigError):
        resolve_config(env={}, cwd=tmp_path)
    assert isinstance(found, ClientConfig)


async def test_the_console_script(api_url, tmp_path):
    """The installed `semo` binary: the exit code and message reach the shell."""
    env = {"PATH": "/usr/bin:/bin", "SEMO_API_URL": api_url, "SEMO_TOKEN": token_for(["*"]),
           "SEMO_HOME": str(tmp_path)}

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(venv_bin("semo")), *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run("office", "show", "nope", "--json")
    assert (code, out) == (1, ""), (code, out, err)
    assert "office 'nope' not found (404)" in err and "semo office list" in err
    code, out, err = await run("office", "list", "--json")
    assert code == 0, err
    assert "offices" in json.loads(out)
