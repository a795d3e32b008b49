"""Claude Code machines for tests: the pinned and the oldest supported CLI (or those that
SEMO_CLAUDE_TEST_VERSIONS names), each behind its own client worker, against the scripted
stand-in for the model API."""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from activities.claude.versions import OLDEST_SUPPORTED, cli_version
from semo.settings import load_settings
from tests.claude_standin.install import ClaudeInstallError, claude_path, pinned_version
from tests.claude_standin.server import ScriptedAnthropicStandIn
from worker.client import client_runtime

VERSIONS = [v.strip() for v in os.environ.get("SEMO_CLAUDE_TEST_VERSIONS", "").split(",")
            if v.strip()] or [pinned_version(), OLDEST_SUPPORTED]


@dataclass
class Machine:
    machine_id: str
    version: str
    home: Path
    root: Path
    standin: ScriptedAnthropicStandIn


@pytest.fixture(scope="module")
def standin():
    server = ScriptedAnthropicStandIn().start()
    yield server
    server.stop()


def _profiles_from_env(value: str) -> dict:
    """The profiles a worker gets from `SEMO_AGENT_PROFILES=value` (the environment path)."""
    saved = os.environ.get("SEMO_AGENT_PROFILES")
    os.environ["SEMO_AGENT_PROFILES"] = value
    try:
        return load_settings().agent_profiles
    finally:
        if saved is None:
            del os.environ["SEMO_AGENT_PROFILES"]
        else:
            os.environ["SEMO_AGENT_PROFILES"] = saved


@pytest.fixture(scope="module", params=VERSIONS)
async def machine(request, settings, temporal_client, pool, workers, tmp_root, standin):
    try:
        binary = claude_path(request.param)
    except ClaudeInstallError as exc:
        pytest.fail(f"cannot install Claude Code {request.param}: {exc}", pytrace=False)
    version = cli_version(str(binary), {})
    # one machine (a client worker, its queue and folders) per module that asks for one
    machine_id = f"cc-{re.sub(r'[^A-Za-z0-9]', '-', request.param)}-{uuid.uuid4().hex[:4]}"
    home = tmp_root / f"home-{machine_id}"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    root = (tmp_root / f"ws-{machine_id}").resolve()
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "ANTHROPIC_BASE_URL": standin.base_url, "ANTHROPIC_AUTH_TOKEN": "standin-token",
           "CLAUDE_CODE_MAX_RETRIES": "0", "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    # a CLI that says it is older than the range: a wrapper named like the binary
    shim = tmp_root / f"bin-{machine_id}" / "claude"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec echo "2.1.100 (Claude Code)"\n'
                    f'exec {binary} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    profiles = _profiles_from_env(json.dumps({
        "claude": {"argv": [str(binary)], "env": env},
        "claude-old": {"argv": [str(shim)], "env": env},
    }))
    machine_settings = settings.model_copy(update={
        "machine_id": machine_id, "workspace_roots": [root], "agent_profiles": profiles,
        "home": tmp_root / f"worker-{machine_id}"})
    async with client_runtime(machine_settings, temporal_client, pool):
        yield Machine(machine_id=machine_id, version=version, home=home, root=root,
                      standin=standin)


PERSONA = {"name": "Bea", "role": "BE", "description": "Backend engineer.",
           "scope_patterns": ["api/**"], "core_skills": ["Python"],
           "instructions": "Keep it small."}


