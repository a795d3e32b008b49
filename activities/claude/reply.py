"""What a reply means: the final text's markers and PR links, read from the hook or the
transcript."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from activities.claude.constants import MAX_TEXT
from activities.monitor import markers

# --- what a reply means ------------------------------------------------------------------------


def clip(text: str, n: int = MAX_TEXT) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def reply_outcome(text: str) -> tuple[str, dict[str, Any]]:
    """(kind, data) for the agent's final reply: completion, error or turn_end.

    A marker counts on a line of its own (markdown emphasis or a bullet around it allowed);
    the last marker line wins. An error marker beats a PR URL; a PR URL completes with
    kind `pr_created`."""
    last: tuple[str, str, str | None] | None = None
    for line in text.splitlines():
        if markers.CLAUDE_DONE_RE.match(line):
            last = ("done", line.strip(), None)
        elif (m := markers.CLAUDE_ERROR_RE.match(line)) is not None:
            last = ("error", line.strip(), (m.group("reason") or "").strip())
    urls = markers.PR_URL_RE.findall(text)
    if last is not None and last[0] == "error":
        return "error", {"kind": "marker", "reason": clip(last[2] or "the agent gave up"),
                         "text": clip(last[1])}
    if urls:
        return "completion", {"kind": "pr_created", "url": urls[-1], "marker": last is not None}
    if last is not None:
        return "completion", {"kind": "marker", "text": clip(last[1])}
    return "turn_end", {"message": clip(text.strip()[-MAX_TEXT:])}


def last_assistant_text(path: Path, max_bytes: int = 4 * 1024 * 1024) -> str | None:
    """Text of the last main-thread assistant message in a Claude Code transcript (JSONL)."""
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - max_bytes))
        data = f.read()
    last = None
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # cut at the start of the tail, or being written
        if (
            not isinstance(entry, dict)
            or entry.get("type") != "assistant"
            or entry.get("isSidechain")
        ):
            continue
        content = (entry.get("message") or {}).get("content") or []
        texts = [
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        ]
        if texts:
            last = "\n".join(texts)
    return last
