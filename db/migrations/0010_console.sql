-- The web console's logins (api/console_auth.py): one-time login codes (what `semo dev`'s
-- console link carries) and the browser sessions they, or a pasted token, are exchanged for.
-- Only hashes are stored: a database reader cannot log in with what they find here. Any API
-- process can take a code or read a session, so a console works behind several of them.
create table if not exists console_login_codes (
    code_hash text primary key,
    sub text not null,
    -- the offices the code opens, as the token that minted it (['*']: all)
    office_ids text[] not null,
    expires_at timestamptz not null,
    used_at timestamptz,
    created_at timestamptz not null default now()
);

create table if not exists console_sessions (
    id_hash text primary key,
    sub text not null,
    office_ids text[] not null,
    expires_at timestamptz not null,
    created_at timestamptz not null default now()
);
create index if not exists console_sessions_expires on console_sessions (expires_at);

-- On Supabase, public tables are reachable through its REST API: RLS with no policy keeps
-- every role but the owner (our processes) and service_role out. Plain Postgres: harmless.
alter table console_login_codes enable row level security;
alter table console_sessions enable row level security;
