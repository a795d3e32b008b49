"""The `semo` CLI run in-process against the test API (typer's CliRunner)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.support.tokens import token_for

runner = CliRunner()


# CliRunner swaps sys.stdout and os.environ for the process: one invocation at a time
_invoking = threading.Lock()


@pytest.fixture
def cli_env(api_url, tmp_path) -> dict[str, str]:
    # SEMO_HOME without a dev.json: the environment is the only configuration
    return {"SEMO_API_URL": api_url, "SEMO_TOKEN": token_for(["*"]),
            "SEMO_HOME": str(tmp_path / "no-dev-json"), "COLUMNS": "200", "SEMO_OFFICE": ""}


@pytest.fixture
def semo(cli_env):
    async def run(*args: str, env: dict | None = None, input: str | None = None, code: int = 0):
        def invoke():
            with _invoking:
                return runner.invoke(app, list(args), env={**cli_env, **(env or {})},
                                     input=input, catch_exceptions=False)
        result = await asyncio.to_thread(invoke)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        return result
    return run


def as_json(result) -> dict:
    return json.loads(result.stdout)


