"""`semo dev` (what `make run` runs): the whole stack as supervised children, a clear word
when it is already running, Ctrl+C leaving nothing behind, and a second run resuming."""

from __future__ import annotations

import os
import signal
import subprocess
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from dev.embedded import venv_bin
from tests.support.devstack import DevStack, alive, wait
from tests.support.processes import live_pids_with_env


def test_semo_dev_runs_stops_cleanly_and_resumes(tmp_path):
    stack = DevStack(tmp_path)
    try:
        info = stack.start()
        for key in ("api_url", "temporal_address", "temporal_ui_url", "database_url", "machine_id",
                    "token", "jwt_secret"):
            assert info[key], key
        printed = stack.log.read_text()
        assert info["api_url"] in printed and info["temporal_ui_url"] in printed and "/docs" in printed

        with stack.api() as api:
            assert api.get("/readyz").status_code == 200
            r = api.post("/api/offices", json={"office_id": "dev-office", "name": "dev",
                                                "machine_id": "dev-test", "agent": "shell",
                                                "warm_roles": []})
            assert r.status_code == 201, r.text
            r = api.post("/api/offices/dev-office/sessions", json={"role": "BE"})
            assert r.status_code == 201, r.text
            sid = r.json()["session_id"]
        agents = live_pids_with_env("SEMO_SESSION_ID", sid)
        assert agents

        # the console link works once, and opens any console page (in Chromium: test_console)
        assert info["console_url"] in printed
        query = dict(parse_qsl(urlsplit(info["console_url"]).query))
        query["next"] = f"/console/offices/dev-office/sessions/{sid}"
        with httpx.Client(base_url=info["api_url"], timeout=30) as browser:
            r = browser.get(f"/console/login?{urlencode(query)}")
            assert r.status_code == 200 and "semo_console" in browser.cookies
            page = browser.get(query["next"])
            assert page.status_code == 200 and sid in page.text
            assert browser.get(f"/console/login?{urlencode(query)}").status_code == 401

        second = subprocess.run([str(venv_bin("semo")), "dev"], cwd=tmp_path, env=stack.env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "already running" in second.stderr + second.stdout

        assert stack.stop() == 0
        everything = [info["pid"], *info["pids"].values(), *agents]
        wait(lambda: not any(alive(p) for p in everything), 30, "every process gone")
        assert not live_pids_with_env("SEMO_SESSION_ID", sid)

        # a second run resumes: same office, and the session comes back in the same folder
        info2 = stack.start()
        assert info2["jwt_secret"] == info["jwt_secret"]
        with stack.api() as api:
            assert api.get("/api/offices/dev-office").status_code == 200

            def ready_again():
                s = api.get(f"/api/offices/dev-office/sessions/{sid}").json()
                return s if s["status"] == "ready" and s["restarts"] >= 1 else None

            session = wait(ready_again, 120, "the session to come back")
            assert session["working_dir"].endswith(sid)
            events = api.get(f"/api/offices/dev-office/sessions/{sid}/output").status_code
            assert events == 200

        # a component that dies is restarted
        os.kill(info2["pids"]["api"], signal.SIGKILL)
        info3 = stack.restarted("api", info2["pids"]["api"])
        with stack.api() as api:
            wait(lambda: _answers(api), 30, "the restarted API")
        assert stack.stop() == 0
        wait(lambda: not live_pids_with_env("SEMO_SESSION_ID", sid), 30, "agents gone again")
        assert not any(alive(p) for p in info3["pids"].values())
    finally:
        stack.kill()


def _answers(api) -> bool:
    try:
        return api.get("/readyz").status_code == 200
    except Exception:
        return False
