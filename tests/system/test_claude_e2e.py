"""Claude Code, supervised through the API: the real `claude` CLI in a real PTY, driven by a
second client worker (machine `claude-e2e`) against the scripted local stand-in for the
Messages API (tests/claude_standin). Completion, errors and questions come from Claude
Code's hooks and screen (activities/claude/), not from guessing at output.

The first half tests the Claude-specific pieces on their own (settings merge, what a reply
means, dialogs on captured screens, the hook socket with the real relay program).
A missing `claude` binary fails these tests; it never skips them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from activities.claude import (
    HOOK_EVENTS,
    HOOK_TAG,
    RELAY,
    ClaudeSetupError,
    DialogOpen,
    HookServer,
    StartupError,
    find_dialog,
    merge_hooks,
    merge_settings,
    option_label,
    policy_option,
    reply_outcome,
)
from activities.persona import BEGIN, user_text
from semo.settings import AgentProfile, StartupDialogs
from tests.claude_standin.claude_home import claude_env
from tests.claude_standin.install import ClaudeInstallError, claude_path
from tests.claude_standin.server import ScriptedAnthropicStandIn
from tests.support.api_calls import event_of, job_when, new_session, send_prompt, session_when
from tests.support.claude import PERSONA
from tests.support.histories import replay_and_maybe_record
from tests.support.waiting import wait_for
from worker.client import client_runtime

MACHINE = "claude-e2e"
MARKER = "[SEMO:DONE]"
USER_NOTES = "# Team notes\nBe kind to the build.\n"


# --- the pieces on their own -----------------------------------------------------------------------

CMD = f"/venv/bin/python -I -S /x/hook_relay.py # {HOOK_TAG}"


def test_merge_keeps_the_users_settings_and_is_idempotent() -> None:
    user = {
        "model": "opus",
        "permissions": {"allow": ["Bash(npm test)"]},
        "hooks": {
            "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
            "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "audit"}]}],
            "PostToolUse": [{"matcher": "Edit", "hooks": [{"type": "command", "command": "fmt"}]}],
        },
    }
    merged = merge_hooks(user, CMD)
    assert merged["model"] == "opus"
    assert merged["permissions"] == {"allow": ["Bash(npm test)"], "defaultMode": "default"}
    assert merged["hooks"]["PostToolUse"] == user["hooks"]["PostToolUse"], "not ours: untouched"
    assert merged["hooks"]["PreToolUse"][0] == user["hooks"]["PreToolUse"][0], "the user's stays first"
    assert merged["hooks"]["Stop"][0] == user["hooks"]["Stop"][0], "the user's Stop hook stays first"
    for event in HOOK_EVENTS:
        ours = [h for g in merged["hooks"][event] for h in g["hooks"] if HOOK_TAG in h["command"]]
        assert len(ours) == 1, event
    assert merge_hooks(merged, CMD) == merged, "merging again changes nothing"
    moved = merge_hooks(merged, CMD.replace("/venv/", "/new-venv/"))
    assert sum(CMD in json.dumps(g) for g in moved["hooks"]["Stop"]) == 0, "a stale entry is replaced"
    assert user["hooks"]["Stop"] == [{"hooks": [{"type": "command", "command": "notify-send done"}]}]
    assert merge_hooks({"permissions": {"defaultMode": "acceptEdits"}}, CMD)["permissions"] == \
        {"defaultMode": "acceptEdits"}, "a mode the user chose is theirs"
    with pytest.raises(ClaudeSetupError, match="disableAllHooks"):
        merge_hooks({"disableAllHooks": True}, CMD)


def test_merge_settings_refuses_a_broken_file_instead_of_clobbering_it(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    (wt / ".claude").mkdir(parents=True)
    target = wt / ".claude" / "settings.local.json"
    target.write_text("{not json")
    with pytest.raises(ClaudeSetupError, match="not valid JSON"):
        merge_settings(wt, [tmp_path], CMD)
    assert target.read_text() == "{not json"
    target.write_text('{"env": {"FOO": "1"}}')
    merge_settings(wt, [tmp_path], CMD)
    saved = json.loads(target.read_text())
    assert saved["env"] == {"FOO": "1"} and set(HOOK_EVENTS) <= set(saved["hooks"])


def test_what_a_reply_means() -> None:
    assert reply_outcome("All done.\n[SEMO:DONE]")[0] == "completion"
    assert reply_outcome("All done.\n**`[SEMO:DONE]`**\n")[1]["kind"] == "marker"
    assert reply_outcome("I will print [SEMO:DONE] when finished.")[0] == "turn_end"
    kind, data = reply_outcome("Tried hard.\n[SEMO:ERROR] the database is down")
    assert (kind, data["reason"]) == ("error", "the database is down")
    kind, data = reply_outcome("Opened https://github.com/acme/app/pull/7 for review.")
    assert (kind, data["kind"], data["url"]) == ("completion", "pr_created",
                                                 "https://github.com/acme/app/pull/7")
    kind, data = reply_outcome("Should I also update the docs?")
    assert kind == "turn_end" and data["message"] == "Should I also update the docs?"


PERMISSION_SCREEN = """\
● I'll create the file.
  ⎿  $ touch created.txt
────────────────────────────────────────────────────────────
 Bash command
 Tip: auto mode handles these prompts for you — choose "switch to auto mode" below
 Create created.txt
╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌
 touch created.txt
╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌╌
 Do you want to proceed?
 ❯ 1. Yes
   2. Yes, and always allow access to /tmp/work-x3ky9rg1 from this project
   3. Yes, and switch to auto mode · auto mode handles these prompts for you
   4. No
 Esc to cancel · Tab to amend"""

TRUST_SCREEN = """\
────────────────────────────────────────────────────────────────────────────────
 Accessing workspace:
 /tmp/cap/work
 Quick safety check: Is this a project you created or one you trust? (Like your own code
 Trusting this folder loads .claude/settings.local.json.
 Security guide
 ❯ No, exit
   Yes, I trust this folder
 Enter to confirm · Esc to cancel"""

IDLE_SCREEN = """\
❯ first prompt
● Hello.
────────────────────────────────────────────────────────────────────────────────
❯\xa0
────────────────────────────────────────────────────────────────────────────────
  ⏸ manual mode on · ? for shortcuts · ← for agents"""


def test_dialogs_are_read_off_the_screen() -> None:
    d = find_dialog(PERMISSION_SCREEN.splitlines())
    assert d is not None and d.kind() == "permission" and d.selected == 0
    assert d.question == "Do you want to proceed?"
    assert d.summary() == "Bash command\nCreate created.txt\ntouch created.txt\nDo you want to proceed?"
    assert d.options[0] == "1. Yes" and d.options[3] == "4. No"
    t = find_dialog(TRUST_SCREEN.splitlines())
    assert t is not None and t.kind() == "trust_folder"
    assert t.options == ("No, exit", "Yes, I trust this folder") and t.selected == 0
    assert find_dialog(IDLE_SCREEN.splitlines()) is None


class FakeTerminal:
    """What ClaudeDriver reads of a Terminal."""

    def __init__(self) -> None:
        self.session_id, self.generation, self.rows, self.cols = "s1", 0, 40, 120
        self.job_id: str | None = None
        self.offset = 0
        self.stopping = self.busy = self.waiting = False
        self.exit_code = self.exit_signal = None
        self.exited = asyncio.Event()
        self.output = asyncio.Event()  # set when output is handed on, as the manager does
        self.echoed: list[str] = []
        self.monitor = self

    def expect_echo(self, text: str) -> None:
        self.echoed.append(text)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()


class FakeManager:
    """The SessionManager surface ClaudeDriver uses: output so far, keystrokes."""

    draining = False
    rows, cols = 40, 120

    def __init__(self, term: FakeTerminal) -> None:
        self.term, self.output, self.keys = term, bytearray(), []

    def show(self, text: str) -> None:
        self.output += b"\x1b[2J\x1b[H" + text.replace("\n", "\r\n").encode()
        self.term.offset = len(self.output)
        self.term.output.set()

    def get_output(self, session_id: str, since: int = 0) -> tuple[int, bytes]:
        return since, bytes(self.output[since:])

    async def send_keystrokes(self, session_id: str, keys: list[str], text: str | None = None) -> None:
        self.keys.append((keys, text))


TRUST_SCREEN_NUMBERED = """\
────────────────────────────────────────────────────────────────────────────────
 Accessing workspace:
 /tmp/cap/work
 Quick safety check: Is this a project you created or one you trust? (Like your own code
 Security guide
 ❯ 1. Yes, I trust this folder
   2. No, exit
 Enter to confirm · Esc to cancel"""


def test_policy_answers_are_found_by_their_words_not_their_place() -> None:
    """2.1.197 numbers its options and puts Yes first; 2.1.330 puts `No, exit` first."""
    numbered = find_dialog(TRUST_SCREEN_NUMBERED.splitlines())
    plain = find_dialog(TRUST_SCREEN.splitlines())
    assert numbered is not None and numbered.kind() == "trust_folder"
    assert policy_option(numbered, "accept") == 0 and policy_option(numbered, "decline") == 1
    assert policy_option(plain, "accept") == 1 and policy_option(plain, "decline") == 0
    assert option_label("1. Yes, I trust this folder") == "Yes, I trust this folder"


def _driver(manager, term, signal, **profile):
    from activities.claude import ClaudeDriver
    return ClaudeDriver(manager, "s1", 0, AgentProfile(argv=["claude"], hooks=True, **profile),
                        signal)


async def _nothing(term, ev) -> None:
    pass


async def test_a_trust_dialog_after_the_input_box_is_answered_by_policy() -> None:
    term = FakeTerminal()
    manager = FakeManager(term)
    sent: list = []

    async def signal(term, ev) -> None:
        sent.append(ev.kind)

    driver = _driver(manager, term, signal)
    driver.attach(term)
    driver.started = True  # start-up is over: the box was up
    manager.show(TRUST_SCREEN)  # `No, exit` selected: one Down, then Enter
    await wait_for(lambda: _ready(manager.keys), timeout=5, what="a key for the dialog")
    assert manager.keys == [(["down"], None)]
    manager.show(TRUST_SCREEN.replace(" ❯ No, exit\n   Yes", "   No, exit\n ❯ Yes"))
    await wait_for(lambda: _ready(len(manager.keys) == 2), timeout=5, what="Enter")
    assert manager.keys[1] == (["enter"], None)
    manager.show(IDLE_SCREEN)
    await asyncio.sleep(0.5)
    assert sent == [], "a dialog the policy answers waits for nobody"
    manager.keys.clear()
    manager.show(TRUST_SCREEN_NUMBERED)  # Yes already selected: Enter alone
    await wait_for(lambda: _ready(manager.keys), timeout=5, what="Enter")
    assert manager.keys == [(["enter"], None)]
    await driver.close()


async def test_ready_means_the_box_is_up_and_claude_code_has_started() -> None:
    term = FakeTerminal()
    manager = FakeManager(term)
    driver = _driver(manager, term, _nothing)
    driver.attach(term)
    manager.show(TRUST_SCREEN)
    ready = asyncio.create_task(driver.wait_ready(20))
    await wait_for(lambda: _ready(manager.keys), timeout=5, what="the trust dialog answered")
    manager.show(IDLE_SCREEN)
    await asyncio.sleep(1.0)
    assert not ready.done(), "the box alone is not ready while SessionStart is due"
    driver.on_hook({"hook_event_name": "SessionStart", "source": "startup"})
    await asyncio.wait_for(ready, 5)
    assert driver.started
    await driver.close()


async def test_a_start_up_dialog_the_policy_fails_ends_the_start_naming_it() -> None:
    term = FakeTerminal()
    manager = FakeManager(term)
    driver = _driver(manager, term, _nothing, dialogs=StartupDialogs(trust_folder="fail"))
    driver.attach(term)
    manager.show(TRUST_SCREEN_NUMBERED)
    with pytest.raises(StartupError, match="trust_folder") as err:
        await driver.wait_ready(20)
    assert err.value.permanent and manager.keys == []
    await driver.close()


async def _started_with_a_dialog() -> tuple[FakeManager, Any]:
    """A driver past start-up whose screen shows a permission dialog, seen."""
    term = FakeTerminal()
    manager = FakeManager(term)
    driver = _driver(manager, term, _nothing)
    driver.attach(term)
    driver.started = True
    manager.show(PERMISSION_SCREEN)
    await wait_for(lambda: _ready(driver.dialog()), timeout=5, what="the dialog seen")
    return manager, driver


async def test_a_prompt_is_never_typed_into_a_dialog() -> None:
    manager, driver = await _started_with_a_dialog()
    with pytest.raises(DialogOpen, match="Do you want to proceed"):
        await driver.submit("Do the next thing", "job-2")
    assert manager.keys == [], "nothing was typed"
    await driver.close()


async def test_a_prompt_looks_at_the_screen_as_it_is_now_not_as_last_parsed() -> None:
    """A burst of output (a stand-in model streams a turn at once) leaves the watcher's
    screen behind, still showing a dialog the burst removed; a prompt brings the screen up
    to date first instead of being refused for a dialog that is gone."""
    manager, driver = await _started_with_a_dialog()
    for _ in range(40):  # ~20 KB at once: more than the screen follows a second
        manager.show(IDLE_SCREEN)
    await wait_for(lambda: _ready(driver.view.behind), timeout=5, what="the screen behind")
    assert driver.dialog() is not None, "as last parsed, the dialog is still there"
    typing = asyncio.create_task(driver.submit("Do the next thing", "job-3"))
    try:
        await wait_for(lambda: _ready(manager.keys or typing.done()), timeout=10,
                       what="the prompt typed")
        if typing.done():
            typing.result()  # DialogOpen here is the bug
        assert "Do the next thing" in (manager.keys[0][1] or "")
    finally:
        typing.cancel()
        await asyncio.gather(typing, return_exceptions=True)
        await driver.close()


async def test_a_quiet_screen_is_not_rendered_again(monkeypatch) -> None:
    """Rendering a pyte screen costs ~1.5 ms: a watcher that rendered each of its 20 looks
    a second made 50 idle Claude sessions take a whole core. It renders rows when output
    changed them, and only those."""
    from activities.claude import ClaudeDriver, follow
    renders = []
    render = follow._render
    monkeypatch.setattr(follow, "_render", lambda line, columns: renders.append(1)
                        or render(line, columns))

    async def signal(term, ev) -> None:
        pass

    term = FakeTerminal()
    manager = FakeManager(term)
    manager.show("╭───╮\n│ > │\n╰───╯\n  ? for shortcuts")
    driver = ClaudeDriver(manager, "s1", 0, AgentProfile(argv=["claude"], hooks=True), signal)
    driver.attach(term)
    await wait_for(lambda: _ready(renders), timeout=5, what="the first render")
    seen = len(renders)
    await asyncio.sleep(1.5)  # thirty looks' worth of a quiet screen, and one idle wake-up
    assert len(renders) == seen
    manager.output += b"\x1b[5;1H\xe2\x97\x8f Working\xe2\x80\xa6"  # one row changes
    term.offset = len(manager.output)
    term.output.set()
    await wait_for(lambda: _ready(len(renders) > seen), timeout=5, what="a render of new output")
    assert "● Working…" in driver.lines()
    assert len(renders) == seen + 1, "only the changed row is rendered again"
    await driver.close()


async def test_hook_events_and_the_screen_become_job_events(tmp_path: Path) -> None:
    from activities.claude import ClaudeDriver
    sent: list = []

    async def signal(term, ev) -> None:
        sent.append((ev.kind, ev.data.get("job_id"), ev.data))

    term = FakeTerminal()
    manager = FakeManager(term)
    driver = ClaudeDriver(manager, "s1", 0, AgentProfile(argv=["claude"], hooks=True), signal)
    driver.attach(term)
    driver.started = True
    term.job_id, driver.job_open = "job-1", True

    async def events(n: int) -> list:
        await wait_for(lambda: _ready(len(sent) >= n), timeout=5, what=f"{n} events")
        await asyncio.sleep(0.1)
        return sent[:]

    driver.on_hook({"hook_event_name": "Notification", "notification_type": "idle_prompt"})
    driver.on_hook({"hook_event_name": "Stop", "last_assistant_message": "Which database?"})
    driver.on_hook({"hook_event_name": "Notification", "notification_type": "permission_prompt",
                    "message": "Claude needs your permission to use Bash"})
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("\n".join(json.dumps(x) for x in [
        {"type": "user", "message": {"content": "hi"}},
        {"type": "assistant", "isSidechain": True, "message": {"content": [{"type": "text", "text": "[SEMO:DONE]"}]}},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Done.\n[SEMO:DONE]"}]}},
    ]) + "\n{cut")
    driver.on_hook({"hook_event_name": "Stop", "transcript_path": str(transcript)})
    driver.on_hook({"hook_event_name": "SessionEnd", "reason": "other"})  # no job open any more
    got = await events(3)
    assert [(k, j) for k, j, _ in got] == [("turn_end", "job-1"), ("waiting_input", "job-1"),
                                          ("completion", "job-1")], got
    assert got[1][2]["source"] == "notification" and "Bash" in got[1][2]["question"]
    assert got[2][2]["kind"] == "marker"

    sent.clear()
    term.job_id, driver.job_open = "job-2", True
    driver.session_end = None
    driver.on_hook({"hook_event_name": "StopFailure", "error": "server_error",
                    "last_assistant_message": "● API Error: 529 Overloaded. Try again"})
    await events(1)
    driver.job_open = True
    driver.on_hook({"hook_event_name": "SessionEnd", "reason": "clear"})
    driver.on_hook({"hook_event_name": "SessionEnd", "reason": "prompt_input_exit"})
    got = await events(2)
    assert [(k, d.get("reason")) for k, _, d in got] == [
        ("error", "API Error: 529 Overloaded. Try again"),
        ("error", "Claude Code exited mid-job (session end: prompt_input_exit)")]

    # a permission is told once, by the PermissionRequest hook, the moment it is asked:
    # neither the dialog on screen nor the late Notification adds anything
    sent.clear()
    driver.job_open = True
    driver.on_hook({"hook_event_name": "PermissionRequest", "tool_name": "Bash",
                    "tool_input": {"command": "touch created.txt"}})
    manager.show(PERMISSION_SCREEN)
    got = await events(1)
    driver.on_hook({"hook_event_name": "Notification", "notification_type": "permission_prompt",
                    "message": "Claude needs your permission to use Bash"})
    await asyncio.sleep(0.5)
    assert len(sent) == 1 and sent[0][0] == "waiting_input", sent
    data = sent[0][2]
    assert data["source"] == "hook" and data["tool"] == "Bash"
    assert data["input"] == {"command": "touch created.txt"} and data["kind"] == "permission"
    assert "touch created.txt" in data["question"]

    # keys wait until a freshly drawn dialog takes them
    manager.show(IDLE_SCREEN)
    await asyncio.sleep(0.4)
    manager.show(PERMISSION_SCREEN.replace("created.txt", "other.txt"))
    await asyncio.sleep(0.1)
    before = asyncio.get_running_loop().time()
    await driver.before_keys()
    assert asyncio.get_running_loop().time() - before >= 0.3
    await driver.close()


async def _ready(value):
    return value


async def run_relay(path: Path, session_id: str, token: str, event: dict,
                    reconnect_s: float = 0.5) -> None:
    """hook_relay.py as Claude Code runs it, with `event` on its stdin: it must stay silent."""
    env = {"PATH": os.environ["PATH"], "SEMO_HOOK_SOCKET": str(path),
           "SEMO_HOOK_TOKEN": token, "SEMO_SESSION_ID": session_id,
           "SEMO_HOOK_RECONNECT_S": str(reconnect_s)}
    proc = await asyncio.create_subprocess_exec(
        "python3", "-I", "-S", str(RELAY), env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(event).encode()), 60)
    assert (proc.returncode, out, err) == (0, b"", b""), "a hook must stay silent"


async def test_the_hook_socket_takes_only_the_sessions_own_secret(tmp_path: Path) -> None:
    server = HookServer(tmp_path / "run" / "hooks.sock")
    await server.start()
    got: dict[str, list] = {"a": [], "b": []}
    token_a = server.register("a", got["a"].append)
    server.register("b", got["b"].append)

    async def relay(session_id: str, token: str, event: dict) -> None:
        await run_relay(server.path, session_id, token, event)

    try:
        assert oct(server.path.stat().st_mode & 0o777) == "0o600"
        await relay("a", token_a, {"hook_event_name": "Stop", "last_assistant_message": "hi"})
        await relay("b", token_a, {"hook_event_name": "Stop", "last_assistant_message": "forged"})
        await relay("nobody", token_a, {"hook_event_name": "Stop"})
        assert got == {"a": [{"hook_event_name": "Stop", "last_assistant_message": "hi"}], "b": []}
        assert server.denied == 2
    finally:
        await server.close()
    await relay("a", token_a, {"hook_event_name": "Stop"})  # the worker gone: still exit 0, silent


async def test_a_hook_sent_while_its_worker_restarts_reaches_the_next_one(tmp_path: Path) -> None:
    """The agent's hooks name the socket of the worker that started it. That worker dies; a
    hook fires before the next worker listens: the relay knocks again until the next worker,
    which adopted the agent, takes the dead worker's socket over with the agent's own secret.
    A live worker's socket is never taken."""
    dead = HookServer(tmp_path / "run" / "hooks-1.sock")
    await dead.start()
    token = dead.register("s", lambda event: None)
    await dead.close()
    dead.path.touch()  # what a worker killed with SIGKILL leaves: a socket file nobody serves

    got: list[dict] = []
    relay = asyncio.create_task(run_relay(dead.path, "s", token, {"hook_event_name": "Stop"},
                                          reconnect_s=30))
    await asyncio.sleep(0.5)  # the relay is knocking on a socket nobody answers
    assert not relay.done()
    nxt = HookServer(tmp_path / "run" / "hooks-2.sock")
    await nxt.start()
    try:
        nxt.register("s", got.append, token)
        await nxt.listen_also(dead.path)
        await asyncio.wait_for(relay, 30)
        assert got == [{"hook_event_name": "Stop"}]
        assert oct(dead.path.stat().st_mode & 0o777) == "0o600"

        third = HookServer(tmp_path / "run" / "hooks-3.sock")
        with pytest.raises(OSError, match="live worker"):
            await third.listen_also(nxt.path)
        await run_relay(nxt.path, "s", token, {"hook_event_name": "SessionEnd"})
        assert got[-1] == {"hook_event_name": "SessionEnd"}  # still the live worker's
    finally:
        await nxt.close()
    assert not dead.path.exists() and not nxt.path.exists()


# --- through the API, with the real CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    try:
        return claude_path()
    except ClaudeInstallError as exc:
        pytest.fail(f"cannot install the Claude Code CLI for the end-to-end tests: {exc}",
                    pytrace=False)


@pytest.fixture(scope="module")
def standin():
    server = ScriptedAnthropicStandIn().start()
    yield server
    server.stop()


@dataclass
class Machine:
    root: Path
    home: Path
    repo: Path
    standin: ScriptedAnthropicStandIn


@pytest.fixture(scope="module")
async def claude_machine(settings, temporal_client, pool, workers, tmp_root, claude_bin, standin):
    """A second client worker whose `claude` profile runs the installed CLI against the
    stand-in, with a scratch HOME that has seen no folder (the trust and API-key dialogs are
    answered by the profile's policy)."""
    home = tmp_root / "claude-home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True, "theme": "dark"}))
    root = (tmp_root / "claude-ws").resolve()
    root.mkdir()
    repo = root / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / ".claude").mkdir()
    (repo / ".claude" / "CLAUDE.md").write_text(USER_NOTES)
    (repo / "README.md").write_text("widgets\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    profile = AgentProfile(argv=[str(claude_bin)], env=claude_env(home, standin.base_url),
                           monitor="claude", hooks=True, input_mode="paste", ready_timeout_s=40,
                           dialogs=StartupDialogs(trust_folder="accept", api_key="accept"))
    strict = profile.model_copy(update={"dialogs": StartupDialogs(trust_folder="fail")})
    machine_settings = settings.model_copy(update={
        "machine_id": MACHINE, "workspace_roots": [root],
        "agent_profiles": {"claude": profile, "claude-strict": strict},
        "home": tmp_root / "claude-worker"})
    async with client_runtime(machine_settings, temporal_client, pool):
        yield Machine(root=root, home=home, repo=repo, standin=standin)


@pytest.fixture
async def office(http, claude_machine: Machine) -> str:
    claude_machine.standin.clear()
    office_id = f"c-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={
        "office_id": office_id, "name": "claude office", "machine_id": MACHINE, "agent": "claude",
        "warm_roles": [], "repository": str(claude_machine.repo), "personas": {"BE": PERSONA}})
    assert r.status_code == 201, r.text
    return office_id


async def screen_text(http, office: str, sid: str) -> str:
    return "\n".join((await http.get(f"/api/offices/{office}/sessions/{sid}/screen")).json()["lines"])


async def test_a_reply_with_the_marker_completes_the_job(http, office, claude_machine, temporal_client,
                                                         pool):
    standin = claude_machine.standin
    standin.reply_text(f"Implemented it.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])

    # its own worktree, on its own branch, with the persona and our hooks in it
    assert wd.is_relative_to(claude_machine.root)
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=wd, check=True,
                            capture_output=True, text=True).stdout.strip()
    assert branch == f"semo/{office}/BE-{sid.split('-', 1)[1]}"
    claude_md = (wd / ".claude" / "CLAUDE.md").read_bytes()
    assert claude_md.startswith(BEGIN) and b"# You are Bea (BE)" in claude_md
    assert user_text(claude_md) == USER_NOTES.encode(), "the repository's own notes are kept"
    hooks = json.loads((wd / ".claude" / "settings.local.json").read_text())
    assert set(HOOK_EVENTS) <= set(hooks["hooks"]) and hooks["permissions"]["defaultMode"] == "default"
    assert "SEMO_HOOK_TOKEN" not in json.dumps(hooks) and "token" not in json.dumps(session)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=wd, capture_output=True, text=True)
    assert status.stdout == "", "semo's files are not the agent's to commit"

    job_id = await send_prompt(http, office, sid, "Implement the widget endpoint.")
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert job["completion"]["kind"] == "marker" and job["completion"]["source"] == "hook"
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "ready"

    request = standin.main_requests()[-1]
    assert "Implement the widget endpoint." in request.last_user_text()
    assert "Completion protocol" in json.dumps(request.body), "Claude Code read the persona"

    # the session's hook secret lives in the agent's environment only
    environ = Path(f"/proc/{await _started_pid(pool, sid)}/environ").read_bytes().split(b"\0")
    token = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"SEMO_HOOK_TOKEN="))
    assert len(token) >= 40
    history = (await temporal_client.get_workflow_handle(session["workflow_id"]).fetch_history()).to_json()
    assert token not in history and token not in (wd / ".claude" / "settings.local.json").read_text()
    async with pool.connection() as conn:
        for table in ("session_events", "agent_sessions", "jobs", "agent_commands",
                      "agent_command_results", "session_output"):
            row = await (await conn.execute(
                f"select count(*) from {table} t where t::text like %s", (f"%{token}%",))).fetchone()
            assert row[0] == 0, table

    await http.delete(f"/api/offices/{office}/sessions/{sid}")
    assert wd.is_dir(), "terminating a session leaves its worktree"
    await replay_and_maybe_record(temporal_client, session["workflow_id"], "session_claude")


async def test_a_reply_without_the_marker_leaves_the_job_running(http, office, claude_machine):
    standin = claude_machine.standin
    standin.reply_text("Before I start: should the endpoint be paginated?")
    sid = (await new_session(http, office))["session_id"]
    prompt = f"Build the endpoint. When you are done, reply with\n{MARKER}\non a line of its own."
    job_id = await send_prompt(http, office, sid, prompt)

    turn = await event_of(http, office, job_id, "turn_end")
    assert "paginated?" in turn["data"]["message"]
    await asyncio.sleep(1.0)  # nothing else may complete it: not the echoed prompt, not CLAUDE.md
    job = (await http.get(f"/api/offices/{office}/jobs/{job_id}")).json()
    assert job["status"] == "running", job
    sent = json.dumps(standin.main_requests()[-1].body)
    assert MARKER in sent, "the model did see the marker (in our prompt and in CLAUDE.md)"
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "busy"

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/cancel")
    assert r.status_code == 200, r.text
    assert (await job_when(http, office, job_id, "cancelled"))["status"] == "cancelled"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_bash_call_waits_for_approval_then_runs_in_the_worktree(http, office, claude_machine):
    standin = claude_machine.standin
    standin.reply_tool_use("Bash", {"command": "touch approved.txt", "description": "Create approved.txt"},
                           text="I will create the file.")
    standin.reply_text(f"Created approved.txt.\n{MARKER}")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Create a file named approved.txt")

    waiting = await session_when(http, office, sid, "waiting_input")
    assert waiting["current_job_id"] == job_id
    asked = await event_of(http, office, job_id, "waiting_input")
    assert "touch approved.txt" in asked["data"]["question"]
    assert asked["data"]["kind"] == "permission" and asked["data"]["tool"] == "Bash"
    assert asked["data"]["input"]["command"] == "touch approved.txt"
    assert asked["data"]["source"] == "hook", "told by PermissionRequest, not read off the screen"
    assert not (wd / "approved.txt").exists(), "nothing runs before it is approved"

    r = await http.post(f"/api/offices/{office}/sessions/{sid}/keys", json={"keys": ["enter"]})
    assert r.status_code == 200, r.text
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert (wd / "approved.txt").exists(), "the approved command ran in the session's worktree"
    kinds = [e["kind"] for e in job["events"]]
    assert kinds.count("waiting_input") == 1, kinds
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_an_api_error_fails_the_job_with_the_reason(http, office, claude_machine):
    claude_machine.standin.reply_error(500, "scripted outage")
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid, "Do something.")
    job = await job_when(http, office, job_id, "failed", "done", "timed_out")
    assert job["status"] == "failed", job
    assert job["error"].startswith("API Error: 500 scripted outage"), job["error"]
    failure = next(e for e in job["events"] if e["kind"] == "error")
    assert failure["data"]["error"] == "server_error"
    assert (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()["status"] == "ready"

    # the box now shows the placeholder "Resend your message to try again": typed over, not cleared
    async def placeholder():  # the screen is stored in batches: it may lag the hook
        return "Resend your message" in await screen_text(http, office, sid)
    await wait_for(placeholder, what="the placeholder on screen")
    claude_machine.standin.reply_text(f"Recovered.\n{MARKER}")
    again = await send_prompt(http, office, sid, "Try once more.")
    assert (await job_when(http, office, again, "done", "failed", "timed_out"))["status"] == "done"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_a_slow_model_times_out_and_the_session_takes_the_next_prompt(http, office, claude_machine):
    standin = claude_machine.standin
    standin.reply_slow(30, "far too late")
    standin.reply_text(f"Quick this time.\n{MARKER}")
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid, "Think very hard.", timeout_s=3)
    job = await job_when(http, office, job_id, "timed_out", "done", "failed", timeout=30)
    assert job["status"] == "timed_out", job
    timeout = next(e for e in job["events"] if e["kind"] == "timeout")
    assert timeout["data"]["ctrl_c_sent"] is True
    await wait_for(lambda: _not_busy(http, office, sid), timeout=10, what="the turn interrupted")

    # Ctrl+C put the unanswered prompt back into the input box: the next prompt clears it
    again = await send_prompt(http, office, sid, "Answer quickly.")
    job = await job_when(http, office, again, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert standin.main_requests()[-1].last_user_text().endswith("Answer quickly.")
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def _not_busy(http, office, sid):
    return "esc to interrupt" not in await screen_text(http, office, sid)


async def test_a_pr_url_in_the_reply_completes_the_job_with_the_url(http, office, claude_machine):
    claude_machine.standin.reply_text("Opened the pull request: https://github.com/acme/widgets/pull/42")
    sid = (await new_session(http, office))["session_id"]
    job_id = await send_prompt(http, office, sid, "Open a PR for the widget endpoint.")
    job = await job_when(http, office, job_id, "done", "failed", "timed_out")
    assert job["status"] == "done", job
    assert job["completion"]["kind"] == "pr_created"
    assert job["completion"]["url"] == "https://github.com/acme/widgets/pull/42"
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def test_claude_exiting_mid_job_fails_it_and_the_restart_reinjects_the_persona(
        http, office, claude_machine, pool):
    claude_machine.standin.reply_slow(30, "never seen")
    session = await new_session(http, office)
    sid, wd = session["session_id"], Path(session["working_dir"])
    job_id = await send_prompt(http, office, sid, "Take your time.")
    await wait_for(lambda: _busy(http, office, sid), timeout=20, what="the turn running")
    claude_md = wd / ".claude" / "CLAUDE.md"
    claude_md.write_bytes(claude_md.read_bytes().replace(b"# You are Bea (BE)", b"# tampered"))

    os.kill(await _started_pid(pool, sid), signal.SIGTERM)  # the agent this test's worker started
    job = await job_when(http, office, job_id, "failed", "done", "timed_out", timeout=30)
    assert job["status"] == "failed", job
    # SessionEnd's hook says why; should the process exit be seen first, the job is
    # "interrupted" with the exit as the event's reason
    assert job["error"] == "Claude Code exited mid-job (session end: other)" \
        or (job["error"] == "interrupted" and "agent exited" in json.dumps(job["events"])), job

    async def restarted():
        s = (await http.get(f"/api/offices/{office}/sessions/{sid}")).json()
        return s if s["restarts"] == 1 and s["status"] == "ready" else None
    await wait_for(restarted, timeout=40, interval=0.1, what="the session restarted and ready")
    text = claude_md.read_bytes()
    assert b"# You are Bea (BE)" in text and b"# tampered" not in text
    assert user_text(text) == USER_NOTES.encode()
    await http.delete(f"/api/offices/{office}/sessions/{sid}")


async def _busy(http, office, sid):
    return "esc to interrupt" in await screen_text(http, office, sid)


async def _started_pid(pool, sid: str) -> int:
    """The pid of the agent process the session's last start reported (its `started` event)."""
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "select data from session_events where session_id = %s and kind = 'started'"
            " order by id desc limit 1", (sid,))).fetchone()
    return int(row[0]["pid"])


async def test_a_start_up_dialog_the_policy_does_not_answer_fails_the_start(http, claude_machine):
    # a plain folder (Claude Code trusts every worktree of a repository it trusted once)
    office_id = f"c-{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/offices", json={"office_id": office_id, "name": "strict office",
                                              "machine_id": MACHINE, "agent": "claude-strict",
                                              "warm_roles": []})
    assert r.status_code == 201, r.text
    r = await http.post(f"/api/offices/{office_id}/sessions", json={"role": "QA"})
    assert r.status_code >= 400, r.text
    detail = r.json()["detail"]
    assert "Is this a project you created or one you trust?" in detail, detail
    assert "dialogs.trust_folder" in detail


def test_an_answer_becomes_the_hooks_decision() -> None:
    from activities.claude.hooks import Held as _Held, decision_output
    suggestions = [{"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "npm test"}],
                    "behavior": "allow", "destination": "localSettings"},
                   {"type": "setMode", "mode": "acceptEdits", "destination": "session"}]
    asked = _Held("permission", {"permission_suggestions": suggestions}, None, [])  # type: ignore[arg-type]
    out = decision_output(asked, "allow", None, None, True)["hookSpecificOutput"]
    assert out["hookEventName"] == "PermissionRequest"
    assert out["decision"] == {"behavior": "allow", "updatedPermissions": suggestions[:1]}, \
        "remember keeps the rule, never a change of mode"
    denied = decision_output(asked, "deny", None, "not here", False)["hookSpecificOutput"]
    assert denied["decision"] == {"behavior": "deny", "message": "not here"}
    question = _Held("question", {"tool_input": {"questions": [{"question": "Colour?"}]}}, None, [])  # type: ignore[arg-type]
    out = decision_output(question, None, "Blue", None, False)["hookSpecificOutput"]
    assert out["permissionDecision"] == "allow"
    assert out["updatedInput"]["answers"] == {"Colour?": "Blue"}
    plan = _Held("plan", {}, None, [])  # type: ignore[arg-type]
    out = decision_output(plan, "deny", None, None, False)["hookSpecificOutput"]
    assert out["permissionDecision"] == "deny" and out["permissionDecisionReason"]
