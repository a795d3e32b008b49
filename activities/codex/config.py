"""Our hooks on Codex's command line: nothing is written to the user's config.toml.

Codex runs an unmanaged hook only once a person trusted its exact definition (the `/hooks`
screen), also for hooks given with `-c`; `--dangerously-bypass-hook-trust` lets the enabled
hooks run for that one process (docs/codex.md, "Hooks")."""

from __future__ import annotations

import json

from activities.codex.constants import (
    BYPASS_HOOK_TRUST,
    DECISION_EVENTS,
    HOOK_EVENTS,
    HOOK_TIMEOUT_S,
)


def hook_args(command: str, decision_wait_s: float) -> list[str]:
    """`--dangerously-bypass-hook-trust` and one `-c hooks.<Event>=[...]` per event, each
    running `command`; hooks that may wait for a decision get a timeout past the wait."""
    # no "update available" screen at start-up (it asks a person; the version check is ours)
    args = [BYPASS_HOOK_TRUST, "-c", "check_for_update_on_startup=false"]
    for event in HOOK_EVENTS:
        timeout = int(decision_wait_s) + 60 if event in DECISION_EVENTS else HOOK_TIMEOUT_S
        # a JSON string is a TOML basic string (the same escapes)
        handler = f'{{type="command",command={json.dumps(command)},timeout={timeout}}}'
        args += ["-c", f"hooks.{event}=[{{hooks=[{handler}]}}]"]
    return args


def resume_args(conversation_id: str | None) -> list[str]:
    """`resume <id>`: continue that conversation (same id, same rollout file)."""
    return ["resume", conversation_id] if conversation_id else []
