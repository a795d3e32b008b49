"""The keeper: one small process per machine that owns the agents' terminals, so that an
agent outlives the client worker that drives it (a crash, a `kill -9`, an upgrade).

It forks each agent in a new PTY (its own session and process group), reaps it and keeps
its exit status until a worker takes it, and hands the PTY's master to a worker over its
Unix socket (SCM_RIGHTS): the worker then reads and writes the terminal directly, with no
relay and no cost per byte. One reader at a time: a worker holds an agent under a lease
with an epoch; a newer claim (a new worker) revokes an older, possibly hung, holder. While
no worker holds an agent, the keeper reads its output into a bounded buffer (then stops
reading: the agent waits, nothing is dropped), and the next worker gets those bytes first.
The keeper keeps its own copy of every master until the agent is reaped, so a worker's
death hangs up no terminal. An agent that no worker holds for `--grace` seconds is stopped.

Small enough to trust: the standard library only (no Temporal, no Postgres, no settings);
it is in no worker's process group and has no parent-death signal; it serves only its own
user (the socket's mode, and the peer's uid checked with SO_PEERCRED).

Modules: `protocol` (frames), `server` (the process), `client` (a worker's side and
`ensure_keeper`, which finds or starts it), `__main__` (`python -m keeper --socket PATH`).
"""
