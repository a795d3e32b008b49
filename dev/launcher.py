"""`semo dev`: the whole system on one machine, as supervised child processes.

Starts the embedded Temporal dev server and Postgres (state in `.semo/`), applies the
migrations, then the server worker, this machine's client worker, the command intake and
the API. A child that dies is restarted. SIGINT/SIGTERM stops everything in reverse order
(the client worker stops its agents first). A lock file makes a second `semo dev` say that
one is already running instead of failing on a port.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console

from api.auth import mint_token
from db import machines
from db.migrate import migrate
from dev.embedded import (
    EmbeddedError,
    die_with_parent,
    free_port,
    port_is_open,
    start_postgres,
    start_temporal,
    stop_postgres,
    stop_process,
)
from semo.settings import Settings

console = Console(stderr=True, soft_wrap=True)  # no line breaks inside URLs and paths

#: started in this order, stopped in the reverse
COMPONENTS = ("server_worker", "client_worker", "intake", "api")
COMMANDS = {
    "server_worker": ["worker", "server"],
    # Ctrl+C leaves nothing running: the agents are stopped, not left to the keeper
    "client_worker": ["worker", "client", "--stop-agents"],
    "intake": ["worker", "intake"],
    "api": ["api"],
}
RESTART_BACKOFF_MAX_S = 30.0
#: a component up this long before it dies restarts at once (a killed or crashed worker:
#: its agents wait for the next one); one that keeps dying sooner backs off
HEALTHY_S = 10.0


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start_at: float = 0.0
    started_at: float = 0.0
    stop: Callable[[subprocess.Popen], None] = field(default=stop_process)


def run_dev(settings: Settings) -> int:
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / "dev.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _already_running(settings)
        return 1
    try:
        return _run(settings, home)
    except EmbeddedError as err:
        console.print(f"[red]error:[/] {err}")
        return 1
    finally:
        lock.close()


def _already_running(settings: Settings) -> None:
    info = {}
    try:
        info = json.loads(settings.dev_json_path.read_text())
    except (OSError, ValueError):
        pass
    pid = info.get("pid", "?")
    console.print(
        f"[yellow]semo dev is already running[/] (pid {pid}) with state in {settings.home}.\n"
        f"  API: {info.get('api_url', '?')}   Temporal UI: {info.get('temporal_ui_url', '?')}\n"
        f"Use that one, or stop it first (Ctrl+C in its terminal, or `kill {pid}`).")


def _secret(home: Path) -> str:
    path = home / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(48)
    path.write_text(value)
    path.chmod(0o600)
    return value


def _run(settings: Settings, home: Path) -> int:
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    for name, port in (("API", settings.api_port),):
        if port_is_open(settings.api_host, port):
            raise EmbeddedError(f"the {name} port {port} is in use by another program; free it or "
                                f"set SEMO_API_PORT")

    external_pg = settings.database_url is not None
    external_temporal = settings.temporal_address is not None
    temporal_address = settings.effective_temporal_address()
    database_url = settings.effective_database_url()
    jwt_secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else _secret(home)
    roots = [
        str(p)
        for p in (r if r.is_absolute() else (Path.cwd() / r) for r in settings.workspace_roots)
    ]

    children: dict[str, Child] = {}
    if not external_pg:
        children["postgres"] = Child(
            "postgres", lambda: start_postgres(settings.pg_data_dir, settings.embedded_pg_port),
            stop=stop_postgres)
    if not external_temporal:
        children["temporal"] = Child(
            "temporal", lambda: start_temporal(home / "temporal", settings.embedded_temporal_port,
                                               settings.temporal_ui_port))

    env = {
        **os.environ,
        "SEMO_HOME": str(home),
        "SEMO_DATABASE_URL": database_url,
        "SEMO_TEMPORAL_ADDRESS": temporal_address,
        "SEMO_JWT_SECRET": jwt_secret,
        "SEMO_DEV_MODE": "true",
        "SEMO_MACHINE_ID": settings.machine_id,
        "SEMO_WORKSPACE_ROOTS": json.dumps(roots),
    }
    logs = home / "logs"
    logs.mkdir(exist_ok=True)

    # each worker serves Prometheus metrics on a port of its own (the API on /metrics)
    metrics = {name: f"127.0.0.1:{free_port()}" for name in COMPONENTS if name != "api"}

    def launcher(name: str):
        args = [*COMMANDS[name], *(["--metrics-address", metrics[name]] if name in metrics else [])]

        def start() -> subprocess.Popen:
            out = open(logs / f"{name}.log", "ab")
            try:
                return subprocess.Popen(
                    [sys.executable, "-m", "cli", *args], env=env,
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=die_with_parent)
            finally:
                out.close()
        return start

    for name in COMPONENTS:
        children[name] = Child(name, launcher(name))

    info = {
        "pid": os.getpid(),
        "api_url": f"http://{settings.api_host}:{settings.api_port}",
        "api_docs_url": f"http://{settings.api_host}:{settings.api_port}/docs",
        "temporal_address": temporal_address,
        "temporal_ui_url": None if external_temporal else f"http://127.0.0.1:{settings.temporal_ui_port}",
        "database_url": database_url,
        "machine_id": settings.machine_id,
        "workspace_roots": roots,
        "token": mint_token(jwt_secret, "semo-dev", ["*"], audience=settings.jwt_audience),
        "jwt_secret": jwt_secret,
        "pids": {},
        "logs": str(logs),
        "metrics": {"api": f"http://{settings.api_host}:{settings.api_port}/metrics",
                    **{name: f"http://{address}/metrics" for name, address in metrics.items()}},
    }

    try:
        with console.status("starting the embedded stack…") as status:
            for name in ("postgres", "temporal"):
                if name in children and not stopping:
                    status.update(f"starting {name}…")
                    children[name].proc = children[name].start()
                    children[name].started_at = time.monotonic()
            if not stopping:
                status.update("applying migrations…")
                migrate(database_url)
                since = machines.database_now(database_url)
            for name in COMPONENTS:
                if stopping:
                    break
                status.update(f"starting {name.replace('_', ' ')}…")
                children[name].proc = children[name].start()
                children[name].started_at = time.monotonic()
            if not stopping:
                status.update("waiting for the API…")
                _wait_api(settings, children["api"], lambda: stopping)
            if not stopping:
                status.update("waiting for this machine's client worker…")
                _wait_machine(settings, database_url, since, children["client_worker"],
                              lambda: stopping)
        if not stopping:
            info["console_url"] = _console_url(info)
            _print_summary(info)  # before dev.json, whose pids say "running" to scripts
            _write_info(settings, info, children)
        while not stopping:
            time.sleep(0.2)
            if _supervise(children):
                _write_info(settings, info, children)
    finally:
        console.print("stopping…")
        for name in reversed(list(children)):
            child = children[name]
            if child.proc is not None:
                child.stop(child.proc)
        info["pids"] = {}
        info["stopped_at"] = time.time()
        if settings.dev_json_path.exists():
            _write_json(settings.dev_json_path, info)
        console.print("stopped.")
    return 0


def _supervise(children: dict[str, Child]) -> bool:
    """Restart children that died, with backoff; True when a pid changed."""
    changed = False
    now = time.monotonic()
    for child in children.values():
        if child.proc is None or child.proc.poll() is None:
            continue
        if child.next_start_at == 0.0 and child.started_at and now - child.started_at > HEALTHY_S:
            child.restarts = 0  # it had been running fine: a new failure starts the backoff over
        if child.next_start_at == 0.0:
            delay = min(0.5 * 2.0 ** (child.restarts - 1), RESTART_BACKOFF_MAX_S) \
                if child.restarts else 0.0
            child.next_start_at = now + delay
            console.print(f"[yellow]{child.name} exited with code {child.proc.returncode}; "
                          f"restarting in {delay:.1f}s[/]")
        elif now >= child.next_start_at:
            child.proc.wait()
            try:
                child.proc = child.start()
                child.started_at = time.monotonic()
                child.restarts += 1
                changed = True
            except EmbeddedError as err:
                console.print(f"[red]{child.name} failed to restart:[/] {err}")
            child.next_start_at = 0.0
    return changed


def _wait_api(settings: Settings, api: Child, stopped) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stopped():
        if port_is_open(settings.api_host, settings.api_port):
            return
        if api.proc.poll() is not None:
            raise EmbeddedError(f"the API exited with code {api.proc.returncode}; see "
                                f"{settings.home / 'logs' / 'api.log'}")
        time.sleep(0.1)


def _wait_machine(settings: Settings, database_url: str, since, worker: Child, stopped) -> None:
    """Until the client worker has registered this machine: an office on it is refused
    before that (422), so "running" means an office can be made at once. A worker that is
    slow or dies is not fatal: it is supervised like the rest, and this says so."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not stopped() and worker.proc.poll() is None:
        if machines.registered_since(database_url, settings.machine_id, since):
            return
        time.sleep(0.1)
    if not stopped():
        console.print(f"[yellow]the client worker has not registered machine "
                      f"{settings.machine_id} yet: offices on it are refused until it does; see "
                      f"{settings.home / 'logs' / 'client_worker.log'}[/]")


def _console_url(info: dict) -> str | None:
    """A one-time login link to the web console, minted by the API for the dev token."""
    try:
        r = httpx.post(f"{info['api_url']}/api/console/login-codes", json={"next": "/console/"},
                       headers={"Authorization": f"Bearer {info['token']}"}, timeout=10)
        r.raise_for_status()
        return r.json()["url"]
    except httpx.HTTPError as err:
        console.print(f"[yellow]no console link: {err}[/]")
        return None


def _write_info(settings: Settings, info: dict, children: dict[str, Child]) -> None:
    info["pids"] = {name: c.proc.pid for name, c in children.items() if c.proc is not None}
    info.pop("stopped_at", None)
    _write_json(settings.dev_json_path, info)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _print_summary(info: dict) -> None:
    console.print(f"""[bold green]semo dev is running[/]
  API            {info['api_url']}
  API docs       {info['api_docs_url']}
  Console        {info.get('console_url') or '(no link: see the API log)'}
                 (one-time link, valid 10 minutes; `semo console` prints a new one)
  Temporal UI    {info['temporal_ui_url'] or '(external cluster)'}
  Temporal       {info['temporal_address']}
  Postgres       {info['database_url']}
  machine        {info['machine_id']} (workspace roots: {', '.join(info['workspace_roots'])})
  metrics        {info['metrics']['api']} (workers: dev.json)
  token, pids    in .semo/dev.json; logs in {info['logs']}
Press Ctrl+C to stop everything.""")
