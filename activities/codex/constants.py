"""Codex CLI's hook events, timings and screen marks (docs/codex.md says where each comes
from)."""

from __future__ import annotations

#: the hooks semo installs (on the command line, see config.py)
HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "PermissionRequest", "Stop")
#: events whose hook may wait for a person's decision (it holds the relay)
DECISION_EVENTS = ("PermissionRequest",)
HOOK_TIMEOUT_S = 30
#: the flag that lets hooks nobody reviewed run, for this process only
BYPASS_HOOK_TRUST = "--dangerously-bypass-hook-trust"

POLL_S = 0.05
IDLE_WAKE_S = 1.0
#: keys reach a screen no sooner than this after it was drawn
KEY_SETTLE_S = 0.5
#: how often the rollout file is read while a turn is open (a refused turn is only there)
ROLLOUT_POLL_S = 0.25
#: how long a prompt may wait for the composer (the send_input activity allows 30 s)
SUBMIT_READY_TIMEOUT_S = 15.0
ECHO_TIMEOUT_S = 5.0
CONFIRM_S = 3.0

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
#: the footer under an idle composer
IDLE_FOOTER = "? for shortcuts"
#: the composer's line mark
COMPOSER = "›"
#: the composer's placeholder when empty
PLACEHOLDER = "Ask Codex to do anything"
#: footers of a screen that waits for a choice (a dialog)
DIALOG_FOOTERS = ("enter continue", "enter confirm", "press enter to confirm")
