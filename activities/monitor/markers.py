"""The `[SEMO:…]` markers an agent prints to end a job: `[SEMO:DONE]` completes it,
`[SEMO:ERROR] reason` fails it. One regex each, per way of printing them:

- a shell prints the marker alone on its line;
- Claude Code starts a reply with a bullet (⏺ on macOS, ● elsewhere) and markdown may wrap
  the marker in backticks or emphasis.

The output monitor (activities/monitor/patterns.py) matches them in the PTY stream; the Claude
Code driver matches the Claude forms in the reply text its hooks and transcript give."""

from __future__ import annotations

import re

#: what may stand before a Claude Code reply's marker, and after it
BULLET = r"^\s*(?:[⏺●•]\s*)?[`*_]*"
AFTER = r"[`*_]*\s*$"

SHELL_DONE = r"^\s*\[SEMO:DONE\]\s*$"
SHELL_ERROR = r"^\s*\[SEMO:ERROR\](?:[\s:]+(?P<reason>.*?))?\s*$"
CLAUDE_DONE = BULLET + r"\[SEMO:DONE\]" + AFTER
CLAUDE_ERROR = BULLET + r"\[SEMO:ERROR\](?:[`*_]*[\s:]+(?P<reason>.*?))?" + AFTER
#: literal substrings a line must hold to be worth the regexes (the monitor's prefilter)
DONE_HINTS = ("SEMO", "DONE]")
ERROR_HINTS = ("SEMO", "ERROR]")

CLAUDE_DONE_RE = re.compile(CLAUDE_DONE)
CLAUDE_ERROR_RE = re.compile(CLAUDE_ERROR)

#: a GitHub pull request's URL: a job that opened one is complete
PR_URL = r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/pull/\d+"
PR_URL_RE = re.compile(PR_URL)
