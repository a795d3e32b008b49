-- Row-level security on every office-scoped table, where a Supabase project is used.
--
-- A Supabase user (role `authenticated`, claims in `auth.jwt()`) sees the rows of the offices
-- they open, and nothing else: `app_metadata.office_ids` of their JWT (`["*"]` = all), or a
-- row in `office_members` for their `sub`, the same rule as the API (SPEC §4). The one way in
-- for their writes is `agent_commands` (0002: `pending` rows of their offices, as
-- themselves); offices, sessions, jobs, events and output are written by our own processes
-- only. Supabase grants `anon` and `authenticated` everything on `public` tables by default,
-- so RLS is what stands between them and the rows: `anon` gets no policy (sees nothing), and
-- no table has an update or delete policy (those change nothing).
--
-- Our server processes connect as the tables' owner, to whom RLS does not apply (no FORCE
-- ROW LEVEL SECURITY here), and Supabase's `service_role` has BYPASSRLS.
--
-- Plain Postgres has no `auth` schema nor those roles: the block below is skipped there, and
-- the migration applies cleanly.

do $migration$
declare
    has_auth boolean := to_regprocedure('auth.jwt()') is not null
        and exists (select 1 from pg_roles where rolname = 'authenticated');
    t text;
begin
    if not has_auth then
        return;
    end if;

    -- 0002's rule, made exactly the API's: office_ids must be a list (a bare string "*" opens
    -- nothing, as the API answers 401 to it)
    execute $fn$
        create or replace function semo_opens_office(office text) returns boolean
        language sql stable security definer set search_path = pg_catalog, public as $body$
            select coalesce(
                       jsonb_typeof(auth.jwt() -> 'app_metadata' -> 'office_ids') = 'array'
                       and (auth.jwt() -> 'app_metadata' -> 'office_ids') ?| array['*', office],
                       false)
                or exists (select 1 from public.office_members m
                           where m.office_id = office and m.user_id = auth.jwt() ->> 'sub')
        $body$
    $fn$;
    revoke all on function semo_opens_office(text) from public;
    grant execute on function semo_opens_office(text) to authenticated;

    foreach t in array array['offices', 'office_members', 'agent_sessions', 'agent_commands',
                             'agent_command_results', 'jobs', 'session_events', 'session_output',
                             'client_machines', 'schema_migrations'] loop
        execute format('alter table %I enable row level security', t);
    end loop;

    drop policy if exists semo_offices_read on offices;
    create policy semo_offices_read on offices for select to authenticated
        using (semo_opens_office(id));

    -- the members of an office the user opens (the team), not other offices' members
    drop policy if exists semo_office_members_read on office_members;
    create policy semo_office_members_read on office_members for select to authenticated
        using (semo_opens_office(office_id));

    drop policy if exists semo_sessions_read on agent_sessions;
    create policy semo_sessions_read on agent_sessions for select to authenticated
        using (semo_opens_office(office_id));

    drop policy if exists semo_jobs_read on jobs;
    create policy semo_jobs_read on jobs for select to authenticated
        using (semo_opens_office(office_id));

    drop policy if exists semo_session_events_read on session_events;
    create policy semo_session_events_read on session_events for select to authenticated
        using (semo_opens_office(office_id));

    -- output rows carry only their session: its office decides
    drop policy if exists semo_session_output_read on session_output;
    create policy semo_session_output_read on session_output for select to authenticated
        using (exists (select 1 from agent_sessions s
                       where s.id = session_output.session_id and semo_opens_office(s.office_id)));

    -- a machine is visible to the users of an office that runs on it
    drop policy if exists semo_client_machines_read on client_machines;
    create policy semo_client_machines_read on client_machines for select to authenticated
        using (exists (select 1 from offices o
                       where o.machine_id = client_machines.id and semo_opens_office(o.id)));

    -- schema_migrations: no policy (only the owner reads or writes it)
end
$migration$;
