"""`semo dev` (what `make run` runs): the whole stack as supervised children, a clear word
when it is already running, Ctrl+C leaving nothing behind, and a second run resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from conftest import live_pids_with_env
from semo.embedded import free_port, venv_bin

COMPONENTS = {"api", "server_worker", "client_worker", "intake", "temporal", "postgres"}


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _start(tmp_path: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"dev-{time.monotonic_ns()}.log"
    proc = subprocess.Popen([str(venv_bin("semo")), "dev"], cwd=tmp_path, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    return proc, log


def _running_info(home: Path):
    try:
        info = json.loads((home / "dev.json").read_text())
    except (OSError, ValueError):
        return None
    return info if set(info.get("pids", {})) == COMPONENTS else None


def test_semo_dev_runs_stops_cleanly_and_resumes(tmp_path):
    home = tmp_path / ".semo"
    env = {**os.environ, "SEMO_HOME": str(home), "SEMO_API_PORT": str(free_port()),
           "SEMO_EMBEDDED_TEMPORAL_PORT": str(free_port()), "SEMO_TEMPORAL_UI_PORT": str(free_port()),
           "SEMO_EMBEDDED_PG_PORT": str(free_port()), "SEMO_MACHINE_ID": "dev-test"}
    for var in ("SEMO_TEMPORAL_ADDRESS", "SEMO_DATABASE_URL"):
        env.pop(var, None)
    proc, log = _start(tmp_path, env)
    try:
        info = _wait(lambda: _running_info(home), 120, "dev.json with every component")
        for key in ("api_url", "temporal_address", "temporal_ui_url", "database_url", "machine_id",
                    "token", "jwt_secret"):
            assert info[key], key
        assert all(_alive(pid) for pid in info["pids"].values())
        printed = log.read_text()
        assert info["api_url"] in printed and info["temporal_ui_url"] in printed and "/docs" in printed

        auth = {"Authorization": f"Bearer {info['token']}"}
        with httpx.Client(base_url=info["api_url"], headers=auth, timeout=60) as api:
            assert api.get("/readyz").status_code == 200
            r = api.post("/api/offices", json={"office_id": "dev-office", "name": "dev",
                                                "machine_id": "dev-test", "agent": "shell"})
            assert r.status_code == 201, r.text
            r = api.post("/api/offices/dev-office/sessions", json={"role": "BE"})
            assert r.status_code == 201, r.text
            sid = r.json()["session_id"]
        agents = live_pids_with_env("SEMO_SESSION_ID", sid)
        assert agents

        second = subprocess.run([str(venv_bin("semo")), "dev"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "already running" in second.stderr + second.stdout

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
        everything = [info["pid"], *info["pids"].values(), *agents]
        _wait(lambda: not any(_alive(p) for p in everything), 30, "every process gone")
        assert not live_pids_with_env("SEMO_SESSION_ID", sid)

        # a second run resumes: same office, and the session comes back in the same folder
        proc, log = _start(tmp_path, env)
        info2 = _wait(lambda: _running_info(home), 120, "the second run")
        assert info2["jwt_secret"] == info["jwt_secret"]
        with httpx.Client(base_url=info2["api_url"], headers=auth, timeout=60) as api:
            assert api.get("/api/offices/dev-office").status_code == 200

            def ready_again():
                s = api.get(f"/api/offices/dev-office/sessions/{sid}").json()
                return s if s["status"] == "ready" and s["restarts"] >= 1 else None

            session = _wait(ready_again, 120, "the session to come back")
            assert session["working_dir"].endswith(sid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
        _wait(lambda: not live_pids_with_env("SEMO_SESSION_ID", sid), 30, "agents gone again")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
