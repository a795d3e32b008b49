"""Supabase Realtime, as far as it can be tested without a Supabase server:

- the intake's Realtime subscription (worker/realtime.py, driving the real `realtime` client)
  against `RealtimeStandIn`, a local websocket server that answers with recorded Realtime
  protocol frames (tests/realtime_frames/; a stand-in, not Supabase);
- the intake woken through it, against real Postgres (LISTEN off, no poll);
- the fallback to LISTEN/NOTIFY when no Supabase project is configured;
- the migration on plain Postgres, and on a database given stand-ins of Supabase's objects
  (`supabase_realtime` publication, `auth.jwt()`, `realtime.send`/`realtime.messages`/
  `realtime.topic()`, the `authenticated` role)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from pydantic import SecretStr
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from db.migrate import migrate
from tests.support.intake import insert_rows, results_of, running_intake
from tests.support.paths import TESTS
from tests.support.waiting import wait_for
from worker.realtime import TOPIC, RealtimeFeed, feed_for

FRAMES = TESTS / "realtime_frames"
KEY = "service-role-key-stand-in"
SUBSCRIBED = ["join_reply_ok", "presence_state", "system_subscribed"]


class RealtimeStandIn:
    """A stand-in for a Supabase Realtime server (not Supabase): it speaks the Phoenix channel
    protocol (`vsn=1.0.0`) to the client and answers with recorded frames. Each join is
    answered with the next script in `scripts` (a list of frame names; [] = no answer), or
    `SUBSCRIBED` once they run out."""

    def __init__(self) -> None:
        self.scripts: list[list[str]] = []
        self.binding_id = 31339675
        self.paths: list[str] = []
        self.joins: list[dict] = []
        self.sockets: set = set()
        #: cleared: joins wait (the socket is up, the channel not yet subscribed)
        self.joins_open = asyncio.Event()
        self.joins_open.set()
        self._frames = {p.stem: json.loads(p.read_text()) for p in FRAMES.glob("*.json")}
        self._topic = ""

    @contextlib.asynccontextmanager
    async def running(self):
        async with serve(self._handle, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}"

    def frame(self, name: str, ref: str | None = None) -> str:
        values = {"$topic": self._topic, "$subtopic": self._topic.removeprefix("realtime:"),
                  "$ref": ref, "$binding_id": self.binding_id}

        def fill(node):
            if isinstance(node, dict):
                return {k: fill(v) for k, v in node.items()}
            if isinstance(node, list):
                return [fill(v) for v in node]
            return values.get(node, node) if isinstance(node, str) else node

        return json.dumps(fill(copy.deepcopy(self._frames[name])))

    async def push(self, name: str) -> None:
        """Send a frame to every connected client (as the server would on a change)."""
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self.frame(name))

    def drop(self) -> None:
        """Cut every connection without a close frame (a network failure)."""
        for ws in list(self.sockets):
            ws.transport.abort()

    async def _handle(self, ws) -> None:
        self.paths.append(ws.request.path)
        self.sockets.add(ws)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["event"] == "phx_join":
                    self._topic = msg["topic"]
                    self.joins.append(msg)
                    await self.joins_open.wait()
                    for name in (self.scripts.pop(0) if self.scripts else SUBSCRIBED):
                        await ws.send(self.frame(name, msg["ref"]))
                elif msg["event"] == "heartbeat":
                    await ws.send(self.frame("heartbeat_reply", msg["ref"]))
                elif msg["event"] == "phx_leave":
                    await ws.send(self.frame("leave_reply", msg["ref"]))
        except ConnectionClosed:
            pass
        finally:
            self.sockets.discard(ws)


@contextlib.asynccontextmanager
async def running_feed(url: str, **kw):
    wakes: list[str] = []
    feed = RealtimeFeed(url, KEY, wakes.append, min_backoff_s=0.05, max_backoff_s=0.2, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        yield feed, wakes
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _count(wakes: list[str], reason: str) -> int:
    return sum(1 for w in wakes if w == reason)


# --- the subscription, against recorded frames ----------------------------------------------------

async def test_feed_joins_and_wakes_on_subscribed_listening_and_inserts():
    standin = RealtimeStandIn()
    async with standin.running() as url, running_feed(url) as (feed, wakes):
        await wait_for(lambda: _has(wakes, "realtime listening"), timeout=10, what="subscribed")
        assert wakes[:2] == ["realtime subscribed", "realtime listening"]

        # what the client asked for: the project's Realtime endpoint, INSERTs on agent_commands
        url_parts = urlsplit(standin.paths[0])
        assert url_parts.path == "/realtime/v1/websocket"
        assert parse_qs(url_parts.query) == {"apikey": [KEY], "vsn": ["1.0.0"]}
        join = standin.joins[0]
        assert join["topic"] == f"realtime:{TOPIC}"
        assert join["payload"]["config"]["postgres_changes"] == [
            {"event": "INSERT", "schema": "public", "table": "agent_commands"}]
        assert join["payload"]["access_token"] == KEY

        await standin.push("insert_agent_commands")
        await wait_for(lambda: _has(wakes, "realtime insert"), timeout=5, what="insert wake-up")
        assert feed.inserts == 1

        # an event for a binding this client does not hold is not for us; the system frame
        # after it, handled in order, shows it was read
        standin.binding_id += 1
        await standin.push("insert_agent_commands")
        await standin.push("system_subscribed")
        await wait_for(lambda: _at(wakes, "realtime listening", 2), timeout=5, what="marker")
        assert feed.inserts == 1 and _count(wakes, "realtime insert") == 1

async def test_feed_reconnects_and_drains_again_after_a_dropped_connection():
    standin = RealtimeStandIn()
    async with standin.running() as url, running_feed(url) as (feed, wakes):
        await wait_for(lambda: _has(wakes, "realtime listening"), timeout=10, what="subscribed")
        standin.drop()
        await wait_for(lambda: _at(wakes, "realtime subscribed", 2), timeout=10,
                       what="subscribed again after the drop")
        assert feed.connects == 2 and len(standin.joins) == 2
        # the server closing the channel is a loss too
        await standin.push("phx_close")
        await wait_for(lambda: _at(wakes, "realtime subscribed", 3), timeout=10,
                       what="subscribed again after phx_close")
        assert feed.connects == 3


async def test_feed_recovers_from_join_error_timeout_and_subscription_error():
    standin = RealtimeStandIn()
    standin.scripts = [
        ["join_reply_error"],  # refused (an expired key)
        [],  # never answered: the join times out
        ["join_reply_ok", "presence_state", "system_error"],  # Postgres subscription failed
    ]
    async with standin.running() as url, running_feed(url, timeout_s=1) as (feed, wakes):
        await wait_for(lambda: _has(wakes, "realtime listening"), timeout=20,
                       what="subscribed in the end")
    assert len(standin.joins) == 4 and feed.connects == 4
    # only the third and fourth joins got as far as SUBSCRIBED
    assert _count(wakes, "realtime subscribed") == 2 and _count(wakes, "realtime listening") == 1


async def _has(wakes, reason):
    return reason in wakes


async def _at(wakes, reason, n):
    return _count(wakes, reason) >= n


# --- the intake, woken through Realtime -----------------------------------------------------------

async def test_intake_drains_on_realtime_events_and_on_every_subscribed(settings, pool,
                                                                        temporal_client, workers,
                                                                        office):
    standin = RealtimeStandIn()
    async with standin.running() as url:
        project = settings.model_copy(update={"supabase_url": url,
                                              "supabase_key": SecretStr(KEY),
                                              "intake_poll_interval_s": 3600.0})
        # LISTEN off and no poll: Realtime is the only thing that can wake this intake
        async with running_intake(project, temporal_client, listen=False) as intake:
            assert intake.realtime is not None
            await wait_for(lambda: _has(intake.wakes, "realtime listening"), timeout=10,
                           what="intake subscribed")
            [first] = await insert_rows(pool, [_bad_row(office)])
            assert not await results_of(pool, [first])
            await standin.push("insert_agent_commands")  # as Realtime would, after the commit
            await wait_for(lambda: results_of(pool, [first]), timeout=10, what="first answered")

            # a row inserted while the subscription is down is drained on the next SUBSCRIBED
            standin.joins_open.clear()
            standin.drop()
            await wait_for(lambda: _joins_at(standin, 2), timeout=10, what="rejoin attempt")
            [second] = await insert_rows(pool, [_bad_row(office)])
            standin.joins_open.set()  # no insert event: only the re-query can find it
            await wait_for(lambda: results_of(pool, [second]), timeout=10, what="second answered")
        assert _count(intake.wakes, "realtime subscribed") == 2
        assert "listening" not in intake.wakes  # LISTEN was off


async def _joins_at(standin, n):
    return len(standin.joins) >= n


def _bad_row(office: str) -> dict:
    return {"office_id": office, "type": "no_such_type", "payload": {}}


# --- no Supabase project: LISTEN/NOTIFY -----------------------------------------------------------

async def test_without_a_supabase_project_the_intake_uses_listen_notify(settings, pool,
                                                                        temporal_client, workers,
                                                                        office):
    assert feed_for(settings, print) is None
    assert feed_for(settings.model_copy(update={"supabase_url": "https://x.supabase.co"}),
                    print) is None, "a URL without a key is not a project"
    configured = settings.model_copy(update={"supabase_url": "https://x.supabase.co",
                                             "supabase_key": SecretStr(KEY)})
    assert feed_for(configured, print).url == "https://x.supabase.co/realtime/v1"

    quiet = settings.model_copy(update={"intake_poll_interval_s": 3600.0})
    async with running_intake(quiet, temporal_client) as intake:
        assert intake.realtime is None
        await wait_for(lambda: _has(intake.wakes, "listening"), timeout=10, what="LISTEN")
        [row] = await insert_rows(pool, [_bad_row(office)])
        res = await wait_for(lambda: results_of(pool, [row]), timeout=10,
                             what="the NOTIFY to wake the intake (no poll for an hour)")
    assert res[row]["status"] == "error"
    assert not any(w.startswith("realtime") for w in intake.wakes)


# --- the migration --------------------------------------------------------------------------------

async def test_migration_on_plain_postgres_skips_supabase(pool):
    async with pool.connection() as conn:
        assert (await (await conn.execute(
            "select 1 from schema_migrations where version = '0002_realtime'")).fetchone())
        cols = {r[0] for r in await (await conn.execute(
            "select column_name from information_schema.columns"
            " where table_name = 'agent_commands'")).fetchall()}
        assert {"claim_lock", "started_at", "seq"} <= cols
        assert not (await (await conn.execute(
            "select 1 from pg_trigger where tgname = 'agent_sessions_broadcast'")).fetchone())
        assert not (await (await conn.execute(
            "select relrowsecurity from pg_class where relname = 'agent_commands'")).fetchone())[0]


# Stand-ins for what a Supabase project's database has before our migrations run.
SUPABASE_OBJECTS = """
do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin;
    end if;
end $$;
alter default privileges in schema public grant all on tables to authenticated;
alter default privileges in schema public grant all on sequences to authenticated;
create schema auth;
create function auth.jwt() returns jsonb language sql stable as
    $$ select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb $$;
create schema realtime;
create table realtime.messages (id bigserial primary key, topic text not null,
    extension text not null, event text, payload jsonb, private boolean,
    inserted_at timestamptz not null default now());
alter table realtime.messages enable row level security;
create function realtime.topic() returns text language sql stable as
    $$ select nullif(current_setting('realtime.topic', true), '') $$;
create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
    returns void language sql as
    $$ insert into realtime.messages (topic, extension, event, payload, private)
       values ($3, 'broadcast', $2, $1, $4) $$;
grant usage on schema auth, realtime to authenticated;
grant select on realtime.messages to authenticated;
create publication supabase_realtime;
"""


@pytest.fixture
async def supabase_like_db(postgres_url):
    name = f"supa_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f"create database {name}")
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(SUPABASE_OBJECTS)
            yield url
        finally:
            await admin.execute(f"drop database {name} with (force)")


async def test_migration_on_a_supabase_like_database(supabase_like_db):
    assert "0002_realtime" in await asyncio.to_thread(migrate, supabase_like_db)
    assert await asyncio.to_thread(migrate, supabase_like_db) == []  # once
    async with await psycopg.AsyncConnection.connect(supabase_like_db, autocommit=True) as conn:
        async def one(sql, *args):
            return (await (await conn.execute(sql, args)).fetchone())

        published = {r[0] for r in await (await conn.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
        )).fetchall()}
        assert published == {"agent_commands", "agent_command_results"}

        # status changes are broadcast on the office's topic, by the transaction making them
        for office in ("acme", "other"):
            await conn.execute("insert into offices (id, name, machine_id) values (%s, %s, 'm')",
                               (office, office))
        await conn.execute("insert into office_members (office_id, user_id) values ('acme', 'u1')")
        await conn.execute(
            """insert into agent_sessions (id, office_id, role, agent, machine_id, workflow_id)
               values ('be-1', 'acme', 'BE', 'shell', 'm', 'session/acme/be-1')""")
        await conn.execute("update agent_sessions set status = 'ready', version = 1")
        await conn.execute("update agent_sessions set restarts = 1, version = 2")  # same status
        sent = (await (await conn.execute(
            "select topic, event, private, payload from realtime.messages order by id")).fetchall())
        assert [(t, e, p) for t, e, p, _ in sent] == [("office:acme:sessions", "status", True)] * 2
        assert [(m["status"], m["previous_status"]) for *_, m in sent] == \
            [("starting", None), ("ready", "starting")]
        assert sent[1][3]["session_id"] == "be-1" and sent[1][3]["office_id"] == "acme"

        # a failing broadcast never fails the session's write
        await conn.execute("""create or replace function realtime.send(
                                  payload jsonb, event text, topic text,
                                  private boolean default true)
                              returns void language plpgsql as $$ begin raise 'down'; end $$""")
        await conn.execute("update agent_sessions set status = 'busy', version = 3")
        assert (await one("select status from agent_sessions"))[0] == "busy"

        # row-level security: users act on the offices they open, as themselves
        async def as_user(claims: dict, sql: str, *args):
            async with conn.transaction():
                await conn.execute("set local role authenticated")
                await conn.execute("select set_config('request.jwt.claims', %s, true)",
                                   (json.dumps(claims),))
                return await (await conn.execute(sql, args)).fetchall()

        insert = ("insert into agent_commands (office_id, type, payload)"
                  " values (%s, 'cancel', '{}') returning created_by, status")
        assert await as_user({"sub": "u1"}, insert, "acme") == [("u1", "pending")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await as_user({"sub": "u1"}, insert, "other")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await as_user({"sub": "u1"}, "insert into agent_commands (office_id, type, status)"
                          " values ('acme', 'cancel', 'running')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await as_user({"sub": "u1"}, "insert into agent_commands (office_id, type, created_by)"
                          " values ('acme', 'cancel', 'someone-else')")
        assert await as_user({"sub": "u2", "app_metadata": {"office_ids": ["*"]}}, insert,
                             "other") == [("u2", "pending")]
        assert await as_user({"sub": "u1"}, "select office_id from agent_commands") == [("acme",)]
        await conn.execute("insert into agent_command_results (command_id, status)"
                           " select id, 'ok' from agent_commands")
        assert len(await as_user({"sub": "u1"}, "select * from agent_command_results")) == 1

        # receiving the broadcasts: only on the topics of offices the user opens
        async def visible(claims: dict, topic: str) -> int:
            async with conn.transaction():
                await conn.execute("select set_config('realtime.topic', %s, true)", (topic,))
                return (await as_user(claims, "select count(*) from realtime.messages"))[0][0]

        assert await visible({"sub": "u1"}, "office:acme:sessions") == 2
        assert await visible({"sub": "u1"}, "office:other:sessions") == 0
        assert await visible({"sub": "u1"}, "office:acme:secrets") == 0
        assert await visible({"sub": "u2", "app_metadata": {"office_ids": ["other"]}},
                             "office:other:sessions") == 2

