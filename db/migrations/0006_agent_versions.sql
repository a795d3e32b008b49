-- What each client machine found of its agents' programs when it started: for Claude Code
-- profiles the CLI's version and whether semo supports it (activities/claude_versions.py),
-- so an unsupported CLI is visible before a session fails.
alter table client_machines add column if not exists agent_versions jsonb not null default '{}';
