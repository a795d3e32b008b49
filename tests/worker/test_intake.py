"""The command intake against real Postgres and Temporal: rows inserted by anyone are carried
out exactly once and answered exactly once, through crashes (SIGKILL) and with several intakes
at once; malformed rows get an error and stale ones `expired`.

Effects are counted where they land: each `send_keys` row types `echo L<n> >> <file>` into a
shell session, so the file holds one line per execution of the command by the terminal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from psycopg.types.json import Jsonb

from commands.executor import CommandExecutor
from db.claims import HELD_LOCKS, Claimant
from tests.support.intake import count_results, insert_rows, results_of, running_intake
from tests.support.paths import REPO
from tests.support.tokens import JWT_SECRET, MACHINE_ID
from tests.support.waiting import wait_for

# --- helpers --------------------------------------------------------------------------------------


def intake_env(settings, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SEMO_", "SUPABASE_"))}
    env.update({
        "SEMO_DATABASE_URL": settings.effective_database_url(),
        "SEMO_TEMPORAL_ADDRESS": settings.effective_temporal_address(),
        "SEMO_JWT_SECRET": JWT_SECRET,
        "SEMO_MACHINE_ID": MACHINE_ID,
        "SEMO_HOME": str(settings.home),
        "SEMO_HEARTBEAT_TIMEOUT_S": str(settings.heartbeat_timeout_s),
        "SEMO_INTAKE_POLL_INTERVAL_S": "1",
        "PYTHONPATH": str(REPO),
    })
    env.update(extra)
    return env


def spawn_intake(settings, log_path: Path) -> subprocess.Popen:
    """The intake as its own process (`semo worker intake`), for SIGKILL."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "cli", "worker", "intake"],
                                env=intake_env(settings), cwd=log_path.parent,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def shell_sessions(http, office, n: int) -> list[str]:
    created = await asyncio.gather(*(
        http.post(f"/api/offices/{office}/sessions", json={"role": "BE"}) for _ in range(n)))
    for r in created:
        assert r.status_code == 201, r.text
    return [r.json()["session_id"] for r in created]


def echo_rows(office, sid, path: Path, numbers) -> list[dict]:
    return [{"office_id": office, "session_id": sid, "type": "send_keys",
             "payload": {"text": f"echo L{i:04d} >> {path}\r"}} for i in numbers]


def lines_in(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def file_has(path: Path, n: int):
    return len(lines_in(path)) >= n


# --- malformed and expired rows -------------------------------------------------------------------

async def test_malformed_rows_get_an_error_within_seconds(settings, pool, temporal_client, workers,
                                                          office):
    async with running_intake(settings, temporal_client):
        t0 = time.monotonic()
        ids = await insert_rows(pool, [
            {"office_id": office, "type": "launch_rockets", "payload": {}},
            {"office_id": office, "session_id": "nope-1", "type": "send_keys",
             "payload": {"keys": ["not-a-key"]}},
            {"office_id": office, "session_id": "nope-2", "type": "send_keys",
             "payload": {"text": "hi", "surplus": 1}},
            {"office_id": office, "session_id": "nope-3", "type": "send_keys",
             "payload": ["not", "an", "object"]},
            {"office_id": office, "type": "send_prompt", "payload": {"prompt": "x"}},
            {"office_id": office, "session_id": "no-such-session", "type": "send_keys",
             "payload": {"text": "hi"}},
            {"office_id": "no-such-office", "session_id": "s", "type": "cancel", "payload": {}},
            {"office_id": office, "type": "create_session", "payload": {"role": "not a role!"}},
        ])
        res = await wait_for(lambda: _all_answered(pool, ids), timeout=20, what="error results")
        elapsed = time.monotonic() - t0
    assert elapsed < 10, f"malformed rows took {elapsed:.1f}s to be answered"
    details = [res[i]["result"]["detail"] for i in ids]
    assert all(res[i]["status"] == "error" and res[i]["command_status"] == "failed" for i in ids)
    assert "unknown command type 'launch_rockets'" in details[0]
    assert "not-a-key" in details[1]
    assert "surplus" in details[2]
    assert "bad payload for send_keys" in details[3]
    assert "send_prompt needs a session_id" in details[4]
    assert "session 'no-such-session' not found" in details[5]
    assert "office 'no-such-office' not found" in details[6]
    assert "bad payload for create_session" in details[7]
    assert [res[i]["result"]["status"] for i in ids] == [422, 422, 422, 422, 422, 404, 404, 422]


async def _all_answered(pool, ids):
    res = await results_of(pool, ids)
    return res if len(res) == len(ids) else None


async def test_old_rows_are_answered_expired_not_run(settings, pool, temporal_client, workers,
                                                     office, http, tmp_path):
    [sid] = await shell_sessions(http, office, 1)
    out = tmp_path / "expired.log"
    old = echo_rows(office, sid, out, [1])[0] | {"created_at": "2000-01-01T00:00:00Z"}
    fresh = echo_rows(office, sid, out, [2])[0]
    async with running_intake(settings, temporal_client):
        ids = await insert_rows(pool, [old, fresh])
        res = await wait_for(lambda: _all_answered(pool, ids), timeout=20, what="results")
        await wait_for(lambda: file_has(out, 1), timeout=10, what="the fresh row's line")
    expired, ran = res[ids[0]], res[ids[1]]
    assert expired["status"] == "expired" and expired["command_status"] == "expired"
    assert expired["result"]["status"] == 410 and "not executed" in expired["result"]["detail"]
    assert ran["status"] == "ok"
    assert lines_in(out) == ["L0002"], "the expired row must not have been typed"


# --- claimants: alive keeps, dead loses -----------------------------------------------------------

async def test_claim_lock_is_seen_held_regained_after_a_cut_and_gone_when_closed(settings, pool):
    regained = asyncio.Event()
    claimant = Claimant(settings.effective_database_url(), name="cut-me",
                        on_regained=regained.set)
    key = await claimant.start()
    try:
        assert await _held(pool, key)
        async with pool.connection() as conn:  # the lock's connection dies (a network cut)
            await conn.execute("select pg_terminate_backend(pid) from pg_stat_activity"
                               " where application_name = 'semo-cut-me'")
        await asyncio.wait_for(regained.wait(), 30)
        assert claimant.key == key and await _held(pool, key), "the same key, held again"
    finally:
        await claimant.close()
    assert claimant.key is None and not await _held(pool, key)


async def _held(pool, key: int) -> bool:
    async with pool.connection() as conn:
        return (await (await conn.execute(
            f"select exists (select 1 from ({HELD_LOCKS}) h where h.lock_key = %s)",
            (key,))).fetchone())[0]


async def test_a_live_claimants_rows_are_left_alone_and_a_dead_ones_are_taken_at_once(
        settings, pool, temporal_client, workers, office, http, tmp_path):
    """A row the API claimed and started is not taken while the API lives (its claim lock is
    held), nor is anything queued behind it in its session; when the API dies (its Postgres
    session ends) the intake takes both at its next drain, not after the lease."""
    [sid] = await shell_sessions(http, office, 1)
    out = tmp_path / "api.log"
    api = Claimant(settings.effective_database_url(), name="stand-in-api")
    key = await api.start()
    held = uuid.uuid4()
    async with pool.connection() as conn:
        await conn.execute(
            """insert into agent_commands (id, office_id, session_id, type, payload, status, source,
                   claimed_by, claimed_at, attempts, claim_lock, started_at)
               values (%s, %s, %s, 'send_keys', %s, 'running', 'api', 'api:elsewhere', now(), 1,
                       %s, now())""",
            (held, office, sid, Jsonb(echo_rows(office, sid, out, [1])[0]["payload"]), key))
    try:
        async with running_intake(settings, temporal_client) as intake:
            [behind] = await insert_rows(pool, echo_rows(office, sid, out, [2]))
            [other] = await insert_rows(pool, [{"office_id": office, "type": "nope"}])
            # `other` answered: a drain ran after `behind` was committed, and left both alone
            await wait_for(lambda: results_of(pool, [other]), timeout=10, what="a later drain")
            assert not await results_of(pool, [held, behind])
            await api.close()  # the API process dies: its session ends, its lock with it
            t0 = time.monotonic()
            res = await wait_for(lambda: _all_answered(pool, [held, behind]), timeout=30,
                                 what="the dead claimant's rows taken over")
            took = time.monotonic() - t0
            await wait_for(lambda: file_has(out, 2), timeout=10, what="both lines")
            me = intake.me
    finally:
        await api.close()
    assert took < settings.intake_poll_interval_s + 5, f"taken over after {took:.1f}s"
    assert res[held]["attempts"] == 2 and res[held]["claimed_by"] == me
    assert {r["status"] for r in res.values()} == {"ok"}
    assert lines_in(out) == ["L0001", "L0002"]
    async with pool.connection() as conn:
        left = (await (await conn.execute(
            "select count(*) from agent_commands where claimed_by = %s and status = 'running'",
            (me,))).fetchone())[0]
    assert left == 0, "a stopped intake leaves nothing claimed behind"


# --- exactly once ---------------------------------------------------------------------------------

SESSIONS = 5
PER_SESSION = 200
BURST = 20  # rows per session per burst: 100 rows a burst, 10 bursts


async def test_thousand_rows_through_three_sigkills(settings, pool, temporal_client, workers,
                                                    office, http, tmp_path):
    """1,000 rows in bursts while the intake process is SIGKILLed three times: every row gets
    exactly one result, every line is typed exactly once and in order, and the rows the dead
    intakes held are taken over at once (every wait below is far shorter than the lease,
    LEASE_S). About 40 s on an idle 2-CPU machine; Temporal's round trips set the pace."""
    sids = await shell_sessions(http, office, SESSIONS)
    files = [tmp_path / f"session-{k}.log" for k in range(SESSIONS)]
    bursts = [
        [row for k, sid in enumerate(sids)
         for row in echo_rows(office, sid, files[k], range(b * BURST, (b + 1) * BURST))]
        for b in range(PER_SESSION // BURST)
    ]
    log_path = tmp_path / "intake.log"
    ids: list[uuid.UUID] = []
    kills: list[tuple[int, object]] = []  # (results when killed, database clock at the kill)
    t0 = time.monotonic()
    proc = spawn_intake(settings, log_path)
    try:
        # (bursts inserted while it runs, results to wait for before the kill, bursts while dead)
        for running, kill_at, dead in [(3, 100, 2), (2, 350, 2), (0, 600, 1)]:
            for _ in range(running):
                ids += await insert_rows(pool, bursts.pop(0))
            await wait_for(lambda: _at_least(pool, ids, kill_at), timeout=90, interval=0.02,
                           what=f"{kill_at} results before a kill")
            kill(proc)
            kills.append((await count_results(pool, ids), await _db_now(pool)))
            for _ in range(dead):
                ids += await insert_rows(pool, bursts.pop(0))
            proc = spawn_intake(settings, log_path)
        assert not bursts
        await wait_for(lambda: _at_least(pool, ids, len(ids)), timeout=120, interval=0.1,
                       what="a result for every row")
        elapsed = time.monotonic() - t0
    finally:
        kill(proc)
    print(f"\n1,000 rows through 3 SIGKILLs: {elapsed:.1f}s; killed at {[k for k, _ in kills]} "
          "results")

    assert len(ids) == SESSIONS * PER_SESSION == 1000
    async with pool.connection() as conn:
        per_row = dict(await (await conn.execute(
            """select c.id, count(r.id) from agent_commands c
               left join agent_command_results r on r.command_id = c.id
               where c.id = any(%s) group by c.id""", (ids,))).fetchall())
        statuses = Counter(r[0] for r in await (await conn.execute(
            "select status from agent_command_results where command_id = any(%s)",
            (ids,))).fetchall())
        taken_over = (await (await conn.execute(
            """select count(*) filter (where attempts > 1),
                      count(*) filter (where attempts > 1 and started_at < %s),
                      count(distinct claimed_by)
               from agent_commands where id = any(%s)""",
            (kills[-1][1], ids))).fetchone())
    assert sorted(set(per_row.values())) == [1], "every row has exactly one result"
    assert statuses == {"ok": 1000}, statuses
    for k, path in enumerate(files):
        assert lines_in(path) == [f"L{i:04d}" for i in range(PER_SESSION)], \
            f"session {k}: each line typed exactly once, in order"
    reclaimed, reclaimed_after_start, claimants = taken_over
    assert reclaimed > 0, "the kills should have left claimed rows for the next intake"
    assert reclaimed_after_start > 0, \
        "some rows were started by a killed intake and run again (acting once) by the next"
    assert claimants == 4


async def _at_least(pool, ids, n):
    return await count_results(pool, ids) >= n


async def _db_now(pool):
    async with pool.connection() as conn:
        return (await (await conn.execute("select now()")).fetchone())[0]


async def test_two_intakes_at_once_never_both_apply_a_command(settings, pool, temporal_client,
                                                              workers, office, http, tmp_path):
    executed: list[tuple[str, uuid.UUID]] = []

    class CountingExecutor(CommandExecutor):
        async def execute(self, cmd):
            executed.append((self.instance, cmd.id))
            return await super().execute(cmd)

    sids = await shell_sessions(http, office, 4)
    files = [tmp_path / f"s{k}.log" for k in range(4)]
    ids: list[uuid.UUID] = []
    # small claims, and rows of the sessions interleaved: the two race for every claim
    async with running_intake(settings, temporal_client, executor_cls=CountingExecutor,
                              batch=3) as a, \
            running_intake(settings, temporal_client, executor_cls=CountingExecutor,
                           batch=3) as b:
        for burst in range(6):
            rows = [row for i in range(burst * 10, burst * 10 + 10)
                    for k, sid in enumerate(sids) for row in echo_rows(office, sid, files[k], [i])]
            ids += await insert_rows(pool, rows)
            await asyncio.sleep(0.3)  # bursts land while both are busy
        await wait_for(lambda: _at_least(pool, ids, len(ids)), timeout=120, interval=0.1,
                       what="a result for every row")
        instances = {a.executor.instance, b.executor.instance}
    executed = [(instance, cmd_id) for instance, cmd_id in executed if cmd_id in set(ids)]

    runs = Counter(cmd_id for _, cmd_id in executed)
    assert set(runs) == set(ids) and set(runs.values()) == {1}, \
        "each command was executed by exactly one intake, once"
    by = Counter(instance for instance, _ in executed)
    print(f"\nrows executed per intake: {sorted(by.values())}")
    assert set(by) == instances and min(by.values()) > 0, f"both intakes worked: {by}"
    res = await results_of(pool, ids)
    assert len(res) == len(ids) and {r["status"] for r in res.values()} == {"ok"}
    assert all(r["attempts"] == 1 for r in res.values()), "nothing was claimed twice"
    for k, path in enumerate(files):
        assert lines_in(path) == [f"L{i:04d}" for i in range(60)], \
            f"session {k}: once each, in order"


async def test_a_table_prompt_s_job_is_there_with_its_result(settings, pool, temporal_client,
                                                            workers, office, http):
    """A prompt from the table: the job row is written in the transaction that writes the
    result, so whoever sees the result can read the job."""
    sid = (await shell_sessions(http, office, 1))[0]
    [cmd_id] = await insert_rows(pool, [{"office_id": office, "session_id": sid,
                                         "type": "send_prompt", "payload": {"prompt": "sleep 30"}}])
    async with running_intake(settings, temporal_client):
        await wait_for(lambda: _at_least(pool, [cmd_id], 1), timeout=60, what="the result")
    async with pool.connection() as conn:
        row = await (await conn.execute(
            """select r.status, j.status, j.prompt, j.command_id from agent_command_results r
               left join jobs j on j.id = r.result->>'job_id' where r.command_id = %s""",
            (cmd_id,))).fetchone()
    assert row == ("ok", "running", "sleep 30", cmd_id), row
    session = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
    assert session["status"] == "busy"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_only_rows_left_for_the_intake_wake_it(settings, pool, http, office):
    """The API claims its commands as it records them, so they do not NOTIFY the intake
    (which would run a claim query for nothing, on every request); rows others insert do."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(settings.effective_database_url(),
                                                     autocommit=True) as listener:
        await listener.execute("listen agent_commands")
        r = await http.post(f"/api/offices/{office}/sessions", json={"role": "BE"})
        assert r.status_code == 201, r.text  # an API command, recorded before this row
        [row_id] = await insert_rows(pool, [{"office_id": office, "type": "no_such_type"}])
        try:
            first = await asyncio.wait_for(anext(listener.notifies()), 30)
        finally:
            async with pool.connection() as conn:
                await conn.execute("delete from agent_commands where id = %s", (row_id,))
    assert first.payload == str(row_id), "the API's own command woke the intake"
    await http.delete(f"/api/offices/{office}/sessions/{r.json()['session_id']}")


async def test_an_answer_from_the_table_answers_the_pending_input(settings, pool, temporal_client,
                                                                  workers, office, http):
    """`answer_input` is a command like the others: a row a dashboard inserts answers what the
    session waits for, and a second answer to the same input is refused (409)."""
    sid = (await shell_sessions(http, office, 1))[0]
    r = await http.post(f"/api/offices/{office}/sessions/{sid}/prompt", json={
        "prompt": "read -p 'Deploy to staging? [y/N] ' a; echo answer-$a; echo [SEMO:DONE]"})
    job_id = r.json()["job_id"]

    async def pending():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s["pending_input"]
    asked = await wait_for(pending, what="the pending input")
    rows = [{"office_id": office, "session_id": sid, "type": "answer_input",
             "payload": {"input_id": asked["input_id"], "text": "y"}}] * 2
    first, second = await insert_rows(pool, rows[:1]) + await insert_rows(pool, rows[1:])
    async with running_intake(settings, temporal_client):
        await wait_for(lambda: _at_least(pool, [first, second], 2), timeout=60, what="results")
    async with pool.connection() as conn:
        got = dict(await (await conn.execute(
            """select command_id, status from agent_command_results
               where command_id = any(%s)""", ([first, second],))).fetchall())
    assert sorted(got.values()) == ["error", "ok"], got
    job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
    assert job["status"] in ("running", "done")
    await wait_for(lambda: _output_has(http, office, sid, "answer-y"), what="the answer typed")
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def _output_has(http, office, sid, text):
    out = (await http.get(f"/api/offices/{office}/sessions/{sid}/output?format=text")).json()
    return text in out["data"]
