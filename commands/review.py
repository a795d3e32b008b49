"""A review of a session's changes as one prompt, and a hand-off's commit message: the rules,
without I/O (the executor reads the changes and the jobs, and sends the prompt).

A comment names a file as `changes` lists it and a line of that file as it is now, one the
diff shows (added or around a change; for a deleted file, a line it had). The prompt quotes
each comment under its file and line with the line's current text (after `|`: a line a shell
would refuse, should the agent be one), in the order given, so the agent can act on all of them
in one turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from semo.errors import InvalidInput
from semo.payloads import ReviewBody, ReviewComment
from workflows.change_contracts import ChangesResult

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
#: the most of a quoted line shown in the prompt
_QUOTE_CHARS = 400


def diff_lines(diff: str) -> tuple[dict[int, str], dict[int, str]]:
    """The lines a one-file unified diff shows: (new side by line number, old side)."""
    new: dict[int, str] = {}
    old: dict[int, str] = {}
    o = n = 0
    in_hunk = False
    for line in diff.split("\n"):
        m = _HUNK.match(line)
        if m:
            o, n, in_hunk = int(m.group(1)), int(m.group(2)), True
            continue
        if not in_hunk or not line:
            continue
        sign, text = line[0], line[1:]
        if sign == " ":
            old[o], new[n] = text, text
            o, n = o + 1, n + 1
        elif sign == "+":
            new[n] = text
            n += 1
        elif sign == "-":
            old[o] = text
            o += 1
        elif sign != "\\":  # "\ No newline at end of file" is not a line
            in_hunk = False  # the next file's header
    return new, old


def quoted_lines(comments: Iterable[ReviewComment],
                 changes_of: dict[str, ChangesResult]) -> list[str]:
    """Each comment's line as it is now; InvalidInput (422) naming every comment that is not
    on the changes (`changes_of`: the changes read for each commented path alone)."""
    quotes, problems = [], []
    for i, c in enumerate(comments):
        changes = changes_of[c.path]
        listed = next((f for f in changes.files if f.path == c.path), None)
        if listed is None:
            problems.append(f"comments[{i}]: {c.path!r} is not among the session's changed files")
            continue
        new, old = diff_lines(changes.diff)
        text = new.get(c.line) if listed.status != "deleted" else old.get(c.line)
        if text is None:
            where = "binary: it has no lines" if listed.binary else \
                f"line {c.line} is not in its diff" + (" (the diff was cut short)"
                                                       if changes.truncated else "")
            problems.append(f"comments[{i}]: {c.path}: {where}")
            continue
        quotes.append(text)
    if problems:
        raise InvalidInput("; ".join(problems) + ". Comment on the lines `GET .../changes` shows")
    return quotes


def review_prompt(body: ReviewBody, quotes: list[str], branch: str) -> str:
    n = len(body.comments)
    parts = [f"Review of your changes on branch {branch}: {n} comment{'s' if n > 1 else ''}. "
             "Address every one of them, then say what you changed."]
    if body.summary and body.summary.strip():
        parts.append(body.summary.strip())
    for i, (c, quote) in enumerate(zip(body.comments, quotes, strict=True), 1):
        shown = quote if len(quote) <= _QUOTE_CHARS else quote[:_QUOTE_CHARS] + "…"
        text = "\n".join("   " + line for line in c.text.strip().splitlines())
        parts.append(f"{i}. {c.path}:{c.line}\n   | {shown}\n{text}")
    return "\n\n".join(parts)


def hand_off_message(session: dict, jobs: list[dict]) -> str:
    """A commit message made from the session's jobs (newest first in `jobs`)."""
    prompts = [_first_line(j.get("prompt") or "") for j in reversed(jobs)]
    prompts = [p for p in prompts if p]
    sid, office = session["session_id"], session["office_id"]
    subject = prompts[-1] if prompts else f"Work of semo session {sid}"
    subject = subject if len(subject) <= 72 else subject[:71] + "…"
    body = [f"Work of semo session {sid} ({session.get('role') or 'agent'}) in office "
            f"{office}."]
    if prompts:
        body.append("Jobs:\n" + "\n".join(f"- {p}" for p in prompts))
    return subject + "\n\n" + "\n\n".join(body)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
