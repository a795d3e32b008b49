"""Hostile input gets a clear 4xx problem and changes nothing (SPEC §6).

Three layers: the API (4xx problem+json, no rows in agent_sessions/agent_commands, no new
processes), the client machine's activities called directly (they refuse on their own what
the server should never have sent: the workflow's validators are not a security boundary),
and the OutputMonitor under hypothesis (no crash on any bytes; no marker from our own echo).
PersonaInjector does not exist yet, so its fuzzing is left to the issue that adds it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.client import ClientActivities
from activities.monitor import OutputMonitor, PatternSet
from activities.output_store import PgOutputStore
from activities.terminal import SessionManager
from semo import procfs
from semo.settings import AgentProfile
from tests.support.processes import live_pids_with_env
from tests.support.tokens import MACHINE_ID, token_for
from tests.support.waiting import wait_for
from workflows.contracts import (
    MAX_KEYS,
    MAX_PROMPT_BYTES,
    SendInput,
    StartAgentInput,
    StopAgentInput,
)

MB = 1024 * 1024


def children() -> set[int]:
    """Live child processes of this test process (the in-process client worker's agents)."""
    me = os.getpid()
    return {pid for pid, f in procfs.processes()
            if int(f[procfs.PPID]) == me and f[procfs.STATE] != b"Z"}


async def counts(pool) -> dict[str, int]:
    async with pool.connection() as conn:
        return {t: (await (await conn.execute(f"select count(*) from {t}")).fetchone())[0]
                for t in ("agent_sessions", "agent_commands", "agent_command_results", "jobs")}


def assert_problem_4xx(r: httpx.Response, what) -> dict:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json"), (what, r.headers)
    body = r.json()
    assert body["status"] == r.status_code and body["detail"].strip(), (what, body)
    assert len(r.content) < 64 * 1024, (what, "a problem should not echo a huge input back")
    return body


@pytest.fixture(scope="module")
async def target(api_url, pool):
    office = f"t-hostile-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers={
            "Authorization": f"Bearer {token_for(['*'])}"}) as http:
        r = await http.post("/api/offices", json={"office_id": office, "name": "hostile",
                                                  "machine_id": MACHINE_ID, "agent": "shell",
                                                  "warm_roles": []})
        assert r.status_code == 201, r.text
        r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
        assert r.status_code == 201, r.text
        yield {"office_id": office, "session_id": r.json()["session_id"], "http": http}
        await http.delete(f"/api/offices/{office}")


def hostile_session_bodies(root: Path) -> dict[str, object]:
    return {
        "/etc": {"role": "BE", "working_dir": "/etc"},
        "../../..": {"role": "BE", "working_dir": "../../.."},
        "inside, then out": {"role": "BE", "working_dir": "ok/../../../../etc"},
        "the root's parent": {"role": "BE", "working_dir": str(root.parent)},
        "a sibling with the root as prefix": {"role": "BE", "working_dir": str(root) + "-evil"},
        "NUL byte": {"role": "BE", "working_dir": "ok\x00/../../etc"},
        "5000-char path": {"role": "BE", "working_dir": "a" * 5000},
        "300-char name": {"role": "BE", "working_dir": "a" * 300},
        "path over PATH_MAX": {"role": "BE", "working_dir": "/".join(["a" * 200] * 21)},
        "home": {"role": "BE", "working_dir": "/root"},
        "unknown agent": {"role": "BE", "agent": "no-such-agent"},
        "a command line as agent": {"role": "BE", "agent": "bash -c id"},
        "a path as agent": {"role": "BE", "agent": "../../bin/sh"},
        "agent from a list": {"role": "BE", "agent": ["bash", "-c", "id"]},
        "env from the server": {"role": "BE", "env": {"LD_PRELOAD": "/tmp/x.so"}},
        "argv from the server": {"role": "BE", "argv": ["sh", "-c", "id"]},
        "unregistered machine": {"role": "BE", "machine_id": "no-such-machine"},
        "role with a slash": {"role": "../BE"},
        "empty role": {"role": ""},
        "huge role": {"role": "R" * 10_000},
        "negative wait": {"role": "BE", "wait_s": -1},
        "huge wait": {"role": "BE", "wait_s": 1e308},
        "NaN wait": {"role": "BE", "wait_s": "NaN"},
        "not an object": ["role", "BE"],
        "null": None,
        "persona too big": {"role": "BE", "persona": {"name": "x", "role": "BE",
                                                      "instructions": "i" * 30_000}},
    }


async def test_hostile_requests_are_4xx_and_change_nothing(target, pool, settings):
    http, office, sid = target["http"], target["office_id"], target["session_id"]
    root = settings.resolved_workspace_roots[0]
    base = f"/api/offices/{office}"
    before, procs = await counts(pool), children()
    entries_before = set(os.listdir(root.parent))

    cases: list[tuple[str, str, str, dict]] = []
    for what, body in hostile_session_bodies(root).items():
        cases.append((f"session: {what}", "POST", f"{base}/sessions", {"json": body}))
    prompt = f"{base}/sessions/{sid}/prompt"
    keys = f"{base}/sessions/{sid}/keys"
    output = f"{base}/sessions/{sid}/output"
    cases += [
        ("2 MB prompt", "POST", prompt, {"json": {"prompt": "echo HOSTILE " + "x" * (2 * MB)}}),
        ("prompt one byte over", "POST", prompt,
         {"json": {"prompt": "é" * (MAX_PROMPT_BYTES // 2) + "x"}}),
        ("blank prompt", "POST", prompt, {"json": {"prompt": "   \n  "}}),
        ("prompt not a string", "POST", prompt, {"json": {"prompt": ["echo", "x"]}}),
        ("prompt with a lone surrogate", "POST", prompt,
         {"content": b'{"prompt": "echo \\ud800"}', "headers": {"content-type": "application/json"}}),
        ("working dir with a lone surrogate", "POST", f"{base}/sessions",
         {"content": b'{"role": "BE", "working_dir": "\\ud800"}',
          "headers": {"content-type": "application/json"}}),
        ("role with a lone surrogate", "POST", f"{base}/sessions",
         {"content": b'{"role": "\\udfff"}', "headers": {"content-type": "application/json"}}),
        ("negative timeout", "POST", prompt, {"json": {"prompt": "echo x", "timeout_s": -5}}),
        ("huge timeout", "POST", prompt, {"json": {"prompt": "echo x", "timeout_s": 1e300}}),
        ("job id with a slash", "POST", prompt, {"json": {"prompt": "echo x", "job_id": "../x"}}),
        ("body over 4 MB", "POST", prompt,
         {"content": b'{"prompt": "' + b"x" * (5 * MB) + b'"}',
          "headers": {"content-type": "application/json"}}),
        ("malformed JSON", "POST", prompt,
         {"content": b'{"prompt": "echo', "headers": {"content-type": "application/json"}}),
        ("empty body", "POST", prompt, {"content": b"", "headers": {"content-type": "application/json"}}),
        ("JSON null", "POST", prompt, {"content": b"null", "headers": {"content-type": "application/json"}}),
        ("not JSON at all", "POST", prompt,
         {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}}),
        ("text/plain body", "POST", prompt, {"content": b'{"prompt": "echo x"}',
                                             "headers": {"content-type": "text/plain"}}),
        ("deeply nested JSON", "POST", prompt,
         {"content": b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
          "headers": {"content-type": "application/json"}}),
        ("unknown key name", "POST", keys, {"json": {"keys": ["rm -rf /"]}}),
        ("a raw escape as key", "POST", keys, {"json": {"keys": ["\x1b[201~"]}}),
        ("huge key list", "POST", keys, {"json": {"keys": ["enter"] * 100_000}}),
        ("one key over the cap", "POST", keys, {"json": {"keys": ["enter"] * (MAX_KEYS + 1)}}),
        ("keys not a list", "POST", keys, {"json": {"keys": "ctrl+c"}}),
        ("2 MB text", "POST", keys, {"json": {"text": "x" * (2 * MB)}}),
        ("nothing to send", "POST", keys, {"json": {"keys": []}}),
        ("extra field", "POST", keys, {"json": {"keys": ["enter"], "raw": "\x03"}}),
        ("since -1", "GET", output, {"params": {"since": -1}}),
        ("since 10^30", "GET", output, {"params": {"since": 10**30}}),
        ("since 10^400", "GET", output, {"params": {"since": 10**400}}),
        ("since not a number", "GET", output, {"params": {"since": "abc"}}),
        ("since a float", "GET", output, {"params": {"since": 1.5}}),
        ("limit 0", "GET", output, {"params": {"limit": 0}}),
        ("limit -1", "GET", output, {"params": {"limit": -1}}),
        ("limit 10^12", "GET", output, {"params": {"limit": 10**12}}),
        ("unknown format", "GET", output, {"params": {"format": "html"}}),
        ("stream since -1", "GET", f"{output}/stream", {"params": {"since": -1}}),
        ("stream since 10^30", "GET", f"{output}/stream", {"params": {"since": 10**30}}),
        ("session id traversal", "GET", f"{base}/sessions/..%2F..%2Fetc", {}),
        ("session id too long", "GET", f"{base}/sessions/{'s' * 1000}", {}),
        ("job id too long", "GET", f"{base}/jobs/{'j' * 1000}", {}),
        ("job id with a NUL", "GET", f"{base}/jobs/a%00b", {}),
        ("job id traversal", "GET", f"{base}/jobs/..%2F..%2Fetc", {}),
        ("command id not a uuid", "GET", f"{base}/commands/not-a-uuid", {}),
        ("command id 36 dashes", "GET", f"{base}/commands/{'-' * 36}", {}),
        ("office id with a NUL", "GET", "/api/offices/a%00b", {}),
        ("idempotency key too long", "POST", prompt,
         {"json": {"prompt": "echo x"}, "headers": {"Idempotency-Key": "k" * 5000}}),
        ("office: workspace root outside", "POST", "/api/offices",
         {"json": {"name": "x", "machine_id": MACHINE_ID, "workspace_root": "/etc", "warm_roles": []}}),
        ("office: unknown agent", "POST", "/api/offices",
         {"json": {"name": "x", "machine_id": MACHINE_ID, "agent": "sh -c id", "warm_roles": []}}),
        ("office: negative cap", "POST", "/api/offices",
         {"json": {"name": "x", "machine_id": MACHINE_ID, "max_sessions": -1}}),
        ("office: huge cap", "POST", "/api/offices",
         {"json": {"name": "x", "machine_id": MACHINE_ID, "max_sessions": 10**20}}),
        ("office: id traversal", "POST", "/api/offices",
         {"json": {"office_id": "../../etc", "name": "x", "machine_id": MACHINE_ID}}),
        ("office: 10,000 personas", "POST", "/api/offices",
         {"json": {"name": "x", "machine_id": MACHINE_ID, "warm_roles": [],
                   "personas": {f"R{i}": {"name": "p", "role": "r"} for i in range(10_000)}}}),
    ]
    for what, method, url, kw in cases:
        r = await http.request(method, url, **kw)
        assert_problem_4xx(r, what)
        assert "HOSTILE" not in r.text

    assert await counts(pool) == before, "a refused request left rows behind"
    await asyncio.sleep(0.3)
    assert children() == procs, "a refused request started a process"
    assert set(os.listdir(root.parent)) == entries_before, "a refused request made a folder"
    session = (await http.get(f"{base}/sessions/{sid}")).json()
    assert session["status"] == "ready" and session["current_job_id"] is None
    out = (await http.get(output, params={"format": "raw", "limit": 1024 * 1024})).json()
    assert "HOSTILE" not in out["data"] and "rm -rf" not in out["data"]


async def test_symlink_out_of_the_root_is_refused_by_the_client(target, pool, settings, tmp_path):
    """Only the client machine can see a symlink: the server records the request and its
    error, but no agent starts and nothing is made outside the root."""
    http, office = target["http"], target["office_id"]
    root = settings.resolved_workspace_roots[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    link = root / f"link-{uuid.uuid4().hex[:6]}"
    link.symlink_to(outside)
    procs = children()
    try:
        for working_dir in (str(link), str(link / "sub"), f"{link.name}/sub/../sub",
                            str(link / ".." / link.name / "deeper")):
            before = await counts(pool)
            r = await http.post(f"/api/offices/{office}/sessions",
                                json={"role": "BE", "working_dir": working_dir})
            body = assert_problem_4xx(r, working_dir)
            assert r.status_code == 422 and "outside" in body["detail"], body
            after = await counts(pool)
            assert after["agent_commands"] == before["agent_commands"] + 1  # the request, answered
            assert after["agent_command_results"] == before["agent_command_results"] + 1
            assert after["jobs"] == before["jobs"]
        assert list(outside.iterdir()) == [], "something was made outside the root"
        async with pool.connection() as conn:
            live = (await (await conn.execute(
                "select count(*) from agent_sessions where office_id = %s and working_dir like %s"
                " and status <> 'terminated' and status <> 'failed'",
                (office, f"%{link.name}%"))).fetchone())[0]
        assert live == 0
        await asyncio.sleep(0.3)
        assert children() == procs
    finally:
        link.unlink()


async def test_the_client_refuses_what_a_misinformed_server_allows(settings, temporal_client,
                                                                   pool, api_url, tmp_path):
    """The server's early checks read the machine's registration; when that says more than the
    machine allows (here: edited by hand), the machine still refuses, and nothing runs."""
    from worker.client import client_runtime

    machine = f"hostile-{uuid.uuid4().hex[:6]}"
    own = settings.model_copy(update={"machine_id": machine, "workspace_roots": [tmp_path / "ws"],
                                      "home": tmp_path / "home"})
    office = f"t-misinformed-{uuid.uuid4().hex[:6]}"
    async with client_runtime(own, temporal_client, pool), httpx.AsyncClient(
            base_url=api_url, timeout=60,
            headers={"Authorization": f"Bearer {token_for(['*'])}"}) as http:
        async with pool.connection() as conn:
            await conn.execute("update client_machines set workspace_roots = array['/'],"
                               " agent_profiles = agent_profiles || array['ghost', 'sh']"
                               " where id = %s", (machine,))
        r = await http.post("/api/offices", json={"office_id": office, "name": "x",
                                                  "machine_id": machine, "agent": "shell",
                                                  "warm_roles": []})
        assert r.status_code == 201, r.text
        procs = children()
        for body, says in (({"role": "BE", "working_dir": "/etc"}, "outside"),
                           ({"role": "BE", "working_dir": str(tmp_path)}, "outside"),
                           ({"role": "BE", "agent": "ghost"}, "not a profile"),
                           ({"role": "BE", "agent": "sh"}, "not a profile")):
            r = await http.post(f"/api/offices/{office}/sessions", json=body)
            problem = assert_problem_4xx(r, body)
            assert r.status_code == 422 and says in problem["detail"], problem
        await asyncio.sleep(0.3)
        assert children() == procs
        assert not (Path("/etc") / office).exists()
        await http.delete(f"/api/offices/{office}")


# --- the client machine's own checks --------------------------------------------------------


@pytest.fixture
async def machine(settings, temporal_client, pool, tmp_path):
    """A client machine's activities over their own SessionManager, workspace root in tmp."""
    root = tmp_path / "root"
    root.mkdir()
    keyed = AgentProfile(argv=["bash", "--noprofile", "--norc"], env={"PROFILE_VAR": "from-profile"})
    s = settings.model_copy(update={"workspace_roots": [root], "agent_profiles": {"keyed": keyed}})
    store = PgOutputStore(pool)
    store.start()
    manager = SessionManager(s.profiles, store)
    acts = ClientActivities(s, manager, temporal_client)
    try:
        yield acts, root, tmp_path
    finally:
        await manager.close_all()
        await store.close()


def start_input(**over) -> StartAgentInput:
    data = {"office_id": "o1", "session_id": f"s-{uuid.uuid4().hex[:8]}", "workflow_id": "wf",
            "agent": "shell", "working_dir": None, "generation": 0}
    data.update(over)
    return StartAgentInput.model_validate(data)


async def refused(coro, type_: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await coro
    assert info.value.type == type_, (info.value.type, info.value.message)
    assert info.value.non_retryable
    return info.value


async def test_client_refuses_what_the_server_must_not_send(machine, monkeypatch):
    acts, root, tmp = machine
    env = ActivityEnvironment()
    outside = tmp / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "afile").write_text("x")
    procs = children()
    for working_dir in ("/etc", "../../..", "ok/../../..", str(root.parent), f"{root}-evil",
                        "link", "link/sub", str(root / "link" / "a" / "b"), "x\x00y",
                        "a" * 300, "/".join(["a" * 200] * 25), "~", "afile"):
        await refused(env.run(acts.start_agent, start_input(working_dir=working_dir)),
                      "InvalidWorkingDir")
    for agent in ("bash", "sh", "/bin/sh", "../shell", "shell ", "SHELL", "", "claude;id"):
        await refused(env.run(acts.start_agent, start_input(agent=agent)), "UnknownAgent")
    for ids in ({"office_id": "../../etc"}, {"session_id": "../../x"}, {"session_id": ""},
                {"office_id": "a/b"}, {"session_id": ".hidden"}):
        await refused(env.run(acts.start_agent, start_input(**ids)), "InvalidInput")
    assert list(outside.iterdir()) == []
    assert not (root.parent / "etc").exists()
    assert children() == procs, "a refused start spawned something"

    # a server that sends a command line or environment anyway: ignored, the profile runs
    monkeypatch.setenv("SEMO_JWT_SECRET", "worker-secret-" + "z" * 32)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "worker-supabase-key")
    monkeypatch.setenv("SEMO_DATABASE_URL", "postgresql://semo:pw@db/semo")
    inp = StartAgentInput.model_validate({
        **start_input(agent="keyed").model_dump(), "env": {"INJECTED": "1"},
        "argv": ["sh", "-c", "touch /tmp/semo-pwned"], "command": "id"})
    started = await env.run(acts.start_agent, inp)
    with open(f"/proc/{started.pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")[:3]
    assert [os.path.basename(argv[0])] + argv[1:] == [b"bash", b"--noprofile", b"--norc"]
    with open(f"/proc/{started.pid}/environ", "rb") as f:
        agent_env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    assert agent_env[b"PROFILE_VAR"] == b"from-profile"
    assert agent_env[b"SEMO_SESSION_ID"] == inp.session_id.encode()
    for leaked in (b"INJECTED", b"SEMO_JWT_SECRET", b"SUPABASE_SERVICE_KEY", b"SEMO_DATABASE_URL"):
        assert leaked not in agent_env, leaked
    assert Path(started.working_dir).is_relative_to(root)
    assert not Path("/tmp/semo-pwned").exists()

    # send_input re-checks sizes and key names itself
    term = acts.manager.get(inp.session_id)
    sid, gen = inp.session_id, inp.generation
    bad = {
        "2 MB prompt": SendInput(session_id=sid, generation=gen, prompt="echo HOSTILE " + "x" * 2 * MB),
        "prompt one byte over": SendInput(session_id=sid, generation=gen,
                                          prompt="echo HOSTILE" + "x" * (MAX_PROMPT_BYTES - 11)),
        "2 MB text": SendInput(session_id=sid, generation=gen, text="echo HOSTILE" + "x" * 2 * MB),
        "unknown key": SendInput(session_id=sid, generation=gen, keys=["enter", "rm"],
                                 text="echo HOSTILE"),
        "raw escape as a key": SendInput(session_id=sid, generation=gen, keys=["\x1b[201~"]),
        "too many keys": SendInput(session_id=sid, generation=gen, keys=["enter"] * (MAX_KEYS + 1)),
        "100k keys": SendInput(session_id=sid, generation=gen, keys=["0"] * 100_000),
    }
    for what, send in bad.items():
        err = await refused(env.run(acts.send_input, send), "InvalidInput")
        assert len(err.message) < 2000, what
    await asyncio.sleep(0.3)
    assert b"HOSTILE" not in bytes(term.tail), "a refused input reached the terminal"
    # and a fair one still goes through
    await env.run(acts.send_input, SendInput(session_id=sid, generation=gen,
                                             prompt="echo FAIR-$((40+2))"))
    await wait_for(lambda: _has(term, b"FAIR-42"), timeout=10, what="the fair prompt's output")
    await env.run(acts.stop_agent, StopAgentInput(session_id=sid))
    assert not live_pids_with_env("SEMO_SESSION_ID", sid)


async def _has(term, needle: bytes) -> bool:
    return needle in bytes(term.tail)


# --- the OutputMonitor under hypothesis -----------------------------------------------------

MARKERS = ["[SEMO:DONE]", "[SEMO:ERROR] boom", "[SEMO:ERROR]", "https://github.com/o/r/pull/7",
           "Do you want to proceed?", "(y/n)", "\x1b[2K", "\x1b[1A", "\r", "\n", "⏺ "]

chunks = st.lists(st.binary(max_size=300) | st.sampled_from([m.encode() for m in MARKERS]),
                  max_size=40)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=chunks, agent=st.sampled_from(["shell", "claude"]),
       typed=st.lists(st.text(max_size=200), max_size=3))
def test_monitor_never_crashes_on_arbitrary_bytes(parts, agent, typed):
    monitor = OutputMonitor(PatternSet.for_agent(agent), stall_after_s=1.0)
    total = 0
    for i, part in enumerate(parts):
        if typed and i % 7 == 3:
            monitor.expect_echo(typed[i % len(typed)])
        events = monitor.feed(part, now=float(i))
        total += len(part)
        for ev in events:
            assert ev.kind in ("completion", "error", "waiting_input", "commit", "stall")
            assert 0 <= ev.offset <= total
        monitor.check_stall(float(i) + 5, busy=bool(i % 2))
    assert monitor.offset == total


#: a typed line: printable text, sometimes the markers themselves, no control characters
#: (a terminal echoes those as ^X, not as themselves)
typed_line = st.lists(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60)
    | st.sampled_from(["[SEMO:DONE]", "[SEMO:ERROR] gave up", "[SEMO:ERROR]",
                       "https://github.com/o/r/pull/1", "⏺ [SEMO:DONE]", "  [SEMO:DONE]  "]),
    min_size=1, max_size=4).map("".join)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(typed_line, min_size=1, max_size=4), agent=st.sampled_from(["shell", "claude"]),
       decorated=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=8),
       paste=st.booleans())
def test_monitor_never_takes_a_marker_from_our_own_echo(lines, agent, decorated, cuts, paste):
    """What we typed, echoed back by the terminal behind a prompt (or bare, for one line: the
    monitor gives multi-line input no bare-echo discount, see its docstring), raises nothing."""
    text = "\n".join(lines)
    monitor = OutputMonitor(PatternSet.for_agent(agent))
    monitor.expect_echo(text)
    if decorated or len(lines) > 1:
        echo = "\r\n".join(("$ " if i == 0 else "> ") + line for i, line in enumerate(lines))
    else:
        echo = "\r\n".join(lines)
    stream = echo.encode() + b"\r\n"
    if paste:  # bracketed paste, as TUIs get it, echoed inside their markers
        stream = b"\x1b[200~" + stream + b"\x1b[201~"
    events = []
    for piece in _split(stream, cuts):
        events += monitor.feed(piece)
    forged = [ev for ev in events if ev.kind in ("completion", "error")]
    assert not forged, (text, forged)
