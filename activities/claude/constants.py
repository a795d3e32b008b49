"""Claude Code's hook events, timings and screen marks: the numbers the rest of the package
works by (docs/claude-code.md records where each comes from)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from activities.monitor import MonitorEvent
from activities.terminal import Terminal

HOOK_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "Notification",
    "Stop",
    "StopFailure",
    "SessionEnd",
)
#: tool matchers of the hooks that take one (PreToolUse: only the tools that ask a person)
HOOK_MATCHERS = {"PermissionRequest": "*", "PreToolUse": "AskUserQuestion|ExitPlanMode"}
#: dialogs a profile's `dialogs` policy answers, whenever they show
POLICY_DIALOGS = ("trust_folder", "api_key")
#: in every hook command we write: how our entries are told from the user's
HOOK_TAG = "semo-sessions hook"
HOOK_TIMEOUT_S = 30
#: events whose hook may wait for a person's decision (it holds the relay)
DECISION_EVENTS = ("PermissionRequest", "PreToolUse")
#: tools whose PreToolUse waits for a person: a question, a plan to approve
ASKING_TOOLS = {"AskUserQuestion": "question", "ExitPlanMode": "plan"}
#: default of how long a held hook waits for a decision (settings.hook_decision_wait_s)
DECISION_WAIT_S = 600.0
SETTINGS_LOCAL = Path(".claude") / "settings.local.json"
RELAY = Path(__file__).with_name("hook_relay.py")

POLL_S = 0.05
#: how often a screen left behind a fast-drawing agent looks whether it slowed down
BEHIND_POLL_S = 0.25
#: a quiet screen without a dialog is looked at again after this long even without output
IDLE_WAKE_S = 1.0
#: a dialog on screen this long is reported as waiting_input
DIALOG_REPORT_S = 0.3
#: keys reach a dialog no sooner than this after it was drawn (earlier ones are dropped)
KEY_SETTLE_S = 0.5
#: the input box up this long without the SessionStart hook counts as ready (hooks that do
#: not fire: a relay that cannot reach the worker); the hook normally comes first
SESSION_START_GRACE_S = 5.0
#: a waiting_input the hooks reported makes the screen's report of the same dialog redundant
HOOK_REPORT_COVERS_S = 30.0
#: bytes of a tool's input an event carries
MAX_TOOL_INPUT = 4000
#: a dialog off screen this long is gone (not a redraw)
DIALOG_GONE_S = 0.25
#: after keys, a dialog still on screen this long is asked again
REASK_AFTER_KEYS_S = 1.5
#: how long a prompt may wait for the input box (the send_input activity allows 30 s)
SUBMIT_READY_TIMEOUT_S = 15.0
ECHO_TIMEOUT_S = 5.0
CONFIRM_S = 3.0
#: characters of reply or question text an event carries (events go into workflow history)
MAX_TEXT = 2000
MAX_LINE_BYTES = 16 * 1024 * 1024
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
BUSY_MARK = "esc to interrupt"
#: what the input box shows when empty after an error (typing replaces it)
PLACEHOLDERS = ("Resend your message to try again", "Once fixed, resend your message")

_OPTION_NUMBER_RE = re.compile(r"^\d+[.)]\s+")
_FOOTER_RE = re.compile(r"\b(?:esc to cancel|enter to (?:confirm|select|continue))\b", re.I)

SignalFn = Callable[[Terminal, MonitorEvent], Awaitable[None]]
#: the office's policy for a session: {"permission_rules": ..., "input_timeout_s": ...}
PolicyFn = Callable[[], Awaitable[dict[str, Any]]]
