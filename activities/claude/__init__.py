"""Claude Code on the client machine: hooks, the screen, start-up dialogs, typing prompts.

Everything here follows what docs/claude-code.md records of Claude Code 2.1.x in a real PTY.

Hooks (deterministic events)
    `merge_settings()` adds our hook entries to the worktree's `.claude/settings.local.json`
    for HOOK_EVENTS, next to whatever the user has there (entries are recognised by HOOK_TAG
    in their command, so a re-merge replaces ours and nothing else), and sets
    `permissions.defaultMode: "default"` unless the user chose a mode (2.1.330 otherwise
    starts in "auto mode", where nothing asks for permission). Each hook runs
    activities/claude/hook_relay.py, which hands the event to this worker's `HookServer` over a
    Unix socket, authenticated with a per-session secret that reaches the agent through its
    environment only (never workflow history or the database).

What counts (for profiles with `hooks`, the PTY regexes do not complete or fail jobs)
    Stop          the final reply (`last_assistant_message`, else the transcript): a
                  `[SEMO:DONE]` line completes the job, a `[SEMO:ERROR] reason` line fails
                  it, a GitHub PR URL completes it (`pr_created`); otherwise `turn_end`
                  (the job goes on: the agent may be asking something).
    StopFailure   fails the job with the API error Claude Code showed.
    SessionEnd    / the process exiting while a job runs: fails the job.
    Screen        a dialog (a `❯` option menu over an "Esc to cancel" footer) shown for
                  DIALOG_REPORT_S is `waiting_input` with its text; the Notification hook
                  (~6 s later) only speaks when the screen did not.

Typing (`ClaudeDriver.submit`)
    Wait for the input box; clear what an interrupted turn left in it (Esc Esc); bracketed
    paste; wait until the box shows the text; Enter; confirm (UserPromptSubmit hook, the
    box emptied, or the turn running), else one more Enter.

Keys for a dialog are held until KEY_SETTLE_S after it was drawn: Claude Code drops keys
that arrive within ~0.1 s of drawing it.

The package, one concept a module: `constants` (events, timings, screen marks), `errors`,
`settings` (settings.local.json), `reply` (what a reply means), `screen` (reading the
screen), `hooks` (the hook server and held decisions), `driver` (one terminal),
`integration` (per worker), `versions` (the CLI versions this code is tested with).
"""

from __future__ import annotations

from activities.claude.constants import HOOK_EVENTS, HOOK_MATCHERS, HOOK_TAG, RELAY
from activities.claude.driver import ClaudeDriver
from activities.claude.errors import ClaudeSetupError, DialogOpen, StartupError
from activities.claude.hooks import HookServer, decision_output, socket_path
from activities.claude.integration import ClaudeIntegration
from activities.claude.reply import last_assistant_text, reply_outcome
from activities.claude.screen import (
    Dialog,
    find_dialog,
    input_box,
    input_box_row,
    is_busy,
    option_label,
    policy_option,
)
from activities.claude.settings import hook_command, merge_hooks, merge_settings

__all__ = [
    "HOOK_EVENTS", "HOOK_MATCHERS", "HOOK_TAG", "RELAY", "ClaudeDriver", "ClaudeIntegration",
    "ClaudeSetupError", "Dialog", "DialogOpen", "HookServer", "StartupError", "decision_output",
    "find_dialog", "hook_command", "input_box", "input_box_row", "is_busy",
    "last_assistant_text", "merge_hooks", "merge_settings", "option_label", "policy_option",
    "reply_outcome", "socket_path",
]
