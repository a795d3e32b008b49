"""Idempotent commands: a workflow remembers what each command id returned, so a command sent
again (a retried HTTP call, an intake row read twice) gets the first answer instead of
running twice. The memory is bounded: the oldest answers go first.

Deterministic (no I/O): session and pool workflows keep `applied` in their state."""

from __future__ import annotations

from typing import Any

#: answers remembered per workflow (it carries them over continue-as-new)
APPLIED_KEEP = 500


def remember(applied: dict[str, Any], command_id: str, result: Any) -> None:
    """Keep `result` as `command_id`'s answer, forgetting the oldest past `APPLIED_KEEP`."""
    applied[command_id] = result
    while len(applied) > APPLIED_KEEP:
        del applied[next(iter(applied))]
