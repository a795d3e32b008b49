"""OutputMonitor: events from raw terminal bytes. Pure, so no fixtures, sleeps or processes."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from activities.monitor import (
    LINE_CAP,
    MonitorEvent,
    OutputMonitor,
    Pattern,
    PatternSet,
    strip_terminal_escapes,
)

CLAUDE = PatternSet.for_agent("claude")
SHELL = PatternSet.for_agent("shell")

# Excerpts (trimmed) of what Claude Code 2.1.330 wrote to its PTY, driven against the local
# stand-in in tests/claude_standin. Note the words placed with CSI n G instead of blanks, the
# frame redrawn with cursor moves, and the marker line reached with a cursor-down.
CLAUDE_PERMISSION = (
    b"\x1b[2Grm\x1b[5G-rf\x1b[9Gbuild\x1b[15G&&\x1b[18Ggit\x1b[22Gcommit\x1b[29G-m\x1b[32Gwip\r\r\n"
    b"\x1b[2GThis\x1b[7Gcommand\x1b[15Grequires\x1b[24Gapproval\r\r\n\r\r\n"
    b"\x1b[2GDo\x1b[5Gyou\x1b[9Gwant\x1b[14Gto\x1b[17Gproceed?\r\r\n"
    b"\x1b[2G\x1b[38;5;153m\xe2\x9d\xaf\x1b[4G\x1b[38;5;246m1.\x1b[7G\x1b[38;5;153mYes"
    b"\x1b[39m\r\r\n"
    b"\x1b[4G\x1b[38;5;246m4.\x1b[7G\x1b[39mNo\r\r\n\r\r\n"
    b"\x1b[2G\x1b[38;5;246mEsc\x1b[6Gto\x1b[9Gcancel\x1b[39m\r\r\n\x1b[1C\x1b[6A\x1b(B\x0f"
)
CLAUDE_DONE = (
    b"\x1b[2C\x1b[3A\x1b]0;\xe2\x9c\xb3 Scripted session\x07\x1b[2D\x1b[3B\r\x1b[6A"
    b"\x1b[38;5;231m\xe2\x97\x8f\x1b[3G\x1b[39mOpened \x1b]8;id=11f8pov;"
    b"https://github.com/acme/app/pull/42\x07https://github.com/acme/app/pull/42\x1b]8;;\x07"
    b"\r\x1b[2B  [SEMO:DONE]\x1b[K\r\x1b[1B\x1b[K\r\x1b[1B\x1b[38;5;246m\xe2\x9c\xbb\x1b[39m "
    b"\x1b[38;5;246mCogitated for 0s\x1b[39m\x1b[K\r\x1b[2C\x1b[1B\x1b[K\r\r\n"
)
CLAUDE_TRUST = (
    b"\x1b[2GQuick\x1b[8Gsafety\x1b[15Gcheck:\x1b[22GIs\x1b[25Gthis\x1b[30Ga\x1b[32Gproject"
    b"\x1b[40Gyou\x1b[44Gcreated\x1b[52Gor\x1b[55Gone\x1b[59Gyou\x1b[63Gtrust?\x1b[70G(Like"
    b"\x1b[76Gyour\x1b[81Gown\x1b[85Gcode)\r\r\n\r\r\n"
    b"\x1b[2G\x1b]8;id=zaxmda;https://code.claude.com/docs/en/security\x07\x1b[38;5;246m"
    b"Security guide\x1b[39m\x1b]8;;\x07\r\r\n\r\r\n"
    b"\x1b[2G\x1b[38;5;153m\xe2\x9d\xaf\x1b[4GNo,\x1b[8Gexit\x1b[39m\r\r\n"
    b"\x1b[4GYes,\x1b[9GI\x1b[11Gtrust\x1b[17Gthis\x1b[22Gfolder\r\r\n\r\r\n"
    b"\x1b[2G\x1b[38;5;246mEnter\x1b[8Gto\x1b[11Gconfirm\x1b[19G\xc2\xb7\x1b[21GEsc\x1b[25Gto"
    b"\x1b[28Gcancel\x1b[39m\r\r\n\x1b[1C\x1b[4A\x1b[>0q\x1b[?u\x1b]7501;?\x07\x1b[c"
)
CLAUDE_API_ERROR = (
    b"\x1b[38;5;246m\xe2\x9c\xbb 500 Internal server error \xc2\xb7 retrying in 1s "
    b"\xc2\xb7 attempt 1/1\x1b[39m\x1b[K\r\n"
    b"\x1b[38;5;211m\xe2\x97\x8f\x1b[3GAPI\x1b[7GError:\x1b[14G500\x1b[18GInternal"
    b"\x1b[27Gserver\x1b[34Gerror.\x1b[39m\x1b[K\r\r\n"
)


def run(stream: bytes, cuts: list[int] | None = None, *, typed: tuple[str, ...] = (),
        patterns: PatternSet = CLAUDE, **kw) -> list[tuple[str, dict, int]]:
    """Feed `stream` split at `cuts` (None: in one piece); the events as tuples."""
    mon = OutputMonitor(patterns, **kw)
    for t in typed:
        mon.expect_echo(t)
    events: list[MonitorEvent] = []
    pos = 0
    for cut in sorted(set(cuts or [])) + [len(stream)]:
        events += mon.feed(stream[pos:cut])
        pos = cut
    assert mon.offset == len(stream)
    return [(e.kind, e.data, e.offset) for e in events]


def kinds(events: list[tuple[str, dict, int]]) -> list[tuple[str, dict]]:
    return [(k, d) for k, d, _ in events]


def bytewise(stream: bytes, **kw) -> list[tuple[str, dict, int]]:
    return run(stream, list(range(1, len(stream))), **kw)


# --- strip_terminal_escapes -------------------------------------------------------------------


def test_strip_terminal_escapes():
    assert strip_terminal_escapes(b"\x1b[31mred\x1b[0m plain\r\n") == "red plain\n"
    assert strip_terminal_escapes(b"10%\r50%\r100%\r\nnext") == "100%\nnext"
    assert strip_terminal_escapes(b"Do\x1b[6Gyou\x1b[3Cwant") == "Do you want"
    osc_dcs = b"\x1b]0;title\x07a\x1b]8;;https://x\x1b\\b\x1bP1$r\x1b\\c"
    assert strip_terminal_escapes(osc_dcs) == "abc"
    assert strip_terminal_escapes(b"a\x1b(Bb\x1b7c\x07d\x00e") == "abcde"
    assert strip_terminal_escapes(b"bad \xff\xfe byte") == "bad \ufffd\ufffd byte"
    assert strip_terminal_escapes("\x1b[1m⏺\x1b[0m done") == "⏺ done"
    assert strip_terminal_escapes(b"cut off \x1b[3") == "cut off "


# --- completion -------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"[SEMO:DONE]\r\n",
    b"   [SEMO:DONE]  \n",
    b"\x1b[32m[SEMO:DONE]\x1b[0m\r\n",
    b"\x1b[1m[SEMO:\x1b[0mDONE]\r\n",  # an escape inside the marker
    b"working...\r[SEMO:DONE]\r\n",  # lone CR: the rewritten line
    b"old frame\x1b[2K\x1b[1A\x1b[2K\x1b[G[SEMO:DONE]\r\n",  # Ink's erase, then the line
])
def test_marker_completes(line):
    for patterns in (CLAUDE, SHELL):
        assert run(b"hello\r\n" + line, patterns=patterns) == [
            ("completion", {"kind": "marker", "text": "[SEMO:DONE]"}, 7 + len(line))]


def test_marker_in_tool_output_is_not_the_agents():
    assert run("  ⎿  [SEMO:DONE]\r\n".encode()) == []


def test_marker_after_claude_bullet_counts_for_claude_only():
    line = "\x1b[1m⏺\x1b[0m \x1b[32m[SEMO:DONE]\x1b[0m\r\n".encode()
    assert kinds(run(line)) == [("completion", {"kind": "marker", "text": "⏺ [SEMO:DONE]"})]
    assert kinds(run("● `[SEMO:DONE]`\n".encode())) == [
        ("completion", {"kind": "marker", "text": "● `[SEMO:DONE]`"})]
    assert run(line, patterns=SHELL) == []


@pytest.mark.parametrize("text", [
    b"I will print [SEMO:DONE] when I am done\n",
    b"[SEMO:DONE] and more\n",
    b"echo [SEMO:DONE]\n",
    b"[SEMO:DONE]",  # not finished yet
])
def test_marker_not_on_a_line_of_its_own(text):
    assert run(text) == []


def test_claude_output_completes_with_pr_and_marker():
    events = run(CLAUDE_DONE)
    assert kinds(events) == [
        ("completion", {"kind": "pr_created",
                        "text": "● Opened https://github.com/acme/app/pull/42",
                        "url": "https://github.com/acme/app/pull/42"}),
        ("completion", {"kind": "marker", "text": "[SEMO:DONE]"}),
    ]
    # offsets point just after the line end of each line
    assert CLAUDE_DONE[: events[0][2]].endswith(b"\r")
    assert CLAUDE_DONE[: events[1][2]].endswith(b"[SEMO:DONE]\x1b[K")
    assert bytewise(CLAUDE_DONE) == events


def test_pr_url_completes_once_per_turn():
    url = "https://github.com/o/r/pull/7"
    stream = f"Created {url}\r\nsee {url}\r\n".encode()
    assert kinds(run(stream)) == [
        ("completion", {"kind": "pr_created", "text": f"Created {url}", "url": url})]
    mon = OutputMonitor(SHELL)
    assert len(mon.feed(stream)) == 1
    mon.note_input()  # a new turn: the same URL counts again
    assert len(mon.feed(stream)) == 1


def test_commit_is_a_job_event_unless_configured_to_complete():
    line = b"[feature/x 1a2b3c4] Fix the parser\r\n"
    data = {"kind": "commit", "text": "[feature/x 1a2b3c4] Fix the parser", "branch": "feature/x",
            "sha": "1a2b3c4", "message": "Fix the parser"}
    assert kinds(run(line)) == [("commit", data)]
    assert kinds(run(line, commit_completes=True)) == [("completion", data)]
    root = run(b"[main (root-commit) 0123abcd] init\n", patterns=SHELL)
    assert root[0][0] == "commit" and root[0][1]["sha"] == "0123abcd"
    # rendered with a cursor move for the blank, under a Claude tool-result corner
    gap = "  ⎿  [main\x1b[9G1a2b3c4]\x1b[18Gwip\r\n".encode()
    assert run(gap)[0][1]["sha"] == "1a2b3c4"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("patterns", [CLAUDE, SHELL])
def test_error_marker(patterns):
    assert kinds(run(b"[SEMO:ERROR] tests keep failing\r\n", patterns=patterns)) == [
        ("error", {"reason": "tests keep failing", "text": "[SEMO:ERROR] tests keep failing"})]
    assert run(b"[SEMO:ERROR]\n", patterns=patterns)[0][1]["reason"] == "[SEMO:ERROR]"
    assert run(b"Print [SEMO:ERROR] reason if you give up\n", patterns=patterns) == []


@pytest.mark.parametrize(("prefix", "reason"), [
    ("● ", "API Error: 529 Overloaded"),
    ("  ⎿  ", "API Error: Request rejected (429) · rate limited"),
    ("", "Credit balance is too low"),
    ("  ⎿ \xa0", "Invalid API key · Fix external API key"),
    ("", "Claude usage limit reached. Your limit will reset at 5pm"),
    ("", "5-hour limit reached ∙ resets 3pm"),
    ("● ", "Rate limited: try again later"),
    ("  ⎿  ", "Prompt is too long · the request is ~300000 tokens"),
])
def test_claude_agent_errors(prefix, reason):
    line = prefix + reason
    events = run(f"{line}\r\n".encode())
    assert kinds(events) == [("error", {"reason": reason, "text": line.strip()})]
    assert run(f"{line}\r\n".encode(), patterns=SHELL) == []  # the generic set does not guess


def test_claude_api_error_as_claude_renders_it():
    events = run(CLAUDE_API_ERROR)
    assert [(k, d["reason"]) for k, d in kinds(events)] == [
        ("error", "API Error: 500 Internal server error.")]  # the retry notice is not one


@pytest.mark.parametrize("line", [
    "✻ 500 Internal server error · retrying in 1s · attempt 1/1",
    "  ⎿  API Error (Request timed out.) · Retrying in 1 seconds… (attempt 1/10)",
    "● I added rate limiting to the API and fixed the API Error handling.",
    "● API Error handling now retries",
    "● Invalid API keys are rejected with a 401 now",
    "We saw an API Error: 500 earlier; it is handled now",
    "  ⎿  [SEMO:ERROR] this is tool output, not the agent's reply",
])
def test_claude_text_that_is_not_an_error(line):
    assert run(f"{line}\r\n".encode()) == []


# --- waiting for input ------------------------------------------------------------------------


def test_prompt_without_newline_is_seen_at_once_and_once():
    mon = OutputMonitor(CLAUDE)
    events = mon.feed(b"\x1b[1mDo you want to proceed?\x1b[0m")
    assert events == [MonitorEvent("waiting_input", {"question": "Do you want to proceed?"},
                                   len(b"\x1b[1mDo you want to proceed?"))]
    # the TUI repaints the same question: no duplicate
    assert mon.feed(b"\x1b[0m\r\n\x1b[2K\x1b[1ADo you want to proceed?\r\n") == []
    assert mon.feed(b"\rDo you want to proceed?") == []
    # once we answered, the same question counts again
    mon.note_input()
    assert [e.kind for e in mon.feed(b"\r\nDo you want to proceed?")] == ["waiting_input"]


@pytest.mark.parametrize(("text", "question"), [
    (b"Overwrite config.yml? (y/n) ", "Overwrite config.yml? (y/n)"),
    (b"Continue [Y/n] ", "Continue [Y/n]"),
    (b"Delete branch? [y/N]: ", "Delete branch? [y/N]"),
    (b"Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
     "Are you sure you want to continue connecting (yes/no/[fingerprint])"),
    (b"[sudo] password for dev: ", "[sudo] password for dev:"),
    (b"\x1b[2GDo\x1b[5Gyou\x1b[9Gwant\x1b[14Gto\x1b[17Gmake\x1b[22Gthis\x1b[27Gedit\x1b[32Gto"
     b"\x1b[35Gapp.py?", "Do you want to make this edit to app.py?"),
])
def test_prompts(text, question):
    for patterns in (CLAUDE, SHELL):
        events = run(text, patterns=patterns)
        assert kinds(events) == [("waiting_input", {"question": question})]
        assert bytewise(text, patterns=patterns) == events


def test_claude_permission_dialog():
    events = run(CLAUDE_PERMISSION)
    assert kinds(events) == [("waiting_input", {"question": "Do you want to proceed?"})]
    assert CLAUDE_PERMISSION[: events[0][2]].endswith(b"proceed?")
    assert bytewise(CLAUDE_PERMISSION) == events


def test_claude_trust_dialog():
    question = "Quick safety check: Is this a project you created or one you trust?"
    events = run(CLAUDE_TRUST)
    assert kinds(events) == [("waiting_input", {"question": question})]
    assert bytewise(CLAUDE_TRUST) == events
    # the dialog's footer alone also says that it waits, with the question above it
    footer_only = CLAUDE_TRUST.replace(b"one\x1b[59Gyou\x1b[63Gtrust?", b"one\x1b[59Gyou?")
    assert kinds(run(footer_only)) == [("waiting_input", {
        "question": "Quick safety check: Is this a project you created or one you?"})]


def test_trust_dialog_and_menus_take_the_question_above():
    trust = ("│ Do you trust the files in this folder?   │\r\n"
             "│ ❯ 1. Yes, proceed                        │\r\n"
             "│   2. No, exit                            │\r\n").encode()
    assert kinds(run(trust)) == [
        ("waiting_input", {"question": "Do you trust the files in this folder?"})]
    menu = ("Quick safety check: Is this a project you created or one you trust?\r\n\r\n"
            " ❯ 1. Yes, I trust this folder\r\n   2. No, exit\r\n").encode()
    assert kinds(run(menu)) == [("waiting_input", {
        "question": "Quick safety check: Is this a project you created or one you trust?"})]
    theme = "Choose the text style:\r\n\x1b[36m❯\x1b[0m 1. Dark mode".encode()
    assert kinds(run(theme)) == [("waiting_input", {"question": "Choose the text style:"})]


def test_question_mark_alone_is_not_a_prompt():
    assert run(b"What does this function do? It parses.\r\nWhy?") == []


# --- echo -------------------------------------------------------------------------------------


def test_bare_echo_is_discounted_once():
    # typed into a program without a prompt: the terminal echoes the line, then the program
    # prints it (cat)
    stream = b"[SEMO:DONE]\r\n[SEMO:DONE]\r\n"
    events = run(stream, typed=("[SEMO:DONE]",), patterns=SHELL)
    assert events == [("completion", {"kind": "marker", "text": "[SEMO:DONE]"}, len(stream))]
    assert run(stream[:13], typed=("[SEMO:DONE]",), patterns=SHELL) == []


def test_shell_echo_of_a_command_does_not_count_but_its_output_does():
    stream = b"$ echo [SEMO:DONE]\r\n[SEMO:DONE]\r\n$ "
    events = run(stream, typed=("echo [SEMO:DONE]",), patterns=SHELL)
    assert events == [("completion", {"kind": "marker", "text": "[SEMO:DONE]"}, len(stream) - 2)]
    # a marker typed at the prompt: the echo never counts, bash's complaint is no marker
    stream = b"user@box:~/repo$ [SEMO:DONE]\r\nbash: [SEMO:DONE]: command not found\r\n"
    assert run(stream, typed=("[SEMO:DONE]",), patterns=SHELL) == []


def test_claude_input_box_and_transcript_echo_never_count():
    typed = "[SEMO:DONE]"
    stream = (
        # the input box: Claude leaves "❯ " on screen and writes just the text (a bare echo)
        b"\x1b[2C\x1b[3A[SEMO:DONE]\x1b[7m \r\x1b[38C\x1b[2B\x1b[27m   \r\r\n"
        # the transcript copy, decorated (shown twice here: a decorated echo never counts)
        b"\x1b[48;5;237m\x1b[38;5;246m\xe2\x9d\xaf \x1b[38;5;231m[SEMO:DONE]\x1b[39m      \r\x1b[1B"
        b"\x1b[38;5;246m\xe2\x9d\xaf\xc2\xa0[SEMO:DONE]\r\r\n"
    )
    assert run(stream, typed=(typed,)) == []
    assert run(stream) != []  # without expect_echo these would count
    reply = "\x1b[38;5;231m●\x1b[3G\x1b[39mDone.\x1b[K\r\x1b[2B  [SEMO:DONE]\x1b[K\r\n".encode()
    assert kinds(run(stream + reply, typed=(typed,))) == [
        ("completion", {"kind": "marker", "text": "[SEMO:DONE]"})]


def test_pr_url_in_the_prompt_is_not_a_completion():
    typed = "review https://github.com/o/r/pull/5 and fix it"
    stream = ("❯ review https://github.com/o/r/pull/5 and fix it\r\n" * 3
              + "│ > review https://github.com/o/r/pull/5 and fix it   │\r\n"
              + "● Opened https://github.com/o/r/pull/6\r\n").encode()
    assert kinds(run(stream, typed=(typed,))) == [
        ("completion", {"kind": "pr_created", "text": "● Opened https://github.com/o/r/pull/6",
                        "url": "https://github.com/o/r/pull/6"})]


def test_echo_is_compared_with_blanks_collapsed():
    typed = "fix  the bug in https://github.com/o/r/pull/3"
    stream = "❯\xa0fix\x1b[6Gthe\x1b[10Gbug in https://github.com/o/r/pull/3   \r\n".encode()
    assert run(stream, typed=(typed,)) == []


def test_prompt_text_inside_an_echo_is_not_waiting_input():
    typed = "answer (y/n) questions with y"
    stream = b"$ answer (y/n)"
    assert run(stream, typed=(typed,), patterns=SHELL) == []  # may still become the echo
    full = stream + b" questions with y\r\n"
    assert run(full, typed=(typed,), patterns=SHELL) == []
    assert bytewise(full, typed=(typed,), patterns=SHELL) == []
    assert kinds(run(full, patterns=SHELL)) == [
        ("waiting_input", {"question": "$ answer (y/n)"})]
    # a prompt the program printed before our (echoed) answer still counts
    answered = b"Overwrite? (y/n) y\r\n"
    assert kinds(run(answered, typed=("y",), patterns=SHELL)) == [
        ("waiting_input", {"question": "Overwrite? (y/n)"})]


def test_multi_line_typed_text_each_line_is_echo():
    typed = "first line\nhttps://github.com/o/r/pull/1\n[SEMO:DONE]"
    stream = b"> first line\r\n> https://github.com/o/r/pull/1\r\n> [SEMO:DONE]\r\n"
    assert run(stream, typed=(typed,), patterns=SHELL) == []


def test_a_pasted_prompt_with_the_marker_does_not_eat_the_agents_marker():
    typed = "Create x.\nWhen you are done, print\n[SEMO:DONE]"
    stream = ("❯ [Pasted text #1 +2 lines]\r\n"
              "\x1b[38;5;231m●\x1b[3G\x1b[39mCreated x.\x1b[K\r"
              "\x1b[2B  [SEMO:DONE]\x1b[K\r\n").encode()
    assert kinds(run(stream, typed=(typed,))) == [
        ("completion", {"kind": "marker", "text": "[SEMO:DONE]"})]


# --- terminal correctness ---------------------------------------------------------------------


def test_utf8_split_across_reads():
    line = "● [SEMO:DONE]\r\n".encode()
    mon = OutputMonitor(CLAUDE)
    assert mon.feed(line[:1]) == [] and mon.feed(line[1:2]) == []
    assert [e.data["text"] for e in mon.feed(line[2:])] == ["● [SEMO:DONE]"]


def test_invalid_bytes_are_replaced_never_raised():
    events = run(b"\xff\xfe\r\n[SEMO:ERROR] bad \xff\xc3 byte\r\n\xc3")
    assert kinds(events) == [("error", {"reason": "bad \ufffd\ufffd byte",
                                        "text": "[SEMO:ERROR] bad \ufffd\ufffd byte"})]


def test_escapes_split_anywhere_give_the_same_events():
    stream = (b"\x1b]0;\xe2\x9c\xb3 title\x07\x1bP1$r0m\x1b\\\x1b[38;2;10;20;30m\xe2\x97\x8f"
              b"\x1b[3G\x1b]8;;https://github.com/a/b/pull/3\x1b\\https://github.com/a/b/pull/3"
              b"\x1b]8;;\x1b\\\x1b[39m\r\n\x1b(B\x1b7[SEMO:DONE]\x1b8\x1b[K\r\n")
    events = run(stream)
    assert [d["kind"] for _, d in kinds(events)] == ["pr_created", "marker"]
    assert bytewise(stream) == events


def test_lone_cr_and_backspace():
    assert kinds(run(b"[SEMO:DONE]\rxx\r\n")) == [
        ("completion", {"kind": "marker", "text": "[SEMO:DONE]"})]  # it was on screen
    assert run(b"ab\x08\x08[SEMO:DONE]\n") == []  # backspaces are dropped, not emulated


def test_offsets_are_stream_positions():
    prefix = b"\x1b[1mnoise\x1b[0m\r\n" * 3
    stream = prefix + b"[SEMO:ERROR] x\r\n" + b"Proceed? (y/n)"
    events = run(stream)
    assert [(k, o) for k, _, o in events] == [("error", len(prefix) + 16),
                                              ("waiting_input", len(stream))]


# --- bounded memory ---------------------------------------------------------------------------


def test_a_line_that_never_ends_keeps_bounded_memory():
    mon = OutputMonitor(CLAUDE)
    chunk = b"x" * 65536
    for _ in range(800):  # 50 MiB without a line end
        assert mon.feed(chunk) == []
    assert len(mon._line) <= LINE_CAP and not mon._hold
    assert [e.kind for e in mon.feed(b"\r\n[SEMO:DONE]\r\n")] == ["completion"]
    mon.feed(b"\x1b]0;" + b"t" * 100_000)  # an OSC that never ends
    assert len(mon._hold) <= 8192 and len(mon._line) <= LINE_CAP
    assert mon.offset == 800 * 65536 + 15 + 4 + 100_000


def test_long_lines_are_matched_on_their_end():
    prompt = " Continue? (y/n)"
    assert kinds(run(b"y" * 20000 + prompt.encode())) == [
        ("waiting_input", {"question": "y" * (LINE_CAP - len(prompt)) + prompt})]
    assert run(b"[SEMO:ERROR] " + b"z" * 20000 + b"\n") == []  # its start is gone


# --- stall ------------------------------------------------------------------------------------


def test_stall_once_per_quiet_period():
    mon = OutputMonitor(CLAUDE, stall_after_s=30)
    assert mon.check_stall(0, busy=True) is None  # busy from now on
    mon.feed(b"x", now=0)
    assert mon.check_stall(10, busy=True) is None
    ev = mon.check_stall(31, busy=True)
    assert ev == MonitorEvent("stall", {"idle_s": 31.0}, 1)
    assert mon.check_stall(60, busy=True) is None  # one per quiet period
    mon.feed(b"y", now=70)
    assert mon.check_stall(90, busy=True) is None
    assert mon.check_stall(100, busy=True).data == {"idle_s": 30.0}
    assert mon.check_stall(500, busy=False) is None  # idle sessions do not stall
    assert mon.check_stall(510, busy=True) is None  # busy again: the clock starts now
    assert mon.check_stall(541, busy=True).data == {"idle_s": 31.0}


def test_stall_with_output_fed_without_a_clock():
    mon = OutputMonitor(CLAUDE, stall_after_s=5)
    mon.check_stall(0, busy=True)
    mon.feed(b"output")  # no time given: the next check counts as when it came
    assert mon.check_stall(4, busy=True) is None
    assert mon.check_stall(8, busy=True) is None
    assert mon.check_stall(9, busy=True).kind == "stall"
    assert OutputMonitor(CLAUDE).check_stall(1e9, busy=True) is None  # not configured


# --- patterns ---------------------------------------------------------------------------------


def test_for_agent_defaults():
    assert PatternSet.for_agent("claude").name == "claude"
    assert PatternSet.for_agent("shell").name == "shell"
    assert PatternSet.for_agent("codex").name == "shell"
    assert OutputMonitor().patterns.name == "claude"


def test_from_config_adds_patterns():
    ps = PatternSet.from_config({
        "base": "shell",
        "completion": [{"pattern": r"^ALL (?:GREEN|DONE)$", "kind": "build"}],
        "error": [r"^FATAL: (?P<reason>.+)$"],
        "waiting": [{"pattern": r"continue\?", "hints": ["ontinue"], "ignore_case": True}],
    })
    events = run(b"ALL GREEN\nFATAL: disk full\n[SEMO:DONE]\nCONTINUE?", patterns=ps)
    assert kinds(events) == [
        ("completion", {"kind": "build", "text": "ALL GREEN"}),
        ("error", {"reason": "disk full", "text": "FATAL: disk full"}),
        ("completion", {"kind": "marker", "text": "[SEMO:DONE]"}),
        ("waiting_input", {"question": "CONTINUE?"}),
    ]


def test_from_config_replace_and_hintless_patterns():
    ps = PatternSet.from_config({"base": "claude", "replace": True, "completion": [r"^\w+!$"]})
    assert ps.completion[0].hints == ()  # nothing literal: every line is a candidate
    assert kinds(run(b"[SEMO:DONE]\nShipped!\n", patterns=ps)) == [
        ("completion", {"kind": "marker", "text": "Shipped!"})]
    assert run(b"API Error: 500\n", patterns=ps)[0][0] == "error"  # errors kept
    # a line that a TUI starts by erasing the one before, inside one CR/LF line
    assert kinds(run(b"working...\x1b[2K\x1b[GShipped!\n", patterns=ps)) == [
        ("completion", {"kind": "marker", "text": "Shipped!"})]
    assert PatternSet.from_config({"base": "none"}).completion == ()


def test_hints_are_derived_from_the_regex():
    assert Pattern.make(r"^\d+ tests? failed$").hints == ("failed",)
    assert set(Pattern.make(r"^Build (?:succeeded|passed)!").hints) == {"succeeded", "passed"}
    assert Pattern.make(r"(?i:abc)d").hints == ()
    ps = PatternSet(completion=(Pattern.make(r"^\d+ tests? passed$", kind="tests"),))
    assert kinds(run(b"12 tests \x1b[32mpassed\x1b[0m\n", patterns=ps)) == [
        ("completion", {"kind": "tests", "text": "12 tests passed"})]


@pytest.mark.parametrize("config", [
    {"colour": "red"},
    {"completion": "^x$"},
    {"completion": [{"pattern": "("}]},
    {"completion": [{"pattern": "x", "hints": []}]},
    {"completion": [{"pattern": "x", "hints": [""]}]},
    {"error": [{"regex": "x"}]},
    {"waiting": [{"pattern": "x", "kind": 3}]},
    {"base": 7},
    {"replace": "yes"},
    [],
])
def test_from_config_rejects_bad_input(config):
    with pytest.raises(ValueError):
        PatternSet.from_config(config)


def test_a_long_realistic_session_splits_any_way():
    rng = random.Random(7)
    frame = (b"\x1b[2K\x1b[1A" * 4 + b"\x1b[2K\x1b[G\x1b[38;5;174m\xe2\x9c\xbb\x1b[39m Thinking"
             b"\xe2\x80\xa6 \x1b[2m(3s \xc2\xb7 esc to interrupt)\x1b[22m\r\r\n"
             + "\x1b[2m╭" .encode() + "─".encode() * 60 + "╮\x1b[22m\r\r\n".encode()
             + "│ \x1b[7m \x1b[27m".encode() + b" " * 57 + "│\r\r\n╰".encode()
             + "─".encode() * 60 + "╯\r\r\n  ? for shortcuts".encode())
    parts = [frame] * 40 + [CLAUDE_PERMISSION, CLAUDE_DONE, CLAUDE_API_ERROR,
                            "● Working on \x1b[1mit\x1b[22m\r\r\n".encode(),
                            b"\x1b[38;5;246m[main 1a2b3c4] wip\x1b[39m\r\r\n"]
    stream = b"".join(b"\x1b[2K\x1b[G" + rng.choice(parts) for _ in range(400))
    whole = run(stream, commit_completes=True)
    assert {d["kind"] if k == "completion" else k for k, d, _ in whole} == {
        "waiting_input", "pr_created", "marker", "commit", "error"}
    for _ in range(5):
        cuts, pos = [], 0
        while pos < len(stream):
            pos += rng.choice([1, 2, 3, 7, 64, 1000, 4096, 65536])
            cuts.append(pos)
        assert run(stream, [c for c in cuts if c < len(stream)], commit_completes=True) == whole


# --- properties -------------------------------------------------------------------------------

PIECES = [
    b"[SEMO:DONE]", b"[SEMO:ERROR] boom", "⏺ ".encode(), "● ".encode(), b"  ", b"x", b"word",
    b"https://github.com/o/r/pull/12", b"[main abc1234] fix it", b"Do you want to proceed?",
    b"Overwrite? (y/n) ", "❯ 1. Yes".encode(), b"Pick one:", b"API Error: 500 boom",
    b"echo [SEMO:DONE]", b"$ ", b"> ", b"\r\n", b"\n", b"\r", b"\r\r\n",
    b"\x1b[1m", b"\x1b[38;2;1;2;3m", b"\x1b[0m", b"\x1b[2K", b"\x1b[1A", b"\x1b[G", b"\x1b[5G",
    b"\x1b[3C", b"\x1b[K", b"\x1b]0;title\x07", b"\x1b]8;;https://x/pull/1\x1b\\",
    b"\x1bP1$r\x1b\\", b"\x1b(B", b"\x1b7", b"\x1b", b"\x1b[", b"\x1b]", b"\xff", b"\xe2\x9d",
    "é❯".encode(), b"\x08", b"\t", b"\x00",
]
TYPED = ["", "[SEMO:DONE]", "echo [SEMO:DONE]", "Overwrite? (y/n) y", "Do you want to proceed?",
         "https://github.com/o/r/pull/12"]

streams = st.lists(st.sampled_from(PIECES), min_size=8, max_size=80).map(b"".join)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def split_streams(draw, source=streams):
    stream = draw(source)
    cuts = draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=20)) if stream else []
    return stream, cuts


@SETTINGS
@given(split_streams(), st.sampled_from([CLAUDE, SHELL]), st.sampled_from(TYPED),
       st.booleans())
def test_chunking_never_changes_events(case, patterns, typed, commit_completes):
    stream, cuts = case
    kw = {"patterns": patterns, "typed": (typed,) if typed else (),
          "commit_completes": commit_completes}
    whole = run(stream, **kw)
    assert run(stream, cuts, **kw) == whole
    assert bytewise(stream, **kw) == whole  # every split point at once


@SETTINGS
@given(split_streams(st.binary(min_size=64, max_size=3000)))
def test_random_bytes_never_crash_and_chunking_does_not_matter(case):
    stream, cuts = case
    whole = run(stream)
    assert run(stream, cuts) == whole
    assert bytewise(stream[:600]) == run(stream[:600])
    for kind, data, offset in whole:
        assert kind in {"completion", "commit", "error", "waiting_input"}
        assert 0 < offset <= len(stream)
        assert all(isinstance(v, str) for v in data.values())


STYLES = [b"", b"\x1b[1m", b"\x1b[0m", b"\x1b[38;5;174m", b"\x1b]0;t\x07", b"\x1b[?25l"]
WORDS = [b"[SEMO:DONE]", b"[SEMO:ERROR] boom", b"https://github.com/o/r/pull/3", b"Continue (y/n)",
         b"[main abc1234] msg", b"text", "● ".encode(), b" ", b"\r\n", b"\n"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(STYLES), st.sampled_from(WORDS)),
                min_size=4, max_size=40))
def test_styling_between_words_never_changes_events(pairs):
    plain = b"".join(w for _, w in pairs)
    styled = b"".join(s + w for s, w in pairs)
    assert kinds(run(styled)) == kinds(run(plain))


@SETTINGS
@given(streams, st.data())
def test_lines_with_hits_are_the_lines_every_escape_would_give(stream, data):
    """The monitor visits only the lines a hint starts in (a TUI frame has hundreds of line
    escapes); they are exactly the lines splitting at every line escape gives that hold a
    hit, with their bounds."""
    from activities.monitor.engine import _segments_with_hits
    from semo.terminal_text import LINE_ESC_RE

    end = len(stream)
    hits = sorted(set(data.draw(st.lists(st.integers(0, max(0, end - 1)), max_size=12))))
    bounds = [(0, 0), *((m.start(), m.end()) for m in LINE_ESC_RE.finditer(stream)), (end, end)]
    every = [(s, e, after) for (_, s), (e, after) in zip(bounds, bounds[1:], strict=False)]
    expected = [seg for seg in every if any(seg[0] <= h < seg[1] for h in hits)]
    assert _segments_with_hits(stream, 0, end, end, hits) == expected
