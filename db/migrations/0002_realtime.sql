-- The command intake's claims, and Supabase Realtime where a Supabase project is used.
--
-- 1. Claims (every database). A process that claims `agent_commands` rows (the API for the
--    rows it records, the intake for everyone else's) holds a session-level advisory lock for
--    as long as it lives and writes its key into `claim_lock`. When the process dies Postgres
--    ends its session and drops the lock, so a row whose `claim_lock` is no longer in pg_locks
--    can be claimed again at once; a row whose claimant still holds its lock is never taken
--    from it. `started_at` says a claimant began carrying the row out (it may have had an
--    effect): only a row never started can be answered `expired`. `seq` is the order rows
--    are carried out in.
--
-- 2. Supabase (only where its objects exist; plain Postgres skips all of it):
--    - the command tables join the `supabase_realtime` publication, so the intake (and
--      dashboards) get their INSERTs through Realtime;
--    - a session's status change is broadcast from the database, in the transaction that
--      makes it, with `realtime.send` on the private topic `office:{office_id}:sessions`
--      (event `status`), and users may receive it for the offices they open;
--    - row-level security on the command tables: a user reads the commands and results of
--      the offices they open and inserts `pending` commands there, as themselves.
--    "Offices they open" matches the API (SPEC §4): `app_metadata.office_ids` of their JWT
--    (`["*"]` = all), or a row in `office_members`.

alter table agent_commands add column if not exists claim_lock bigint;
alter table agent_commands add column if not exists started_at timestamptz;
-- insertion order, also among the rows of one multi-row insert (they share `created_at`):
-- a session's commands are carried out in this order
alter table agent_commands add column if not exists seq bigserial;
create index if not exists agent_commands_open_seq
    on agent_commands(seq) where status in ('pending', 'running');

do $migration$
declare
    has_auth boolean := to_regprocedure('auth.jwt()') is not null
        and exists (select 1 from pg_roles where rolname = 'authenticated');
begin
    -- Postgres Changes: the command tables in the Realtime publication
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime' and not puballtables) then
        if not exists (select 1 from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
                       where p.pubname = 'supabase_realtime' and r.prrelid = 'agent_commands'::regclass) then
            alter publication supabase_realtime add table agent_commands;
        end if;
        if not exists (select 1 from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
                       where p.pubname = 'supabase_realtime' and r.prrelid = 'agent_command_results'::regclass) then
            alter publication supabase_realtime add table agent_command_results;
        end if;
    end if;

    -- who opens which office, as the API decides it
    if has_auth then
        execute $fn$
            create or replace function semo_opens_office(office text) returns boolean
            language sql stable security definer set search_path = pg_catalog, public as $body$
                select coalesce((auth.jwt() -> 'app_metadata' -> 'office_ids') ?| array['*', office], false)
                    or exists (select 1 from public.office_members m
                               where m.office_id = office and m.user_id = auth.jwt() ->> 'sub')
            $body$
        $fn$;
        revoke all on function semo_opens_office(text) from public;
        grant execute on function semo_opens_office(text) to authenticated;

        alter table agent_commands enable row level security;
        alter table agent_command_results enable row level security;
        alter table agent_commands alter column created_by set default (auth.jwt() ->> 'sub');
        drop policy if exists semo_commands_read on agent_commands;
        create policy semo_commands_read on agent_commands for select to authenticated
            using (semo_opens_office(office_id));
        drop policy if exists semo_commands_insert on agent_commands;
        create policy semo_commands_insert on agent_commands for insert to authenticated
            with check (semo_opens_office(office_id) and status = 'pending'
                        and created_by = auth.jwt() ->> 'sub' and claimed_by is null
                        and claim_lock is null and started_at is null and attempts = 0);
        drop policy if exists semo_results_read on agent_command_results;
        create policy semo_results_read on agent_command_results for select to authenticated
            using (exists (select 1 from agent_commands c
                           where c.id = command_id and semo_opens_office(c.office_id)));
    end if;

    -- session status broadcasts, sent by the database itself
    if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is not null then
        execute $fn$
            create or replace function semo_broadcast_session_status() returns trigger
            language plpgsql security definer set search_path = pg_catalog, public as $body$
            begin
                if tg_op = 'INSERT' or new.status is distinct from old.status then
                    begin
                        perform realtime.send(
                            jsonb_build_object(
                                'office_id', new.office_id, 'session_id', new.id,
                                'status', new.status,
                                'previous_status', case when tg_op = 'UPDATE' then old.status end,
                                'current_job_id', new.current_job_id, 'circuit', new.circuit,
                                'restarts', new.restarts, 'last_error', new.last_error,
                                'version', new.version, 'at', now()),
                            'status', 'office:' || new.office_id || ':sessions', true);
                    exception when others then
                        -- a broadcast never fails the write of the session's row
                        raise warning 'semo: session status broadcast failed: %', sqlerrm;
                    end;
                end if;
                return null;
            end
            $body$
        $fn$;
        drop trigger if exists agent_sessions_broadcast on agent_sessions;
        create trigger agent_sessions_broadcast after insert or update of status on agent_sessions
            for each row execute function semo_broadcast_session_status();

        if has_auth and to_regclass('realtime.messages') is not null
                and to_regprocedure('realtime.topic()') is not null then
            drop policy if exists semo_office_sessions_receive on realtime.messages;
            create policy semo_office_sessions_receive on realtime.messages
                for select to authenticated
                using (realtime.messages.extension = 'broadcast'
                       and realtime.topic() like 'office:%:sessions'
                       and semo_opens_office(split_part(realtime.topic(), ':', 2)));
        end if;
    end if;
end
$migration$;
