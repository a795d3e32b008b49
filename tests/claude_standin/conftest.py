"""Fixtures: the installed Claude Code binary, the scripted API stand-in, a CLI session in a PTY."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .claude_home import claude_env, seed_claude_home, write_project_settings
from .install import ClaudeInstallError, claude_path
from .server import ScriptedAnthropicStandIn
from .terminal import ClaudeTerminal


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The real CLI; the test FAILS (never skips) when it cannot be installed."""
    try:
        return claude_path()
    except ClaudeInstallError as exc:
        pytest.fail(f"cannot install the Claude Code CLI for the end-to-end test: {exc}", pytrace=False)


@pytest.fixture
def standin() -> Iterator[ScriptedAnthropicStandIn]:
    server = ScriptedAnthropicStandIn().start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ClaudeSession:
    term: ClaudeTerminal
    workdir: Path
    home: Path
    hook_log: Path


@pytest.fixture
def claude_session(
    claude_bin: Path, standin: ScriptedAnthropicStandIn, tmp_path: Path
) -> Iterator[Callable[..., ClaudeSession]]:
    """Factory: start `claude` in a fresh git-less working dir with a scratch HOME; always terminated."""
    started: list[ClaudeTerminal] = []

    def start(extra_env: dict[str, str] | None = None) -> ClaudeSession:
        home = tmp_path / "home"
        workdir = (tmp_path / "work").resolve()
        workdir.mkdir()
        hook_log = tmp_path / "hooks.jsonl"
        seed_claude_home(home, [workdir])
        write_project_settings(workdir, hook_log)
        env = claude_env(home, standin.base_url, extra=extra_env)
        term = ClaudeTerminal([str(claude_bin)], workdir, env)
        started.append(term)
        return ClaudeSession(term=term, workdir=workdir, home=home, hook_log=hook_log)

    try:
        yield start
    finally:
        for term in started:
            term.terminate()
