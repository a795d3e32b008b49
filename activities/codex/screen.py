"""Reading Codex's screen: its composer, and the dialogs it draws (0.169-0.171)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from activities.claude.screen import Dialog
from activities.codex.constants import COMPOSER, DIALOG_FOOTERS, IDLE_FOOTER, PLACEHOLDER

#: rows the composer may take (a long prompt shows as `[Pasted Content …]`)
MAX_COMPOSER_ROWS = 12
_OPTION_RE = re.compile(r"^\s*(?P<sel>›)?\s*(?P<n>\d+)\.\s+(?P<label>\S.*?)\s*$")


@dataclass(frozen=True)
class CodexDialog(Dialog):
    """A Codex menu screen (trust, approval, hook review): its text, numbered options."""

    def kind(self) -> str:
        words = " ".join(self.text).lower()
        if "trust this folder" in words:
            return "trust_folder"
        # the question may be above the rows kept as its text (a `Reason:` and an
        # `Environment:` line under it): its first option says it too
        if "would you like to run" in words or (
                self.options and self.options[0].lower().startswith("yes, proceed")):
            return "permission"
        if "hooks need review" in words:
            return "hooks_review"
        return "question"


def find_dialog(lines: list[str]) -> CodexDialog | None:
    """The menu on screen: numbered options above a footer that asks for Enter."""
    footer = next((i for i in range(len(lines) - 1, -1, -1)
                   if any(f in lines[i].lower() for f in DIALOG_FOOTERS)), None)
    if footer is None:
        return None
    options: list[str] = []
    selected = 0
    first: int | None = None
    for i in range(footer - 1, -1, -1):
        m = _OPTION_RE.match(lines[i])
        if m is None:
            if options:
                break
            continue
        first = i
        options.insert(0, m["label"])
        if m["sel"]:
            selected = int(m["n"]) - 1
    if not options or first is None:
        return None
    start = max(0, first - 8)
    text = tuple(line.strip() for line in lines[start:first] if line.strip())
    return CodexDialog(text=text, options=tuple(options), selected=selected)


def composer(lines: list[str]) -> str | None:
    """The composer's text ('' when it shows its placeholder), or None when it is not up:
    from the last `›` line that is not a numbered option down to the status line
    (`gpt-5-codex default · ~/work`) under it."""
    row = next((i for i in range(len(lines) - 1, -1, -1)
                if lines[i].startswith(COMPOSER) and _OPTION_RE.match(lines[i]) is None), None)
    if row is None:
        return None
    box = [lines[row][len(COMPOSER):]]
    for line in lines[row + 1:row + 1 + MAX_COMPOSER_ROWS]:
        if not line.strip() and not box[-1].strip() and len(box) > 1:
            return None  # two blank rows: conversation, not the composer
        if " · " in line:
            text = "\n".join(box).strip()
            return "" if text.startswith(PLACEHOLDER) else text
        box.append(line)
    return None  # no status line under it: an echoed prompt in the conversation


def is_idle(lines: list[str]) -> bool:
    """The composer is up and waiting, no dialog: its idle footer, under the status line
    (`gpt-5-codex default · ~/work`). While Codex is still loading it draws the composer and
    the footer without the status line, then maybe the trust screen (docs/codex.md)."""
    shown = [line for line in lines if line.strip()]
    footer = next((i for i in range(len(shown) - 1, max(len(shown) - 4, 0) - 1, -1)
                   if IDLE_FOOTER in shown[i]), None)
    # the status line may wrap (a long folder, the thread's name after it)
    return (footer is not None and footer >= 2
            and any(" · " in line for line in shown[max(footer - 3, 0):footer])
            and composer(lines) is not None and find_dialog(lines) is None)
