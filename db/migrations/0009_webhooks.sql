-- Webhooks: an office's subscriptions, and an outbox of the events they were sent.
--
-- An event is recorded by a trigger on the row whose change caused it (a session's status or
-- circuit, a job's end), in the transaction that changes it: every writer of those rows (the
-- session workflow's record activity, the command executor writing a prompt's rows) records
-- it alike, and a change that rolls back records nothing. An event is recorded only when an
-- enabled webhook of the office subscribes to its type, with one delivery row per such
-- webhook; NOTIFY `webhook_events` wakes the server worker's dispatcher, which starts one
-- Temporal workflow per event (worker/webhook_dispatch.py, workflows/webhooks.py).

create table if not exists webhooks (
    id               text primary key,
    office_id        text not null references offices(id) on delete cascade,
    url              text not null,
    events           text[] not null,
    -- 'standard': signed JSON (Standard Webhooks); 'slack': {"text": ...}, unsigned
    format           text not null default 'standard',
    -- `whsec_` + base64 of the key; shown once, when the webhook is made
    secret           text not null,
    description      text,
    enabled          boolean not null default true,
    disabled_at      timestamptz,
    disabled_reason  text,
    created_by       text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint webhooks_format check (format in ('standard', 'slack'))
);
create index if not exists webhooks_office on webhooks(office_id, created_at);

create table if not exists webhook_events (
    -- `msg_…`: the `webhook-id` header, the same on every attempt
    id             text primary key,
    office_id      text not null,
    type           text not null,
    session_id     text not null,
    job_id         text,
    data           jsonb not null default '{}'::jsonb,
    -- when the state changed (the transaction's time)
    at             timestamptz not null default now(),
    -- set once its delivery workflow has been started
    dispatched_at  timestamptz
);
create index if not exists webhook_events_undispatched on webhook_events(at)
    where dispatched_at is null;

create table if not exists webhook_deliveries (
    webhook_id        text not null references webhooks(id) on delete cascade,
    event_id          text not null references webhook_events(id) on delete cascade,
    -- pending, delivered, failed (gave up), skipped (the webhook was disabled meanwhile)
    status            text not null default 'pending',
    attempts          integer not null default 0,
    last_status_code  integer,
    last_error        text,
    next_attempt_at   timestamptz,
    created_at        timestamptz not null default now(),
    finished_at       timestamptz,
    primary key (webhook_id, event_id),
    constraint webhook_deliveries_status check (status in ('pending', 'delivered', 'failed', 'skipped'))
);
create index if not exists webhook_deliveries_recent on webhook_deliveries(webhook_id, created_at desc);

create table if not exists webhook_attempts (
    id           bigserial primary key,
    webhook_id   text not null,
    event_id     text not null,
    attempt      integer not null,
    status_code  integer,
    error        text,
    duration_ms  double precision,
    at           timestamptz not null default clock_timestamp(),
    foreign key (webhook_id, event_id) references webhook_deliveries on delete cascade
);
create index if not exists webhook_attempts_delivery on webhook_attempts(webhook_id, event_id, id);

-- The secrets are for our own processes only: row-level security on, and no policy, so that a
-- Supabase user (who is granted every public table by default) reads none of these rows.
alter table webhooks enable row level security;
alter table webhook_events enable row level security;
alter table webhook_deliveries enable row level security;
alter table webhook_attempts enable row level security;

-- Record an event for the office's enabled webhooks that subscribe to its type (none: nothing).
create or replace function semo_webhook_event(p_office text, p_type text, p_session text,
                                              p_job text, p_data jsonb) returns void
language plpgsql as $$
declare
    event_id text;
    webhook_ids text;
begin
    if not exists (select 1 from webhooks w
                   where w.office_id = p_office and w.enabled and p_type = any(w.events)) then
        return;
    end if;
    event_id := 'msg_' || replace(gen_random_uuid()::text, '-', '');
    insert into webhook_events (id, office_id, type, session_id, job_id, data)
    values (event_id, p_office, p_type, p_session, p_job, p_data);
    with added as (
        insert into webhook_deliveries (webhook_id, event_id)
        select w.id, event_id from webhooks w
        where w.office_id = p_office and w.enabled and p_type = any(w.events)
        returning webhook_id)
    select string_agg(webhook_id, ',' order by webhook_id) into webhook_ids from added;
    -- what the dispatcher needs to start its delivery, without a query
    perform pg_notify('webhook_events', event_id || ' ' || coalesce(webhook_ids, ''));
end $$;

-- A session's transitions. Deferred to commit, so that the `waiting_input` event the same
-- transaction appends (its question) is there to be read; `pending_input` is read through
-- to_jsonb, so this works whether or not the column exists.
create or replace function semo_webhook_session_change() returns trigger
language plpgsql as $$
declare
    was_status text := case when tg_op = 'UPDATE' then old.status end;
    was_circuit text := case when tg_op = 'UPDATE' then old.circuit end;
    base jsonb;
    waiting jsonb;
begin
    if not exists (select 1 from webhooks w where w.office_id = new.office_id and w.enabled) then
        return null;
    end if;
    base := jsonb_build_object(
        'status', new.status, 'previous_status', was_status, 'role', new.role,
        'agent', new.agent, 'machine_id', new.machine_id, 'working_dir', new.working_dir,
        'current_job_id', new.current_job_id, 'restarts', new.restarts,
        'circuit', new.circuit, 'last_error', new.last_error);
    if new.status is distinct from was_status then
        if new.status = 'waiting_input' then
            select e.data into waiting from session_events e
            where e.session_id = new.id and e.kind = 'waiting_input' and e.at >= now()
            order by e.id desc limit 1;
            perform semo_webhook_event(new.office_id, 'session.waiting_input', new.id,
                new.current_job_id, base || jsonb_build_object(
                    'pending_input', to_jsonb(new) -> 'pending_input',
                    'question', waiting ->> 'question',
                    'waiting', coalesce(waiting, '{}'::jsonb)));
        elsif new.status = 'ready' then
            perform semo_webhook_event(new.office_id, 'session.ready', new.id, null, base);
        elsif new.status = 'failed' then
            perform semo_webhook_event(new.office_id, 'session.failed', new.id, null, base);
        end if;
    end if;
    if new.circuit = 'open' and was_circuit is distinct from 'open' then
        perform semo_webhook_event(new.office_id, 'session.circuit_open', new.id, null, base);
    end if;
    return null;
end $$;

drop trigger if exists agent_sessions_webhooks_insert on agent_sessions;
create constraint trigger agent_sessions_webhooks_insert after insert on agent_sessions
    deferrable initially deferred for each row
    when (new.status in ('waiting_input', 'ready', 'failed') or new.circuit = 'open')
    execute function semo_webhook_session_change();

drop trigger if exists agent_sessions_webhooks_update on agent_sessions;
create constraint trigger agent_sessions_webhooks_update after update on agent_sessions
    deferrable initially deferred for each row
    when (old.status is distinct from new.status or old.circuit is distinct from new.circuit)
    execute function semo_webhook_session_change();

-- A job's end: `job.done`, `job.failed`, `job.cancelled`, `job.timed_out`.
create or replace function semo_webhook_job_end() returns trigger
language plpgsql as $$
begin
    perform semo_webhook_event(new.office_id, 'job.' || new.status, new.session_id, new.id,
        jsonb_build_object('status', new.status, 'prompt', left(new.prompt, 500),
                           'completion', new.completion, 'error', new.error,
                           'started_at', new.started_at, 'finished_at', new.finished_at));
    return null;
end $$;

drop trigger if exists jobs_webhooks_insert on jobs;
create trigger jobs_webhooks_insert after insert on jobs for each row
    when (new.status in ('done', 'failed', 'cancelled', 'timed_out'))
    execute function semo_webhook_job_end();

drop trigger if exists jobs_webhooks_update on jobs;
create trigger jobs_webhooks_update after update on jobs for each row
    when (new.status in ('done', 'failed', 'cancelled', 'timed_out')
          and old.status is distinct from new.status)
    execute function semo_webhook_job_end();
