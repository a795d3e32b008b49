"""Our hooks in the worktree's `.claude/settings.local.json`, merged with the user's."""

from __future__ import annotations

import copy
import json
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

from activities.claude.constants import (
    DECISION_EVENTS,
    DECISION_WAIT_S,
    HOOK_EVENTS,
    HOOK_MATCHERS,
    HOOK_TAG,
    HOOK_TIMEOUT_S,
    RELAY,
    SETTINGS_LOCAL,
)
from activities.claude.errors import ClaudeSetupError
from activities.persona import atomic_write, checked_target

# --- settings.local.json -----------------------------------------------------------------------


def hook_command() -> str:
    """The shell command of our hooks: this worker's Python running the relay, tagged."""
    return (f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(RELAY.resolve()))}"
            f" # {HOOK_TAG}")


def _ours(hook: Any) -> bool:
    return isinstance(hook, dict) and HOOK_TAG in str(hook.get("command", ""))


def merge_hooks(settings: dict, command: str, decision_wait_s: float = DECISION_WAIT_S) -> dict:
    """`settings` with our hook entries (re)placed and a permission mode, the rest untouched.
    Hooks that may wait for a decision get a timeout past `decision_wait_s`.

    Idempotent: merging twice gives what merging once gave."""
    if settings.get("disableAllHooks") is True:
        raise ClaudeSetupError("it sets disableAllHooks: semo needs Claude Code's hooks to see "
                               "when a task ends; remove that setting")
    out = copy.deepcopy(settings)
    hooks = out.get("hooks", {})
    if not isinstance(hooks, dict):
        raise ClaudeSetupError("its 'hooks' is not an object")
    merged: dict[str, Any] = {}
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            if event in HOOK_EVENTS:
                raise ClaudeSetupError(f"its hooks.{event} is not a list")
            merged[event] = groups
            continue
        kept = []
        for group in groups:
            inner = group.get("hooks") if isinstance(group, dict) else None
            if isinstance(inner, list) and any(_ours(h) for h in inner):
                mine_removed = [h for h in inner if not _ours(h)]
                if not mine_removed:
                    continue
                group = {**group, "hooks": mine_removed}
            kept.append(group)
        if kept or event in HOOK_EVENTS:
            merged[event] = kept
    for event in HOOK_EVENTS:
        timeout = int(decision_wait_s) + 60 if event in DECISION_EVENTS else HOOK_TIMEOUT_S
        entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command,
                                            "timeout": timeout}]}
        if event in HOOK_MATCHERS:
            entry = {"matcher": HOOK_MATCHERS[event], **entry}
        merged.setdefault(event, []).append(entry)
    out["hooks"] = merged
    permissions = out.setdefault("permissions", {})
    if not isinstance(permissions, dict):
        raise ClaudeSetupError("its 'permissions' is not an object")
    permissions.setdefault("defaultMode", "default")
    return out


def merge_settings(working_dir: Path, roots: list[Path], command: str | None = None,
                   decision_wait_s: float = DECISION_WAIT_S) -> Path:
    """Merge our hooks into `working_dir/.claude/settings.local.json` (atomic write)."""
    try:
        target = checked_target(working_dir, SETTINGS_LOCAL, roots)
    except ValueError as err:
        raise ClaudeSetupError(str(err)) from None
    existing: dict = {}
    mode = 0o600
    if target.exists():
        raw = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
        if raw.strip():
            try:
                existing = json.loads(raw)
            except ValueError as err:
                raise ClaudeSetupError(
                    f"{target} is not valid JSON ({err}); fix or remove it"
                ) from None
            if not isinstance(existing, dict):
                raise ClaudeSetupError(f"{target} does not hold a JSON object")
    try:
        merged = merge_hooks(existing, command or hook_command(), decision_wait_s)
    except ClaudeSetupError as err:
        raise ClaudeSetupError(f"{target}: {err}") from None
    if merged != existing or not target.exists():
        atomic_write(target, (json.dumps(merged, indent=2, ensure_ascii=False) + "\n").encode(),
                     mode)
    return target
