"""Row-level security (db/migrations/0002, 0003): a Supabase user sees and inserts only the
rows of the offices they open; our own processes, connecting as the tables' owner, see all.

Supabase's own objects (the `auth` schema, the `anon`/`authenticated`/`service_role` roles,
its default grants) do not exist in plain Postgres. This test makes a STAND-IN for them in a
scratch database on the test Postgres, `auth.jwt()`/`auth.uid()` reading `request.jwt.claims`
the way Supabase's do (PostgREST sets that per request), then applies our migrations there and
queries as role `authenticated` with claims set. It is not Supabase: it checks our policies
against the same interface.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from db.migrate import migrate

OFFICE_TABLES = ["offices", "office_members", "agent_sessions", "agent_commands",
                 "agent_command_results", "jobs", "session_events", "session_output"]

SUPABASE_STANDIN = """
-- A stand-in for Supabase's objects (not Supabase itself), for tests only.
do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
end $$;
create schema auth;
create function auth.jwt() returns jsonb language sql stable as $$
    select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                    nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
create function auth.uid() returns uuid language sql stable as $$
    select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on all functions in schema auth to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;
-- what a Supabase project grants on everything created in `public`
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
"""

U1 = "11111111-1111-1111-1111-111111111111"  # a member of office A (office_members)
U2 = "22222222-2222-2222-2222-222222222222"  # office B in its JWT's app_metadata
U3 = "33333333-3333-3333-3333-333333333333"  # every office ("*")


def jwt_claims(sub: str, office_ids=None) -> dict:
    claims = {"sub": sub, "role": "authenticated", "aud": "authenticated"}
    if office_ids is not None:
        claims["app_metadata"] = {"office_ids": office_ids}
    return claims


@pytest.fixture(scope="module")
async def scratch(settings):
    """Make scratch databases on the test Postgres; drop them afterwards."""
    base = settings.effective_database_url()
    made: list[str] = []

    async def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
            await conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        made.append(name)
        return make_conninfo(base, dbname=name)

    yield make
    async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
        for name in made:
            await conn.execute(sql.SQL("drop database if exists {} with (force)")
                               .format(sql.Identifier(name)))


async def _policies_and_rls(url: str) -> tuple[int, dict[str, tuple[bool, bool]]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        n = (await (await conn.execute("select count(*) from pg_policies")).fetchone())[0]
        rows = await (await conn.execute(
            "select relname, relrowsecurity, relforcerowsecurity from pg_class"
            " where relname = any(%s) and relkind = 'r'", (OFFICE_TABLES,))).fetchall()
    return n, {r[0]: (r[1], r[2]) for r in rows}


async def test_migrations_apply_on_plain_postgres(scratch):
    url = await scratch("semo_rls_plain")
    applied = await asyncio.to_thread(migrate, url)
    assert "0003_rls" in applied
    n, rls = await _policies_and_rls(url)
    assert n == 0, "no Supabase objects: no policies"
    assert set(rls) == set(OFFICE_TABLES)
    assert await asyncio.to_thread(migrate, url) == [], "running it again changes nothing"


async def _seed(conn) -> None:
    """As the owner: offices A, B, C, each with a member, a machine, a session, a command and
    its result, a job, an event and some output."""
    members = {"A": U1, "B": "b-owner", "C": "c-owner"}
    for office in "ABC":
        await conn.execute("insert into client_machines (id, hostname, task_queue)"
                           " values (%s, 'h', 'q')", (f"m-{office}",))
        await conn.execute("insert into offices (id, name, machine_id) values (%s, %s, %s)",
                           (office, f"office {office}", f"m-{office}"))
        await conn.execute("insert into office_members (office_id, user_id) values (%s, %s)",
                           (office, members[office]))
        sid = f"s-{office}"
        await conn.execute("insert into agent_sessions (id, office_id, role, agent, machine_id,"
                           " workflow_id) values (%s, %s, 'BE', 'shell', %s, 'w')",
                           (sid, office, f"m-{office}"))
        cid = (await (await conn.execute(
            "insert into agent_commands (office_id, session_id, type, payload, created_by)"
            " values (%s, %s, 'send_prompt', '{}', %s) returning id",
            (office, sid, members[office]))).fetchone())[0]
        await conn.execute("insert into agent_command_results (command_id, status, result)"
                           " values (%s, 'ok', '{}')", (cid,))
        await conn.execute("insert into jobs (id, office_id, session_id, prompt)"
                           " values (%s, %s, %s, 'p')", (f"j-{office}", office, sid))
        await conn.execute("insert into session_events (office_id, session_id, job_id, kind)"
                           " values (%s, %s, %s, 'completion')", (office, sid, f"j-{office}"))
        await conn.execute("insert into session_output (session_id, start_offset, end_offset,"
                           " data) values (%s, 0, 5, 'hello')", (sid,))


#: for each table, an expression naming a row's office from its own columns (the seed's ids
#: and results encode it), so that reading it does not depend on other tables' policies
OFFICE_OF = {
    "offices": "id",
    "office_members": "office_id",
    "agent_sessions": "office_id",
    "agent_commands": "office_id",
    "agent_command_results": "(result ->> 'office')",
    "jobs": "office_id",
    "session_events": "office_id",
    "session_output": "substr(session_id, 3)",
    "client_machines": "substr(id, 3)",
}


async def _offices_seen(conn) -> dict[str, set[str]]:
    seen = {}
    for table, office in OFFICE_OF.items():
        rows = await (await conn.execute(sql.SQL("select {} from {}").format(
            sql.SQL(office), sql.Identifier(table)))).fetchall()
        seen[table] = {r[0] for r in rows if r[0] is not None}
    return seen


async def _visible(conn, role: str, claims: dict | None) -> dict[str, set[str]]:
    """Offices whose rows `role` sees in each table, with `claims` as its JWT."""
    async with conn.transaction():
        await conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        if claims is not None:
            await conn.execute("select set_config('request.jwt.claims', %s, true)",
                               (json.dumps(claims),))
        return await _offices_seen(conn)


async def _try(conn, claims: dict, statement: str, params: tuple = ()) -> str:
    """Run one statement as `authenticated`: 'ok', 'denied' (RLS/privilege) or rows affected."""
    try:
        async with conn.transaction():
            await conn.execute("set local role authenticated")
            await conn.execute("select set_config('request.jwt.claims', %s, true)",
                               (json.dumps(claims),))
            cur = await conn.execute(statement, params)
            return "ok" if cur.rowcount in (1, -1) else f"{cur.rowcount} rows"
    except psycopg.errors.InsufficientPrivilege:
        return "denied"


async def test_a_user_sees_and_inserts_only_its_offices_rows(scratch):
    url = await scratch("semo_rls_supabase")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(SUPABASE_STANDIN)
    await asyncio.to_thread(migrate, url)
    n, rls = await _policies_and_rls(url)
    assert n > 0
    assert all(enabled and not forced for enabled, forced in rls.values()), rls

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await _seed(conn)
        # results carry their office so that what a user sees can be told apart
        await conn.execute("update agent_command_results r set result = jsonb_build_object("
                           "'office', c.office_id) from agent_commands c where c.id = r.command_id")

        every = set("ABC")
        owner = await _offices_seen(conn)
        assert all(v == every for v in owner.values()), ("the owner sees everything", owner)

        cases = {
            "member of A": (jwt_claims(U1), {"A"}),
            "member of A, empty claim": (jwt_claims(U1, []), {"A"}),
            "B in app_metadata": (jwt_claims(U2, ["B"]), {"B"}),
            "all offices": (jwt_claims(U3, ["*"]), every),
            "member of A and B claimed": (jwt_claims(U1, ["B"]), {"A", "B"}),
            "office_ids a bare string": (jwt_claims(U2, "*"), set()),
            "office_ids an object": (jwt_claims(U2, {"B": True}), set()),
            "no claims at all": (None, set()),
            "a prefix of an office id": (jwt_claims(U2, ["", "A-"]), set()),
        }
        for what, (claims, expected) in cases.items():
            seen = await _visible(conn, "authenticated", claims)
            for table, offices in seen.items():
                assert offices == expected, (what, table, offices)
        seen = await _visible(conn, "anon", {"role": "anon"})
        assert all(not v for v in seen.values()), ("anon sees nothing", seen)
        seen = await _visible(conn, "service_role", {"role": "service_role"})
        assert all(v == every for v in seen.values()), ("service_role bypasses RLS", seen)

        # inserts: pending commands of the user's own offices, as themselves, and nothing else
        member = jwt_claims(U1)
        insert_cmd = ("insert into agent_commands (office_id, session_id, type, payload, created_by)"
                      " values (%s, %s, 'send_prompt', '{\"prompt\": \"hi\"}', %s)")
        assert await _try(conn, member, insert_cmd, ("A", "s-A", U1)) == "ok"
        assert await _try(conn, member, insert_cmd, ("C", "s-C", U1)) == "denied"
        assert await _try(conn, member, insert_cmd, ("A", "s-A", "c-owner")) == "denied", \
            "a command is inserted as oneself"
        assert await _try(conn, member, "insert into agent_commands (office_id, type, status,"
                          " created_by) values ('A', 'cancel', 'done', %s)", (U1,)) == "denied", \
            "only pending commands"
        other_tables = {
            "offices": ("insert into offices (id, name, machine_id) values ('D', 'd', 'm-A')", ()),
            "office_members": ("insert into office_members (office_id, user_id) values ('C', %s)", (U1,)),
            "office_members of own office": (
                "insert into office_members (office_id, user_id) values ('A', 'friend')", ()),
            "agent_sessions": ("insert into agent_sessions (id, office_id, role, agent, machine_id,"
                               " workflow_id) values ('s-x', 'A', 'BE', 'shell', 'm-A', 'w')", ()),
            "agent_command_results": (
                "insert into agent_command_results (command_id, status) select id, 'ok'"
                " from agent_commands where office_id = 'A' and status = 'pending'", ()),
            "jobs": ("insert into jobs (id, office_id, session_id, prompt) values ('j-x', 'A', 's-A', 'p')", ()),
            "session_events": ("insert into session_events (office_id, session_id, kind)"
                               " values ('A', 's-A', 'completion')", ()),
            "session_output": ("insert into session_output (session_id, start_offset, end_offset,"
                               " data) values ('s-A', 5, 6, 'x')", ()),
            "client_machines": ("insert into client_machines (id, hostname, task_queue)"
                                " values ('m-x', 'h', 'q')", ()),
        }
        for what, (statement, params) in other_tables.items():
            assert await _try(conn, member, statement, params) == "denied", what
        # updates and deletes change nothing, even in the user's own office
        for statement in ("update offices set name = 'mine' where id = 'A'",
                          "update agent_commands set status = 'done' where office_id = 'A'",
                          "delete from agent_sessions where office_id = 'A'",
                          "delete from session_output",
                          "delete from schema_migrations"):
            assert await _try(conn, member, statement) == "0 rows", statement
        after = await _offices_seen(conn)
        assert after == owner
        pending = (await (await conn.execute(
            "select count(*) from agent_commands where payload ->> 'prompt' = 'hi'")).fetchone())[0]
        assert pending == 1, "exactly the one allowed insert landed"
        migrations = (await (await conn.execute("select count(*) from schema_migrations"))
                      .fetchone())[0]
        assert migrations >= 3
