"""Codex's rollout file (`$CODEX_HOME/sessions/…/rollout-<time>-<id>.jsonl`): what it
records of each turn that no hook says (a refused turn), read from where the last read
stopped. docs/codex.md lists its lines."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: at most this much is read at once (the rest waits for the next read)
READ_BYTES = 8 * 1024 * 1024


def is_rollout(path: Path) -> bool:
    """A path a hook may name as the rollout file: `…/sessions/YYYY/MM/DD/rollout-*.jsonl`
    (a hook event comes from the agent's side; this keeps it to Codex's layout)."""
    return (path.is_absolute() and path.suffix == ".jsonl" and path.name.startswith("rollout-")
            and len(path.parents) > 4 and path.parents[3].name == "sessions")


class HasOffset(Protocol):
    offset: int


@dataclass
class Cursor:
    """Where the last read of a file stopped (after its last complete line)."""

    offset: int = 0


def read_lines(path: Path, cursor: HasOffset) -> list[dict[str, Any]]:
    """The complete lines appended since the cursor, parsed (a line that is not a JSON object
    is skipped); the cursor moves past them. A file that shrank is read again from the start."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < cursor.offset:
                cursor.offset = 0
            if size == cursor.offset:
                return []
            f.seek(cursor.offset)
            data = f.read(READ_BYTES)
    except OSError:
        return []
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) == READ_BYTES:  # one line longer than we read: skip it
        cursor.offset += len(data)
        return []
    cursor.offset += end
    out = []
    for line in data[:end].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def payload(entry: dict[str, Any]) -> dict[str, Any]:
    p = entry.get("payload")
    return p if isinstance(p, dict) else {}


def turn_error(entry: dict[str, Any]) -> tuple[str, str] | None:
    """(turn id, message) when the line records a turn that ended in an error."""
    p = payload(entry)
    if entry.get("type") != "event_msg" or p.get("type") != "task_complete":
        return None
    error = p.get("error")
    if not error:
        return None
    message = error.get("message") if isinstance(error, dict) else error
    return str(p.get("turn_id") or ""), _unwrap(str(message or "the model API refused the turn"))


def _unwrap(message: str) -> str:
    """The API's own message out of the JSON body Codex quotes whole, when it is one."""
    try:
        body = json.loads(message)
    except ValueError:
        return message
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        inner = body["error"].get("message")
        if isinstance(inner, str) and inner:
            return inner
    return message
