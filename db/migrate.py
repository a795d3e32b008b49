"""Apply `db/migrations/*.sql` in order, once each, tracked in `schema_migrations`.

Safe to run from several processes at once: an advisory lock serialises them.
"""

from __future__ import annotations

from importlib import resources

import psycopg

_LOCK_KEY = 0x5E305E30  # arbitrary, fixed: "semo" migrations


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("db") / "migrations"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))  # type: ignore[type-var]
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "create table if not exists schema_migrations ("
                " version text primary key, applied_at timestamptz not null default now())"
            )
            done = {r[0] for r in conn.execute("select version from schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("insert into schema_migrations(version) values (%s)", (version,))
                applied_now.append(version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
