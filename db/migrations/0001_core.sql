-- Core tables: offices, machines, sessions, commands and their results, jobs, events, output.
-- Ids of offices and sessions are readable text (they appear in Temporal workflow ids);
-- command ids are uuids (they are Temporal update ids).

create table if not exists offices (
    id              text primary key,
    name            text not null,
    machine_id      text not null,
    workspace_root  text,
    warm_roles      text[] not null default '{}',
    -- the roles sessions may have; null: any role
    roles           text[],
    max_sessions    integer not null default 6,
    idle_timeout_s  integer not null default 600,
    agent           text not null default 'claude',
    personas        jsonb not null default '{}'::jsonb,
    settings        jsonb not null default '{}'::jsonb,
    status          text not null default 'active',
    created_by      text,
    command_id      uuid,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    deleted_at      timestamptz
);

create table if not exists office_members (
    office_id   text not null references offices(id) on delete cascade,
    user_id     text not null,
    role        text not null default 'member',
    created_at  timestamptz not null default now(),
    primary key (office_id, user_id)
);
create index if not exists office_members_user on office_members(user_id);

create table if not exists client_machines (
    id               text primary key,
    hostname         text not null,
    task_queue       text not null,
    capacity         integer not null default 200,
    workspace_roots  text[] not null default '{}',
    agent_profiles   text[] not null default '{}',
    started_at       timestamptz not null default now(),
    last_seen_at     timestamptz not null default now()
);

create table if not exists agent_sessions (
    id                text primary key,
    office_id         text not null references offices(id) on delete cascade,
    role              text not null,
    agent             text not null,
    machine_id        text not null,
    working_dir       text,
    status            text not null default 'starting',
    current_job_id    text,
    restarts          integer not null default 0,
    circuit           text not null default 'closed',
    source            text not null default 'cold',
    workflow_id       text not null,
    last_error        text,
    rows              integer not null default 40,
    cols              integer not null default 120,
    -- the workflow's own counter: a write carrying an older version never wins
    version           bigint not null default 0,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    last_activity_at  timestamptz not null default now(),
    terminated_at     timestamptz,
    constraint agent_sessions_status check (status in
        ('starting','ready','busy','waiting_input','restarting','failed','terminated')),
    constraint agent_sessions_circuit check (circuit in ('closed','open','half_open'))
);
create index if not exists agent_sessions_office on agent_sessions(office_id, created_at);

create table if not exists agent_commands (
    id               uuid primary key default gen_random_uuid(),
    office_id        text not null,
    session_id       text,
    type             text not null,
    payload          jsonb not null default '{}'::jsonb,
    status           text not null default 'pending',
    source           text not null default 'table',
    idempotency_key  text,
    created_by       text,
    claimed_by       text,
    claimed_at       timestamptz,
    attempts         integer not null default 0,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint agent_commands_status check (status in ('pending','running','done','failed','expired'))
);
create unique index if not exists agent_commands_idempotency
    on agent_commands(office_id, idempotency_key) where idempotency_key is not null;
create index if not exists agent_commands_pending
    on agent_commands(created_at) where status in ('pending','running');
create index if not exists agent_commands_session on agent_commands(session_id, created_at);

create or replace function semo_notify_agent_command() returns trigger
language plpgsql as $$
begin
    perform pg_notify('agent_commands', new.id::text);
    return new;
end $$;

drop trigger if exists agent_commands_notify on agent_commands;
create trigger agent_commands_notify after insert on agent_commands
    for each row execute function semo_notify_agent_command();

create table if not exists agent_command_results (
    id          bigserial primary key,
    command_id  uuid not null unique references agent_commands(id) on delete cascade,
    status      text not null,
    result      jsonb,
    error       text,
    created_at  timestamptz not null default now(),
    constraint agent_command_results_status check (status in ('ok','error','expired'))
);

create table if not exists jobs (
    id            text primary key,
    office_id     text not null,
    session_id    text not null,
    status        text not null default 'queued',
    prompt        text not null,
    timeout_s     double precision,
    command_id    uuid,
    completion    jsonb,
    error         text,
    created_at    timestamptz not null default now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz not null default now(),
    constraint jobs_status check (status in
        ('queued','running','done','failed','cancelled','timed_out'))
);
create index if not exists jobs_session on jobs(session_id, created_at);

create table if not exists session_events (
    id          bigserial primary key,
    office_id   text not null,
    session_id  text not null,
    job_id      text,
    kind        text not null,
    data        jsonb not null default '{}'::jsonb,
    at          timestamptz not null default now()
);
create index if not exists session_events_session on session_events(session_id, id);
create index if not exists session_events_job on session_events(job_id, id) where job_id is not null;

-- Raw terminal output in chunks; offsets are byte offsets of the session's raw stream.
-- The client worker keeps at most its retention cap per session (older chunks deleted).
create table if not exists session_output (
    session_id    text not null,
    start_offset  bigint not null,
    end_offset    bigint not null,
    data          bytea not null,
    created_at    timestamptz not null default now(),
    primary key (session_id, start_offset)
);
