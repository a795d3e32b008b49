"""Token usage and cost per job, session and office (issue #20).

The first half: the price table, and the client worker's transcript reader against real
Postgres with transcripts shaped as Claude Code 2.1.330 writes them (docs/claude-code.md),
including a restarted worker reading them again. The second half: the real `claude` CLI
through the API, against the scripted stand-in whose replies report known usage.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

import activities.usage as usage_reader
from activities.usage import UsageTracker, _Session, read_new
from db import usage as usage_db
from dev.embedded import free_port
from semo.settings import AgentProfile, Settings, StartupDialogs
from semo.usage import DEFAULT_PRICES, ModelPrice, price_of, summarize
from tests.claude_standin.claude_home import claude_env
from tests.claude_standin.install import ClaudeInstallError, claude_path
from tests.claude_standin.server import ScriptedAnthropicStandIn
from tests.support.api_calls import job_when, new_session, send_prompt, session_when
from tests.support.claude import PERSONA
from tests.support.metrics import total
from tests.support.waiting import wait_for
from worker.client import client_runtime

MACHINE = "claude-usage"
MARKER = "[SEMO:DONE]"
OPUS = DEFAULT_PRICES["claude-opus-5-5"]


def usage_of(input_tokens=0, output_tokens=0, cache_read_input_tokens=0,
             cache_creation_input_tokens=0) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens}


# --- prices ---------------------------------------------------------------------------------------


def test_prices_give_cost_and_null_for_an_unknown_model() -> None:
    sums = {**usage_of(1_000_000, 100_000, 2_000_000, 400_000), "responses": 3}
    # Opus 5.5: $4 in, $20 out, $0.20 cache read, $5 cache write (5 minutes), per million
    got = summarize([{"model": "claude-opus-5-5", **sums}], DEFAULT_PRICES)
    assert got["cost_usd"] == pytest.approx(4 + 2 + 0.4 + 2)
    assert (got["model"], got["responses"], got["input_tokens"]) == ("claude-opus-5-5", 3, 1_000_000)

    assert price_of("claude-haiku-4-5-20251001", DEFAULT_PRICES) == DEFAULT_PRICES["claude-haiku-4-5"]
    assert price_of("claude-haiku-4-5-preview", DEFAULT_PRICES) is None
    unknown = summarize([{"model": "claude-nonesuch-9", **sums}], DEFAULT_PRICES)
    assert unknown["cost_usd"] is None and unknown["model"] == "claude-nonesuch-9"
    assert unknown["input_tokens"] == 1_000_000, "tokens are counted even without a price"

    mixed = summarize([{"model": "claude-opus-5-5", **sums}, {"model": "claude-nonesuch-9", **sums}],
                      DEFAULT_PRICES)
    assert mixed["model"] is None and mixed["cost_usd"] is None, "part of a total is no total"
    assert mixed["models"]["claude-opus-5-5"]["cost_usd"] == pytest.approx(8.4)
    assert mixed["output_tokens"] == 200_000

    # the 1-hour cache write is priced at its own rate
    one_hour = {**sums, "cache_creation_1h_input_tokens": 400_000}
    assert summarize([{"model": "claude-opus-5-5", **one_hour}], DEFAULT_PRICES)["cost_usd"] == \
        pytest.approx(4 + 2 + 0.4 + 400_000 * 8 / 1e6)
    assert summarize([], DEFAULT_PRICES)["cost_usd"] == 0.0


def test_the_price_table_is_configurable(monkeypatch) -> None:
    monkeypatch.setenv("SEMO_MODEL_PRICES", json.dumps({
        "claude-nonesuch-9": {"input": 1, "output": 2, "cache_read": 0.1, "cache_write": 1.25},
        "claude-opus-5-5": {"input": 40, "output": 200, "cache_read": 2, "cache_write": 50}}))
    prices = Settings().prices
    assert prices["claude-nonesuch-9"] == ModelPrice(input=1, output=2, cache_read=0.1, cache_write=1.25)
    assert prices["claude-opus-5-5"].input == 40, "a configured price wins over the default"
    assert prices["claude-haiku-4-5"] == DEFAULT_PRICES["claude-haiku-4-5"], "the rest stay"
    monkeypatch.setenv("SEMO_MODEL_PRICES", json.dumps({"m": {"input": -1, "output": 1,
                                                              "cache_read": 0, "cache_write": 0}}))
    with pytest.raises(ValueError):
        Settings()


# --- the transcript reader, against real Postgres ----------------------------------------------------


def _line(**entry) -> str:
    return json.dumps(entry) + "\n"


def _user(prompt_id: str, text: str, sidechain: bool = False) -> str:
    return _line(type="user", isSidechain=sidechain, promptId=prompt_id,
                 message={"role": "user", "content": text})


def _assistant(msg_id: str, usage: dict, *, model: str = "claude-opus-5-5", block: str = "text",
               sidechain: bool = False, at: str = "2026-12-01T10:00:00.000Z",
               stop_reason: str | None = None) -> str:
    return _line(type="assistant", isSidechain=sidechain, timestamp=at,
                 message={"id": msg_id, "role": "assistant", "model": model,
                          "content": [{"type": block}], "stop_reason": stop_reason,
                          "usage": {**usage, "service_tier": "standard",
                                    "cache_creation": {"ephemeral_1h_input_tokens": 0,
                                                       "ephemeral_5m_input_tokens": 0}}})


TRANSCRIPT = (_user("p1", "first") + _assistant("msg_1", usage_of(100, 20, 7, 3))
              + _assistant("msg_1", usage_of(100, 20, 7, 3), block="tool_use")
              + _user("p1", "tool result") + _assistant("msg_2", usage_of(300, 30))
              + _user("p2", "second")
              + _assistant("msg_3", usage_of(5, 6, 7, 8), stop_reason="end_turn")).encode()


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=8),
       chunk=st.sampled_from([usage_reader.READ_CHUNK, 1024, 600]))
def test_reading_a_transcript_as_it_grows_finds_the_same_responses(tmp_path: Path, cuts,
                                                                    chunk) -> None:
    """However the file grows between reads (a line cut anywhere) and whatever the chunks it
    is read in, the responses found, their counts and the jobs they belong to are those of
    one read of the whole file."""
    path = tmp_path / ".claude" / "projects" / "-w" / f"{uuid.uuid4().hex}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    session = _Session("s", "o", transcript=path, jobs={"p1": "job-1", "p2": "job-2"})
    found: dict = {}
    path.write_bytes(b"")
    default, usage_reader.READ_CHUNK = usage_reader.READ_CHUNK, chunk
    try:
        for cut in [*sorted(cuts), len(TRANSCRIPT)]:
            path.write_bytes(TRANSCRIPT[:cut])
            for msg_id, r in read_new(session).items():
                found.setdefault(msg_id, r).merge(r)
    finally:
        usage_reader.READ_CHUNK = default
    got = {m: (r.job_id, r.input_tokens, r.output_tokens, r.cache_read_input_tokens,
               r.cache_creation_input_tokens) for m, r in found.items()}
    assert got == {"msg_1": ("job-1", 100, 20, 7, 3), "msg_2": ("job-1", 300, 30, 0, 0),
                   "msg_3": ("job-2", 5, 6, 7, 8)}
    assert session.ended == {"p2"}, "the last response ended its turn (end_turn)"


def test_a_line_longer_than_a_chunk_is_skipped_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(usage_reader, "READ_CHUNK", 1024)
    path = tmp_path / ".claude" / "projects" / "-w" / "long.jsonl"
    path.parent.mkdir(parents=True)
    huge = _line(type="attachment", attachment={"content": "x" * 5000})
    path.write_text(_user("p1", "go") + huge + _assistant("msg_1", usage_of(3, 4)))
    session = _Session("s", "o", transcript=path, jobs={"p1": "job-1"})
    found = read_new(session)
    assert [(m, r.job_id, r.output_tokens) for m, r in found.items()] == [("msg_1", "job-1", 4)]
    assert session.files[path].offset == path.stat().st_size


async def _sums(pool, office: str) -> dict:
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "select count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_input_tokens),"
            " sum(cache_creation_input_tokens) from model_responses where office_id = %s",
            (office,))).fetchone()
    return {"responses": row[0], **usage_of(*(int(v or 0) for v in row[1:]))}


async def test_a_restarted_worker_does_not_count_a_response_twice(pool, tmp_path: Path) -> None:
    office, sid = f"u-{uuid.uuid4().hex[:8]}", f"be-{uuid.uuid4().hex[:8]}"
    transcript = tmp_path / ".claude" / "projects" / "-w" / "0a1b.jsonl"
    transcript.parent.mkdir(parents=True)
    port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"127.0.0.1:{port}")))
    first = UsageTracker(pool, runtime.metric_meter)
    tap = await first.track(sid, office)
    tap({"hook_event_name": "UserPromptSubmit", "prompt_id": "p1",
         "transcript_path": str(transcript)}, "job-1")

    # one response of two blocks (two lines, one id), the second line cut while being written
    text_and_tool = usage_of(100, 20, 7, 3)
    transcript.write_text(_user("p1", "first") + _assistant("msg_1", text_and_tool)
                          + _assistant("msg_1", text_and_tool, block="tool_use")[:30])
    await first.flush(sid)
    assert await _sums(pool, office) == {"responses": 1, **text_and_tool}

    # the rest of the line, the tool result, the next response; a subagent in its own file
    with transcript.open("a") as f:
        f.write(_assistant("msg_1", text_and_tool, block="tool_use")[30:])
        f.write(_user("p1", "tool result") + _assistant("msg_2", usage_of(300, 30)))
    sub = transcript.with_suffix("") / "subagents" / "agent-a1.jsonl"
    sub.parent.mkdir(parents=True)
    sub.write_text(_user("p1", "Say hi", sidechain=True)
                   + _assistant("msg_s", usage_of(500, 50), sidechain=True))
    await first.flush(sid)
    expected = {"responses": 3, **usage_of(900, 100, 7, 3)}
    assert await _sums(pool, office) == expected

    # a second prompt typed without a job (keys through attach): the session's, no job's
    tap({"hook_event_name": "UserPromptSubmit", "prompt_id": "p2"}, None)
    with transcript.open("a") as f:
        f.write(_user("p2", "by hand") + _assistant("msg_3", usage_of(1, 1), model="<synthetic>")
                + _assistant("msg_4", usage_of(2, 2), at="2026-12-02T10:00:00Z"))
    await first.flush(sid)
    await first.close()

    prices = DEFAULT_PRICES
    job = await usage_db.job_usage(pool, "job-1", sid, prices)
    assert {k: job[k] for k in ("responses", *usage_of())} == expected, "the synthetic line is no response"
    assert job["cost_usd"] == pytest.approx(OPUS.cost(expected))
    session = (await usage_db.sessions_usage(pool, [sid], prices))[sid]
    assert (session["responses"], session["input_tokens"]) == (4, 902)

    async def scraped() -> str:
        async with httpx.AsyncClient(timeout=10) as c:
            return (await c.get(f"http://127.0.0.1:{port}/metrics")).text

    counted = {kind: total(await scraped(), "semo_tokens_total", kind=kind, model="claude-opus-5-5")
               for kind in ("input", "output", "cache_read", "cache_creation")}
    assert counted == {"input": 902, "output": 102, "cache_read": 7, "cache_creation": 3}

    # the worker restarts: a new tracker reads every file from its first line again
    again = UsageTracker(pool, runtime.metric_meter)
    tap = await again.track(sid, office)
    tap({"hook_event_name": "SessionStart", "transcript_path": str(transcript)}, None)
    await again.flush(sid)
    assert await _sums(pool, office) == {"responses": 4, **usage_of(902, 102, 7, 3)}
    assert (await usage_db.job_usage(pool, "job-1", sid, prices))["responses"] == 3, \
        "a response keeps the job it was first told to"
    assert total(await scraped(), "semo_tokens_total", kind="input") == 902, "counted once"

    days = await usage_db.usage_table(pool, office, "day", None, None, prices)
    assert [(r["key"], r["responses"]) for r in days["rows"]] == [("2026-12-01", 3), ("2026-12-02", 1)]
    assert days["total"]["responses"] == 4
    await again.close()


async def test_a_jobs_end_waits_for_its_last_response_to_reach_the_transcript(pool, tmp_path):
    """Claude Code's transcript writes are buffered: the Stop hook can come before the turn's
    last line is in the file. The read before the end is signalled waits for it."""
    office, sid = f"u-{uuid.uuid4().hex[:8]}", f"be-{uuid.uuid4().hex[:8]}"
    transcript = tmp_path / ".claude" / "projects" / "-w" / "late.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text(_user("p1", "go") + _assistant("msg_1", usage_of(10, 1), block="tool_use",
                                                         stop_reason="tool_use"))
    tracker = UsageTracker(pool)
    tap = await tracker.track(sid, office)
    tap({"hook_event_name": "UserPromptSubmit", "prompt_id": "p1",
         "transcript_path": str(transcript)}, "job-late")

    async def write_late() -> None:
        await asyncio.sleep(0.4)
        with transcript.open("a") as f:
            f.write(_user("p1", "tool result")
                    + _assistant("msg_2", usage_of(20, 2), stop_reason="end_turn"))

    late = asyncio.create_task(write_late())
    await tracker.flush_before_end(sid, "job-late", turn_ended=True)
    await late
    got = await usage_db.job_usage(pool, "job-late", sid, DEFAULT_PRICES)
    assert (got["responses"], got["input_tokens"], got["output_tokens"]) == (2, 30, 3)

    # a job that ended another way (the agent exited) does not wait for a line
    started = asyncio.get_running_loop().time()
    await tracker.flush_before_end(sid, "job-late", turn_ended=False)
    assert asyncio.get_running_loop().time() - started < 1
    await tracker.close()


async def test_a_hook_cannot_point_the_reader_outside_claude_codes_transcripts(pool, tmp_path):
    office, sid = f"u-{uuid.uuid4().hex[:8]}", f"be-{uuid.uuid4().hex[:8]}"
    elsewhere = tmp_path / "notes.jsonl"
    elsewhere.write_text(_user("p1", "x") + _assistant("msg_x", usage_of(5, 5)))
    tracker = UsageTracker(pool)
    tap = await tracker.track(sid, office)
    tap({"hook_event_name": "UserPromptSubmit", "prompt_id": "p1",
         "transcript_path": str(elsewhere)}, "job-x")
    await tracker.flush(sid)
    assert await _sums(pool, office) == {"responses": 0, **usage_of()}
    assert (await usage_db.job_usage(pool, "job-x", sid, DEFAULT_PRICES))["responses"] == 0
    await tracker.close()


# --- through the API, with the real CLI -------------------------------------------------------------


@pytest.fixture(scope="module")
def standin():
    server = ScriptedAnthropicStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def claude_machine(settings, temporal_client, pool, workers, tmp_root, standin):
    """A client worker (machine `claude-usage`) whose `claude` profile runs the installed CLI
    against the stand-in, in worktrees of a fresh repository."""
    try:
        claude_bin = claude_path()
    except ClaudeInstallError as exc:
        pytest.fail(f"cannot install the Claude Code CLI for the end-to-end tests: {exc}",
                    pytrace=False)
    base = tmp_root / "usage-e2e"
    home, root = base / "home", (base / "ws").resolve()
    home.mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True, "theme": "dark"}))
    repo = root / "repo"
    repo.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("widgets\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    profile = AgentProfile(argv=[str(claude_bin)], env=claude_env(home, standin.base_url),
                           monitor="claude", hooks=True, input_mode="paste", ready_timeout_s=40,
                           dialogs=StartupDialogs(trust_folder="accept", api_key="accept"))
    machine_settings = settings.model_copy(update={
        "machine_id": MACHINE, "workspace_roots": [root], "agent_profiles": {"claude": profile},
        "home": base / "worker", "usage_interval_s": 0.5})
    async with client_runtime(machine_settings, temporal_client, pool):
        yield repo


@pytest.fixture
async def claude_office(http, claude_machine, standin) -> str:
    standin.clear()
    office_id = f"u-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={
        "office_id": office_id, "name": "usage office", "machine_id": MACHINE, "agent": "claude",
        "warm_roles": [], "repository": str(claude_machine), "personas": {"BE": PERSONA}})
    assert r.status_code == 201, r.text
    return office_id


def tokens(u: dict) -> dict:
    return {k: u[k] for k in usage_of()}


async def test_a_job_shows_the_usage_its_response_reported(http, claude_office, standin, semo):
    reported = usage_of(1234, 567, 8901, 234)
    standin.reply_text(f"Implemented it.\n{MARKER}", usage=reported)
    sid = (await new_session(http, claude_office))["session_id"]
    before = (await http.get(f"/api/offices/{claude_office}/sessions/{sid}")).json()
    assert before["usage"]["responses"] == 0 and before["usage"]["cost_usd"] == 0.0, \
        "a Claude Code session reports usage: zero before its first response"

    job_id = await send_prompt(http, claude_office, sid, "Implement the widget endpoint.")
    job = await job_when(http, claude_office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    usage = job["usage"]
    assert tokens(usage) == reported, "a done job already shows its usage"
    assert usage["model"] == "claude-opus-5-5" and usage["responses"] == 1
    assert usage["cost_usd"] == pytest.approx(OPUS.cost(reported))

    session = (await http.get(f"/api/offices/{claude_office}/sessions/{sid}")).json()
    assert tokens(session["usage"]) == reported
    listed = (await http.get(f"/api/offices/{claude_office}/sessions")).json()["sessions"]
    assert [tokens(s["usage"]) for s in listed] == [reported]
    office = (await http.get(f"/api/offices/{claude_office}")).json()
    assert tokens(office["usage"]) == reported
    assert office["usage"]["cost_usd"] == pytest.approx(OPUS.cost(reported))
    offices = (await http.get("/api/offices")).json()["offices"]
    assert tokens(next(o for o in offices if o["office_id"] == claude_office)["usage"]) == reported

    # the table: by session, by role, by day; the total is the office's
    for group_by, key in (("session", sid), ("role", "BE")):
        r = await http.get(f"/api/offices/{claude_office}/usage", params={"group_by": group_by})
        assert r.status_code == 200, r.text
        table = r.json()
        assert [(row["key"], tokens(row)) for row in table["rows"]] == [(key, reported)]
        assert tokens(table["total"]) == reported and table["group_by"] == group_by
    day = (await http.get(f"/api/offices/{claude_office}/usage", params={"group_by": "day"})).json()
    assert len(day["rows"]) == 1 and len(day["rows"][0]["key"]) == 10
    window = {"since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00+00:00"}
    empty = (await http.get(f"/api/offices/{claude_office}/usage", params=window)).json()
    assert empty["rows"] == [] and empty["total"]["responses"] == 0

    # the CLI prints it
    line = "1,234 in · 567 out · 8,901 cache read · 234 cache write · claude-opus-5-5 · $0.0192"
    for args in (("job", "show", f"{claude_office}/{job_id}"),
                 ("session", "show", f"{claude_office}/{sid}"), ("office", "show", claude_office)):
        out = (await semo(*args)).stdout
        assert line in out, out
    out = (await semo("office", "usage", claude_office, "--by", "role")).stdout
    row = next(ln.split() for ln in out.splitlines() if ln.startswith("BE"))
    assert row == ["BE", "1,234", "567", "8,901", "234", "1", "$0.0192"], out
    r = await semo("office", "usage", claude_office, "--by", "week", code=1)
    assert "group_by" in r.stderr, r.stderr
    await http.delete(f"/api/offices/{claude_office}/sessions/{sid}")


async def test_a_job_with_a_tool_call_sums_both_responses(http, claude_office, standin):
    first, second = usage_of(2000, 100, 0, 50), usage_of(2600, 40, 2000, 0)
    standin.reply_tool_use("Bash", {"command": "touch counted.txt", "description": "Create it"},
                           text="I will create the file.", usage=first)
    standin.reply_text(f"Created it.\n{MARKER}", usage=second)
    session = await new_session(http, claude_office)
    sid = session["session_id"]
    job_id = await send_prompt(http, claude_office, sid, "Create a file named counted.txt")

    await session_when(http, claude_office, sid, "waiting_input")
    running = await wait_for(lambda: _job_usage(http, claude_office, job_id, responses=1),
                             timeout=30, what="the first response's usage while the job waits")
    assert running["status"] == "running" and tokens(running["usage"]) == first, \
        "a running job's usage is kept current"
    r = await http.post(f"/api/offices/{claude_office}/sessions/{sid}/keys", json={"keys": ["enter"]})
    assert r.status_code == 200, r.text
    job = await job_when(http, claude_office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert (Path(session["working_dir"]) / "counted.txt").exists()
    both = {k: first[k] + second[k] for k in first}
    assert tokens(job["usage"]) == both and job["usage"]["responses"] == 2
    assert job["usage"]["cost_usd"] == pytest.approx(OPUS.cost(both))
    await http.delete(f"/api/offices/{claude_office}/sessions/{sid}")


async def _job_usage(http, office: str, job_id: str, responses: int) -> dict | None:
    job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
    return job if job["usage"] and job["usage"]["responses"] >= responses else None


SUB_PROMPT = "Count the widgets in the repository."


def _last_message(body: dict) -> str:
    return json.dumps((body.get("messages") or [{}])[-1])


def _subagents_first_request(body: dict) -> bool:
    """The subagent's conversation: its task, and no model turn yet."""
    messages = body.get("messages") or []
    return (SUB_PROMPT in json.dumps(messages)
            and not any(m.get("role") == "assistant" for m in messages))


async def test_a_subagents_responses_count_for_the_job(http, claude_office, standin):
    """The Agent tool runs a subagent (in the background, in 2.1.330): its responses are in
    a file of their own next to the transcript, and count for the job that started it."""
    standin.reply_tool_use("Agent", {"description": "count widgets", "prompt": SUB_PROMPT,
                                     "subagent_type": "general-purpose"},
                           usage=usage_of(400, 40, 1000, 0))
    standin.reply_text("There are 3 widgets.", usage=usage_of(500, 50, 0, 100),
                       match=_subagents_first_request)
    standin.reply_text(f"The subagent counted 3 widgets.\n{MARKER}", usage=usage_of(600, 60),
                       match=lambda body: "task-notification" in _last_message(body))
    sid = (await new_session(http, claude_office))["session_id"]
    asked = len(standin.main_requests())
    job_id = await send_prompt(http, claude_office, sid, "How many widgets are there? Ask an agent.")
    job = await job_when(http, claude_office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert standin.pending() == 0, "the subagent and the final turn took their replies"
    # what the model reported for this conversation: the three scripted replies, and the
    # default reply if the CLI asked once more between the tool call and the agent's result
    answered = [r.reply for r in standin.main_requests()[asked:]]
    expected = {k: sum(r.reported_usage()[k] for r in answered) for k in usage_of()}
    assert expected["input_tokens"] >= 1500
    assert tokens(job["usage"]) == expected, (job["usage"], answered)
    assert job["usage"]["responses"] == len(answered)
    await http.delete(f"/api/offices/{claude_office}/sessions/{sid}")


async def test_an_unknown_model_has_tokens_but_no_cost(http, claude_office, standin):
    reported = usage_of(10, 20, 30, 40)
    standin.reply_text(f"Done.\n{MARKER}", usage=reported, model="claude-nonesuch-9")
    sid = (await new_session(http, claude_office))["session_id"]
    job_id = await send_prompt(http, claude_office, sid, "Do it.")
    job = await job_when(http, claude_office, job_id, "done", "failed", "timed_out")
    assert tokens(job["usage"]) == reported
    assert job["usage"]["model"] == "claude-nonesuch-9" and job["usage"]["cost_usd"] is None
    office = (await http.get(f"/api/offices/{claude_office}")).json()
    assert office["usage"]["cost_usd"] is None, "never a guess"
    await http.delete(f"/api/offices/{claude_office}/sessions/{sid}")


async def test_a_shell_job_has_no_usage(http, office, semo):
    r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    job_id = await send_prompt(http, office, sid, "echo hi; printf '[SEMO:%s]\\n' DONE")
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done" and job["usage"] is None, job
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["usage"] is None
    assert (await http.get(f"/api/offices/{office}")).json()["usage"] is None
    offices = (await http.get("/api/offices")).json()["offices"]
    assert next(o for o in offices if o["office_id"] == office)["usage"] is None
    table = (await http.get(f"/api/offices/{office}/usage")).json()
    assert table["rows"] == [] and table["total"] is None  # null, as the office's usage
    assert "usage not reported by this agent" in " ".join(
        (await semo("session", "show", f"{office}/{sid}")).stdout.split())
    assert "usage" not in (await semo("job", "show", f"{office}/{job_id}")).stdout
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


@pytest.mark.parametrize("params, says", [
    ({"group_by": "machine"}, "group_by"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-12-01T10:00:00"}, "no time zone"),
    ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "must be before"),
])
async def test_the_usage_table_refuses_bad_parameters(http, office, params, says):
    r = await http.get(f"/api/offices/{office}/usage", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert says in json.dumps(r.json()), r.json()
    assert (await http.get("/api/offices/nope/usage")).status_code == 404
