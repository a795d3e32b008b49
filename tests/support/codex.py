"""Codex CLI machines for tests: the pinned and the oldest supported CLI (or those that
SEMO_CODEX_TEST_VERSIONS names), each behind its own client worker, against the scripted
stand-in for the Responses API.

Set up as a user would (docs/codex.md): a profile of only `argv` and `env`, and the user's
own `$CODEX_HOME/config.toml` naming the model provider. The workspace root is a git
repository, so every session's folder is one Codex has never trusted and asks about."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from activities.codex.versions import OLDEST_SUPPORTED, cli_version
from tests.codex_standin.install import CodexInstallError, codex_path, pinned_version
from tests.codex_standin.server import ScriptedResponsesStandIn
from tests.support.claude import _profiles_from_env
from worker.client import client_runtime

CODEX_VERSIONS = [v.strip() for v in os.environ.get("SEMO_CODEX_TEST_VERSIONS", "").split(",")
                  if v.strip()] or [pinned_version(), OLDEST_SUPPORTED]
MODEL = "gpt-5-codex"


@dataclass
class CodexMachine:
    machine_id: str
    version: str
    codex_home: Path
    root: Path
    standin: ScriptedResponsesStandIn
    #: the client worker's SEMO_HOME
    worker_home: Path


def user_config(base_url: str) -> str:
    """The user's config.toml: their model and a model provider of their own."""
    return (f'model = "{MODEL}"\nmodel_provider = "standin"\n\n'
            f'[model_providers.standin]\nname = "stand-in"\nbase_url = "{base_url}"\n'
            f'wire_api = "responses"\nenv_key = "STANDIN_API_KEY"\n')


@pytest.fixture(scope="module")
def responses_standin():
    server = ScriptedResponsesStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=CODEX_VERSIONS)
async def codex_machine(request, settings, temporal_client, pool, workers, tmp_root,
                        responses_standin):
    try:
        binary = codex_path(request.param)
    except CodexInstallError as exc:
        pytest.fail(f"cannot install Codex {request.param}: {exc}", pytrace=False)
    version = cli_version(str(binary), {})
    machine_id = f"cx-{re.sub(r'[^A-Za-z0-9]', '-', request.param)}-{uuid.uuid4().hex[:4]}"
    home = (tmp_root / f"home-{machine_id}").resolve()
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(user_config(responses_standin.base_url))
    root = (tmp_root / f"ws-{machine_id}").resolve()
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    env = {"HOME": str(home), "CODEX_HOME": str(codex_home), "STANDIN_API_KEY": "sk-standin",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    # a CLI that says it is older than the range: a wrapper named like the binary
    shim = tmp_root / f"bin-{machine_id}" / "codex"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec echo "codex-cli 0.100.0"\n'
                    f'exec {binary} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)

    # a user who answers the trust screen themselves: a CODEX_HOME that trusts nothing yet
    strict_home = home / ".codex-strict"
    strict_home.mkdir()
    (strict_home / "config.toml").write_text(user_config(responses_standin.base_url))
    profiles = _profiles_from_env(json.dumps({
        "codex": {"argv": [str(binary)], "env": env},
        "codex-old": {"argv": [str(shim)], "env": env},
        "codex-strict": {"argv": [str(binary)], "env": {**env, "CODEX_HOME": str(strict_home)},
                         "dialogs": {"trust_folder": "fail"}},
        "codex-missing": {"argv": [str(tmp_root / "not-installed" / "codex")], "env": env},
    }))
    machine_settings = settings.model_copy(update={
        "machine_id": machine_id, "workspace_roots": [root], "agent_profiles": profiles,
        "home": (tmp_root / f"worker-{machine_id}").resolve()})
    async with client_runtime(machine_settings, temporal_client, pool):
        yield CodexMachine(machine_id=machine_id, version=version or "", codex_home=codex_home,
                           root=root, standin=responses_standin,
                           worker_home=machine_settings.home)
