"""Starting an agent in a PTY: the child's set-up between fork and exec, and this
process's subreaper and fd limit."""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import resource
import signal

from ptyprocess import PtyProcess

from activities.terminal.model import _Pty
from semo import procfs

log = logging.getLogger(__name__)


#: whose ignoring an exec'd agent would inherit: reset to their defaults in the child
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT,
                    signal.SIGQUIT, signal.SIGTERM, signal.SIGTSTP, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGCHLD)

_instances = itertools.count(1)  # several managers in one process tell their agents apart
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it


def become_subreaper(on: bool = True) -> bool:
    """Make orphaned descendants of this process its children instead of init's (for the
    client worker's process; a SessionManager made afterwards adopts and reaps its
    sessions' orphans). Returns whether it worked."""
    if _prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        log.warning("PR_SET_CHILD_SUBREAPER failed (errno %d): escaped agent processes are "
                    "found by their environment only", ctypes.get_errno())
        return False
    return True


def is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    if _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        return False
    return bool(flag.value)


def raise_fd_limit(want: int = 65536) -> None:
    """Three fds per session (PTY, pidfd, transcript): lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def worker_token(pid: int) -> str:
    """`pid:start time`: names this worker process, also after its pid is recycled."""
    st = procfs.start_time(pid)
    return f"{pid}:{st}"


def yield_to_supervisor(pid: int) -> None:
    """Run an agent as a batch task (SCHED_BATCH, its nice value unchanged): its CPU share is
    the same, but waking up (its PTY drained, a timer) never preempts a running task. A fleet
    of agents redrawing their screens otherwise takes the CPU from the client worker every
    time it reads one of them, and every session's output (the one a person watches too)
    waits on a starved event loop. Inherited by what the agent starts afterwards."""
    try:
        os.sched_setscheduler(pid, os.SCHED_BATCH, os.sched_param(0))
    except OSError:  # gone already, or a platform without the policy: it runs as it is
        pass


def spawn_pty(argv: list[str], cwd: str, env: dict[str, str], dimensions: tuple[int, int],
           parent: int) -> PtyProcess:
    def child_setup() -> None:
        # runs in the child between fork and exec
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the worker died while we forked
            os._exit(1)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # here rather than ptyprocess's cwd=: its error then reaches the parent as an exception
        os.chdir(cwd)

    _Pty.last = None
    try:
        return _Pty.spawn(argv, env=env, dimensions=dimensions, preexec_fn=child_setup)
    except BaseException:
        # the child reported its error and exited: reap it (ptyprocess does not)
        failed = _Pty.last
        if failed is not None:
            _kill_and_wait(failed)
        raise
    finally:
        _Pty.last = None


def _kill_and_wait(proc: PtyProcess) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(proc.pid, 0)
    except ChildProcessError:
        pass
    try:
        proc.fileobj.close()
    except OSError:
        pass
    proc.closed = True
