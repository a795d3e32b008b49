-- Terminal output arrives in bulk (64 KiB rows under a flood) and is read back rarely.
-- Compressing every row with pglz, Postgres's default, costs the server about twice the
-- CPU of storing it (measured by bench/bench_terminal.py): use lz4 where the server is
-- built with it (Supabase is), and store the bytes uncompressed where it is not.
do $$
begin
    alter table session_output alter column data set compression lz4;
exception when feature_not_supported then
    alter table session_output alter column data set storage external;
end $$;
