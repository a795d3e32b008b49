"""The real Claude Code CLI in a real PTY against the scripted local API stand-in.

What a user of the supervisor would check: the agent's reply shows on screen, the
Stop hook reports it (and its transcript holds the `[SEMO:DONE]` marker), a Bash
tool call asks for permission, approving it runs the command in the working dir.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .claude_home import last_assistant_text, read_hook_events
from .server import ScriptedAnthropicStandIn
from .terminal import PERMISSION_QUESTION, input_box

MARKER = "[SEMO:DONE]"


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, term=None) -> object:
    """Poll `predicate` until truthy; on timeout fail with the screen, if a terminal is given."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            screen = f"; screen:\n{term.text()}" if term is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{screen}")
        time.sleep(0.1)


def hook_events(log: Path, name: str) -> list[dict]:
    return [e for e in read_hook_events(log) if e.get("hook_event_name") == name]


def test_text_reply_shows_and_stop_hook_sees_marker(
    claude_session, standin: ScriptedAnthropicStandIn
) -> None:
    standin.reply_text(f"All finished here.\n{MARKER}")
    session = claude_session()
    term = session.term

    term.submit_prompt("Say that you are done.")

    term.wait_for(lambda s: "All finished here." in s and MARKER in s, 60, "the scripted reply on screen")
    stops = wait_until(lambda: hook_events(session.hook_log, "Stop"), 60, "the Stop hook", term)
    stop = stops[-1]
    assert stop["cwd"] == str(session.workdir)
    assert stop["_hook_cwd"] == str(session.workdir), "command hooks run in the project's directory"
    assert stop["stop_hook_active"] is False
    assert MARKER in stop["last_assistant_message"]

    transcript = Path(stop["transcript_path"])
    assert transcript.is_relative_to(session.home / ".claude" / "projects")
    final = wait_until(lambda: last_assistant_text(transcript), 30, "the assistant line in the transcript")
    assert MARKER in final

    # The scripted reply went to the conversation turn, which carried the typed prompt.
    mains = standin.main_requests()
    assert len(mains) == 1
    assert "Say that you are done." in mains[0].last_user_text()
    assert mains[0].body["stream"] is True
    prompts = hook_events(session.hook_log, "UserPromptSubmit")
    assert [p["prompt"] for p in prompts] == ["Say that you are done."]


def test_bash_tool_use_asks_permission_then_runs_in_workdir(
    claude_session, standin: ScriptedAnthropicStandIn
) -> None:
    tool_id = standin.reply_tool_use(
        "Bash", {"command": "touch semo_created.txt", "description": "Create semo_created.txt"},
        text="I will create the file.",
    )
    standin.reply_text(f"Created semo_created.txt.\n{MARKER}")
    session = claude_session()
    term = session.term

    term.submit_prompt("Create a file named semo_created.txt")

    screen = term.wait_for(lambda s: PERMISSION_QUESTION in s, 60, "the Bash permission prompt")
    assert "Bash command" in screen
    assert "touch semo_created.txt" in screen
    assert "1. Yes" in screen
    assert not (session.workdir / "semo_created.txt").exists(), "nothing runs before approval"
    asked = wait_until(lambda: hook_events(session.hook_log, "PermissionRequest"), 30, "the PermissionRequest hook",
                       term)
    assert asked[-1]["tool_input"]["command"] == "touch semo_created.txt"

    term.answer_permission("1")  # option 1 "Yes"; Enter (the highlighted default) works too

    wait_until(lambda: (session.workdir / "semo_created.txt").exists(), 60, "the approved command to run", term)
    term.wait_for(lambda s: "Created semo_created.txt." in s and MARKER in s, 60, "the follow-up reply")
    stop = wait_until(lambda: hook_events(session.hook_log, "Stop"), 60, "the Stop hook", term)[-1]
    assert MARKER in stop["last_assistant_message"]

    mains = standin.main_requests()
    assert len(mains) == 2
    results = mains[1].tool_results()
    assert [r["tool_use_id"] for r in results] == [tool_id]
    assert results[0]["is_error"] is False
    post = wait_until(lambda: hook_events(session.hook_log, "PostToolUse"), 30, "the PostToolUse hook", term)
    assert post[-1]["tool_use_id"] == tool_id


def test_api_error_shows_on_screen_and_fires_stop_failure(
    claude_session, standin: ScriptedAnthropicStandIn
) -> None:
    # claude_env() sets CLAUDE_CODE_MAX_RETRIES=0, so the first 500 is final.
    standin.reply_error(500, "scripted outage")
    session = claude_session()

    session.term.submit_prompt("Do something.")

    screen = session.term.wait_for(lambda s: "API Error: 500 scripted outage" in s, 60, "the API error on screen")
    assert "Resend your message to try again" in screen  # the input box's placeholder after a failure
    failure = wait_until(lambda: hook_events(session.hook_log, "StopFailure"), 60, "the StopFailure hook",
                         session.term)[-1]
    assert failure["error"] == "server_error"
    assert "API Error: 500 scripted outage" in failure["last_assistant_message"]
    assert not hook_events(session.hook_log, "Stop")
    assert len(standin.main_requests()) == 1


def test_escape_interrupts_a_slow_turn_and_puts_the_prompt_back(
    claude_session, standin: ScriptedAnthropicStandIn
) -> None:
    standin.reply_slow(60, "too late")
    standin.reply_text(f"Second try worked.\n{MARKER}")
    session = claude_session()
    term = session.term

    term.submit_prompt("A slow question")
    term.wait_for(lambda s: "esc to interrupt" in s, 30, "the turn to start")
    # The spinner shows before the request goes out: wait for the model call itself.
    assert standin.wait_for(lambda reqs: any(r.kind == "main" for r in reqs), 30), "no model request"
    term.write("\x1b")

    term.wait_for(lambda s: "esc to interrupt" not in s, 30, "the turn to stop")
    # Interrupted before any output, the turn is dropped and its prompt is put back in the box.
    term.wait_for(lambda s: (input_box(s.splitlines()) or "") == "A slow question", 10, "the prompt back in the box")
    assert not hook_events(session.hook_log, "Stop") and not hook_events(session.hook_log, "StopFailure")

    term.write("\x1b\x1b")  # Esc Esc clears a non-empty box (on an empty one it opens Rewind)
    term.wait_for(lambda s: input_box(s.splitlines()) == "", 10, "an empty input box")
    term.submit_prompt("Try again")
    term.wait_for(lambda s: "Second try worked." in s, 60, "the second reply")
    stop = wait_until(lambda: hook_events(session.hook_log, "Stop"), 60, "the Stop hook", term)[-1]
    assert MARKER in stop["last_assistant_message"]
    assert "Try again" in standin.main_requests()[-1].last_user_text()
