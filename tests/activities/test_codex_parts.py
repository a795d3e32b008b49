"""Codex's parts that need no CLI: its screen read from lines as 0.171.0 draws them
(docs/codex.md), its hooks on the command line, its rollout file read incrementally."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from activities.codex.config import hook_args, resume_args
from activities.codex.integration import CodexIntegration
from activities.codex.rollout import Cursor, is_rollout, read_lines, turn_error
from activities.codex.screen import composer, find_dialog, is_idle
from activities.codex.usage import read_new
from activities.usage import _Session
from semo.settings import AgentProfile, Settings

LOADING = ["  >_ OpenAI Cod", "     ~/work", "", "› Ask Codex to do anything", "",
           "  ? for shortcuts", "", ""]
READY = ["  >_ OpenAI Codex (v0.171.0)", "     ~/work", "", "› Ask Codex to do anything", "",
         "  gpt-5-codex default · ~/work · a long thread name that", "  wraps",
         "  ← for agents · ? for shortcuts        ⚠ 3 warnings · f2 to view", ""]
TRUST = ["  Folder access", "  /work", "",
         "  Trust this folder? Codex can read, edit, and run files here, subject to your",
         "  decision will be saved.", "", "› 1. Trust and continue",
         "  2. Back to Agent Command Center", "", "  enter continue · esc back"]
APPROVAL = ["› Make a file", "", "• Running echo hi > made.txt", "",
            "  Would you like to run the following command?", "", "  $ echo hi > made.txt", "",
            "› 1. Yes, proceed (y)", "  2. Yes, and don't ask again (p)",
            "  3. No, and tell Codex what to do differently (esc)", "",
            "  Press enter to confirm or esc to cancel"]
TYPED = ["› Remember kumquat.", "• Noted.", "", "› Build it. When you are done, print",
         "  [SEMO:DONE]", "  on a line of its own.", "  gpt-5-codex default · ~/work", ""]


def test_ready_is_the_composer_over_the_status_line_not_the_loading_frame() -> None:
    assert not is_idle(LOADING), "Codex draws this before it may show the trust screen"
    assert is_idle(READY) and composer(READY) == ""
    assert not is_idle(TRUST) and not is_idle(APPROVAL)


def test_dialogs_and_their_kinds() -> None:
    trust = find_dialog(TRUST)
    assert trust is not None and trust.kind() == "trust_folder" and trust.selected == 0
    assert trust.options == ("Trust and continue", "Back to Agent Command Center")
    approval = find_dialog(APPROVAL)
    assert approval is not None and approval.kind() == "permission"
    assert approval.options[0] == "Yes, proceed (y)"
    # an escalation's reason: the question is more rows above the options than are kept
    escalated = ["  Would you like to run the following command?", "", "  Environment: local",
                 "", "  Reason: run touch allowed.txt", "", "  $ touch allowed.txt", "", "",
                 *APPROVAL[-5:]]
    approval = find_dialog(escalated)
    assert approval is not None and "Would you like" not in " ".join(approval.text)
    assert approval.kind() == "permission"
    assert find_dialog(READY) is None


def test_the_composer_holds_a_multi_line_prompt_and_not_an_echo() -> None:
    assert composer(TYPED) == "Build it. When you are done, print\n  [SEMO:DONE]\n  on a line of its own."
    assert composer(APPROVAL) is None, "an echoed prompt with no status line under it"


def test_hooks_and_resume_go_on_the_command_line() -> None:
    args = hook_args("/usr/bin/python3 -I -S /x/relay.py # semo-sessions hook", 600)
    assert args[0] == "--dangerously-bypass-hook-trust"
    flags = args[1:]
    assert flags[0::2] == ["-c"] * 5 and "check_for_update_on_startup=false" in flags
    stop = next(a for a in flags[1::2] if a.startswith("hooks.Stop="))
    assert '"/usr/bin/python3 -I -S /x/relay.py # semo-sessions hook"' in stop
    permission = next(a for a in flags[1::2] if a.startswith("hooks.PermissionRequest="))
    assert "timeout=660" in permission, "a held decision outlasts the wait"
    assert resume_args("01a2-b3") == ["resume", "01a2-b3"] and resume_args(None) == []


def _line(ordinal: int, kind: str, payload: dict) -> str:
    return json.dumps({"timestamp": "2026-12-07T03:50:42.041Z", "ordinal": ordinal,
                       "type": kind, "payload": payload}) + "\n"


def test_the_rollout_is_read_incrementally_into_usage_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "sessions" / "2026" / "12" / "07" / "rollout-2026-12-07T03-50-35-abc.jsonl"
    path.parent.mkdir(parents=True)
    assert is_rollout(path) and not is_rollout(tmp_path / "rollout-x.jsonl")
    usage = {"input_tokens": 1500, "cached_input_tokens": 1200, "output_tokens": 40,
             "cache_write_input_tokens": 0}
    record = _line(3, "token_usage_record", {"turn_id": "t1", "response_id": "resp_1",
                                             "usage": usage})
    path.write_text(_line(1, "turn_context", {"turn_id": "t1", "model": "gpt-5-codex"})
                    + record[:40])  # a line still being written
    session = _Session("s1", "o1", transcript=path, jobs={"t1": "job-1"})
    assert read_new(session) == {}
    with path.open("a") as f:
        f.write(record[40:] + _line(4, "event_msg", {"type": "task_complete", "turn_id": "t1"}))
    found = read_new(session)
    r = found["resp_1"]
    assert (r.input_tokens, r.cache_read_input_tokens, r.output_tokens, r.model, r.job_id) == \
        (300, 1200, 40, "gpt-5-codex", "job-1"), "input excludes the cached tokens"
    assert "t1" in session.ended and read_new(session) == {}, "nothing is read twice"

    error = {"type": "task_complete", "turn_id": "t2", "last_agent_message": None,
             "error": {"message": json.dumps({"error": {"message": "model overloaded"}})}}
    with path.open("a") as f:
        f.write(_line(5, "event_msg", error))
    cursor = Cursor()
    errors = [e for e in map(turn_error, read_lines(path, cursor)) if e]
    assert errors == [("t2", "model overloaded")] and cursor.offset == path.stat().st_size


async def test_a_next_workers_driver_takes_up_the_turn_the_dead_workers_driver_knew(
        tmp_path: Path) -> None:
    """Which turn runs and where its rollout file is come from the prompt's hook, and no
    hook fires again until the next prompt: they are kept, so the driver of a next worker
    that adopts the agent still sees a refused turn (told only in the rollout file)."""
    path = tmp_path / "sessions" / "2026" / "12" / "07" / "rollout-2026-12-07T03-50-35-abc.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(_line(1, "turn_context", {"turn_id": "t1", "model": "gpt-5-codex"}))
    settings = Settings(home=tmp_path / "home", machine_id="m1")
    profile = AgentProfile(kind="codex", argv=["codex"], hooks=True)
    told: list = []
    integration = CodexIntegration(settings, SimpleNamespace(rows=40, cols=120),  # type: ignore[arg-type]
                                   lambda term, ev: told.append(ev))
    dead = integration._new_driver("s1", 0, tmp_path, profile, None)
    dead.on_hook({"hook_event_name": "UserPromptSubmit", "session_id": "conv-0001-abcd",
                  "turn_id": "t2", "transcript_path": str(path), "prompt": "Summarise"})
    await dead.close()
    assert integration.last_turn("s1") == ("t2", path)
    assert integration.conversation("s1") == "conv-0001-abcd"

    error = {"type": "task_complete", "turn_id": "t2", "error": {"message": "refused"}}
    with path.open("a") as f:  # the turn refused while no worker listened
        f.write(_line(2, "event_msg", {"type": "task_complete", "turn_id": "t1"})
                + _line(3, "event_msg", error))
    adopted = integration._new_driver("s1", 0, tmp_path, profile, None)
    adopted.term = SimpleNamespace(job_id=None, offset=0, busy=True,  # type: ignore[assignment]
                                   waiting=False)
    adopted.job_open, adopted._usage_waits = True, True  # as adopt() leaves them
    taps: list = []
    adopted.tap = lambda event, job_id: taps.append((event, job_id))
    adopted.resume_turn(*integration.last_turn("s1"))
    await adopted._read_rollout()
    adopted.on_hook({"hook_event_name": "SessionStart", "transcript_path": str(path)})
    assert taps == [], "usage waits for the job's name"
    adopted.resume("job-1")  # the session re-attached: job-1 runs
    await adopted.close()
    assert [(ev.kind, ev.data["reason"]) for ev in told] == [("error", "refused")]
    assert taps == [({"hook_event_name": "UserPromptSubmit", "turn_id": "t2",
                      "transcript_path": str(path)}, "job-1")], "the turn is the job's"

    integration.forget("s1")
    assert integration.last_turn("s1") == (None, None)
