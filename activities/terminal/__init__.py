"""The client machine's terminals: `SessionManager` (manager.py), one PTY per session.

asyncio-native: each PTY's fd is read with `loop.add_reader` and each process's exit is
seen through a pidfd, so there is no thread per session, and one timer serves every session
(stall checks, adopting orphans). Bytes read go three ways, in batches of up to 128 KiB or
4 ms: the session's OutputMonitor (events), the OutputSink (batched persistence, with byte
offsets that continue across restarts of the session) and a bounded in-memory tail, plus a
transcript file per session. When the sink falls behind, reading pauses (the agent blocks
on write) instead of memory growing.

Process hygiene (Linux):
  * Every agent process inherits `SEMO_SESSION_ID` and `SEMO_WORKER` (this worker's pid,
    start time and manager) from the agent, and the agent dies with this worker (PR_SET_PDEATHSIG,
    armed in the child before exec; its descendants get the terminal's hangup, and the next
    worker kills what is left: `sweep_strays`).
  * The client worker process is a child subreaper (`become_subreaper()`, called by its
    entry point: it is a property of the whole process): a descendant whose parent dies (a
    double-forking daemon, a background job of a shell that exited) is re-parented here
    instead of to init, so the session's processes are always this worker's descendants:
    the leader's process tree plus its adopted orphans, told apart from the worker's other
    children by session id or environment marker, and reaped here. In a process that is
    not a subreaper (a test runner embedding the manager), escaped processes are found by
    scanning /proc for the session's marker instead, and init reaps them.
  * terminate: SIGHUP+SIGTERM to the leader's process group and to every other process of
    the session (escaped ones too), SIGKILL after `kill_grace_s`; nothing of a session
    outlives its leader. Every process is held by a pidfd while it is signalled, so a
    recycled pid is never hit, and only processes known to be the session's are reaped
    (`waitid(P_PIDFD)`), so other children's exit statuses (asyncio subprocesses) are
    never taken.

Modules: `model` (a Terminal and its limits), `manager` (the operations), `reader` (reading
and events), `reaper` (ending sessions, their processes, strays), `spawn` (the PTY child),
`transcripts`; every read of /proc goes through semo/procfs.py.
"""

from __future__ import annotations

from activities.terminal.manager import WORKER_ONLY_ENV, SessionManager
from activities.terminal.model import (
    PROCESS_BYTES,
    EventHandler,
    OutputSink,
    Terminal,
    TerminalError,
)
from activities.terminal.reaper import sweep_strays
from activities.terminal.spawn import become_subreaper, is_subreaper, raise_fd_limit, worker_token

__all__ = [
    "PROCESS_BYTES", "WORKER_ONLY_ENV", "EventHandler", "OutputSink", "SessionManager", "Terminal",
    "TerminalError", "become_subreaper", "is_subreaper", "raise_fd_limit", "sweep_strays",
    "worker_token",
]
