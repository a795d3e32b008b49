"""What semo relies on, pinned against the real Codex CLI (the pinned version, or
SEMO_CODEX_VERSION) in a real PTY and the scripted Responses API stand-in: docs/codex.md.

- hooks given only on the command line (`-c hooks.<Event>=…`) need a person's trust, unless
  `--dangerously-bypass-hook-trust`; then they fire, `Stop` with the final message;
- the rollout file the hooks name records each response's usage with `input_tokens`
  INCLUDING the cached ones, and a refused turn as `task_complete` with an `error` (no
  `Stop` hook for it);
- a folder inside a never-trusted git repository shows the trust screen first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.codex_standin.install import CodexInstallError, codex_path
from tests.codex_standin.server import ScriptedResponsesStandIn
from tests.codex_standin.terminal import CodexTerminal, env_for, wait_until
from tests.support.codex import user_config

MARKER = "[SEMO:DONE]"
EVENTS = ("SessionStart", "UserPromptSubmit", "PermissionRequest", "Stop")


@pytest.fixture(scope="module")
def codex_bin() -> Path:
    try:
        return codex_path()
    except CodexInstallError as exc:
        pytest.fail(f"cannot install the Codex CLI: {exc}", pytrace=False)


@pytest.fixture
def standin():
    server = ScriptedResponsesStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path: Path, standin, codex_bin):
    """A user's CODEX_HOME naming the stand-in, a hook that logs each event, and a factory
    for a Codex terminal (always ended)."""
    home, codex_home = tmp_path / "home", tmp_path / "home" / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(user_config(standin.base_url))
    log = tmp_path / "hooks.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text("import sys\nwith open(sys.argv[1], 'a') as f:\n"
                    "    f.write(sys.stdin.read().strip() + '\\n')\n")
    command = f"{sys.executable} {hook} {log}"
    hook_flags = [arg for ev in EVENTS for arg in
                  ("-c", f'hooks.{ev}=[{{hooks=[{{type="command",command={json.dumps(command)},'
                         f'timeout=30}}]}}]')]
    started: list[CodexTerminal] = []

    def start(work: Path, *flags: str) -> CodexTerminal:
        term = CodexTerminal([str(codex_bin), *flags, *hook_flags], work,
                             env_for(home, codex_home))
        started.append(term)
        return term

    yield start, log, codex_home
    for term in started:
        term.terminate()


def events(log: Path, name: str | None = None) -> list[dict]:
    if not log.exists():
        return []
    found = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in found if name is None or e.get("hook_event_name") == name]


def test_command_line_hooks_need_trust_unless_bypassed(setup, tmp_path: Path) -> None:
    start, log, _ = setup
    work = tmp_path / "plain"
    work.mkdir()
    term = start(work)
    term.wait_for(lambda s: "Hooks need review" in s, 60, "the hook review screen")
    assert "Continue without trusting" in term.text()


def test_bypassed_hooks_fire_and_stop_carries_the_final_message(setup, standin,
                                                              tmp_path: Path) -> None:
    start, log, _ = setup
    standin.reply_text(f"All done.\n{MARKER}", input_tokens=900, cached_tokens=700,
                       output_tokens=33)
    work = tmp_path / "plain"
    work.mkdir()
    term = start(work, "--dangerously-bypass-hook-trust")
    term.submit("Say you are done")
    stop = wait_until(lambda: events(log, "Stop"), 60, "the Stop hook")[-1]
    assert stop["last_assistant_message"] == f"All done.\n{MARKER}"
    submitted = events(log, "UserPromptSubmit")[-1]
    assert submitted["prompt"] == "Say you are done" and submitted["turn_id"]
    assert stop["session_id"] == submitted["session_id"], "one conversation id"
    assert events(log, "SessionStart"), "SessionStart fires (at the first prompt)"

    rollout = Path(stop["transcript_path"])
    assert rollout.name.startswith("rollout-") and rollout.parents[3].name == "sessions"

    def usage_record():
        for line in rollout.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") == "token_usage_record":
                return entry["payload"]
        return None
    record = wait_until(usage_record, 30, "a token_usage_record")
    assert record["turn_id"] == submitted["turn_id"] and record["response_id"].startswith("resp_")
    assert (record["usage"]["input_tokens"], record["usage"]["cached_input_tokens"],
            record["usage"]["output_tokens"]) == (900, 700, 33), "input INCLUDES cached"


def test_a_refused_turn_is_only_in_the_rollout(setup, standin, tmp_path: Path) -> None:
    start, log, _ = setup
    standin.reply_error(400, "the scripted model refuses it")
    work = tmp_path / "plain"
    work.mkdir()
    term = start(work, "--dangerously-bypass-hook-trust")
    term.submit("Do something")
    term.wait_for(lambda s: "the scripted model refuses" in s, 60, "the error on screen")
    rollout = Path(events(log, "UserPromptSubmit")[-1]["transcript_path"])

    def error():
        for line in rollout.read_text().splitlines():
            p = json.loads(line).get("payload") or {}
            if p.get("type") == "task_complete" and p.get("error"):
                return p["error"]
        return None
    assert "the scripted model refuses it" in str(wait_until(error, 30, "task_complete error"))
    assert not events(log, "Stop"), "no Stop hook for a refused turn"


def test_a_never_trusted_repository_asks_first(setup, tmp_path: Path) -> None:
    start, _, codex_home = setup
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    term = start(repo, "--dangerously-bypass-hook-trust")
    term.wait_for(lambda s: "Trust this folder?" in s and "1. Trust and continue" in s, 60,
                  "the trust screen")
    term.press_until("\r", lambda s: "? for shortcuts" in s and "Trust this folder?" not in s,
                     30, "the composer")
    assert f'[projects."{repo}"]' in (codex_home / "config.toml").read_text()
