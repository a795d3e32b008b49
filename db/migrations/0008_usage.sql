-- Token usage: one row per model response, as Claude Code's transcript records it.
--
-- The client worker reads the transcript and upserts rows keyed by (session_id, message_id),
-- so reading a transcript again (a restarted worker starts from its first line, a resumed
-- conversation copies old lines) never counts a response twice: counts only ever grow to
-- the largest the transcript showed (a response written while streaming shows part of its
-- output count first). Job, session and office totals are sums over these rows.

create table if not exists model_responses (
    session_id                     text not null,
    message_id                     text not null,
    office_id                      text not null,
    -- the job whose turn it answered; null when the worker could not tell (it restarted)
    job_id                         text,
    model                          text not null,
    -- a subagent's response (Claude Code's isSidechain)
    sidechain                      boolean not null default false,
    input_tokens                   bigint not null default 0,
    output_tokens                  bigint not null default 0,
    cache_read_input_tokens        bigint not null default 0,
    cache_creation_input_tokens    bigint not null default 0,
    -- the part of cache_creation_input_tokens written to the 1-hour cache (priced higher)
    cache_creation_1h_input_tokens bigint not null default 0,
    -- when the model answered (the transcript's timestamp), else when it was recorded
    responded_at                   timestamptz not null default now(),
    recorded_at                    timestamptz not null default now(),
    primary key (session_id, message_id)
);
create index if not exists model_responses_job on model_responses(job_id) where job_id is not null;
create index if not exists model_responses_office on model_responses(office_id, responded_at);

-- Sessions whose agent reports usage (Claude Code): their jobs carry a usage object, zero
-- until a response is recorded; other agents' (a shell) carry null.
create table if not exists usage_sessions (
    session_id  text primary key,
    office_id   text not null,
    since       timestamptz not null default now()
);

do $migration$
begin
    if to_regprocedure('auth.jwt()') is null
            or not exists (select 1 from pg_roles where rolname = 'authenticated')
            or to_regprocedure('semo_opens_office(text)') is null then
        return;  -- plain Postgres: no row-level security (see 0003)
    end if;
    alter table model_responses enable row level security;
    alter table usage_sessions enable row level security;
    drop policy if exists semo_model_responses_read on model_responses;
    create policy semo_model_responses_read on model_responses for select to authenticated
        using (semo_opens_office(office_id));
    drop policy if exists semo_usage_sessions_read on usage_sessions;
    create policy semo_usage_sessions_read on usage_sessions for select to authenticated
        using (semo_opens_office(office_id));
end
$migration$;
