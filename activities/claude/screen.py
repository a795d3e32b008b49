"""Claude Code's screen, read: the input box, busy or not, and the dialogs it draws."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from activities.claude.constants import _FOOTER_RE, _OPTION_NUMBER_RE, BUSY_MARK, MAX_TOOL_INPUT
from activities.claude.reply import clip

# --- the screen --------------------------------------------------------------------------------


def _is_rule(line: str, chars: str = "─▔") -> bool:
    stripped = line.strip()
    return len(stripped) >= 20 and set(stripped) <= set(chars)


def input_box_row(lines: list[str]) -> int | None:
    """Row of the input box: the last line starting `❯` right under a full-width rule."""
    for i in range(len(lines) - 1, 0, -1):
        if lines[i].startswith("❯") and _is_rule(lines[i - 1], "─"):
            return i
    return None


def input_box(lines: list[str]) -> str | None:
    """The input box's text (lines joined), or None when no input box is shown."""
    row = input_box_row(lines)
    if row is None:
        return None
    box = []
    for line in lines[row:]:
        if _is_rule(line, "─"):
            break
        box.append(line)
    return "\n".join([box[0][1:], *box[1:]]).replace("\xa0", " ").strip()


def _footer(lines: list[str]) -> list[str]:
    return [line for line in lines if line.strip()][-3:]


def is_busy(lines: list[str]) -> bool:
    return any(BUSY_MARK in line.lower() for line in _footer(lines))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


@dataclass(frozen=True)
class Dialog:
    """A menu dialog on screen: its text (title, details, question), options, selection."""

    text: tuple[str, ...]
    options: tuple[str, ...]
    selected: int

    @property
    def question(self) -> str:
        asks = [line for line in self.text if "?" in line]
        return asks[-1] if asks else (self.text[-1] if self.text else "")

    @property
    def key(self) -> tuple:
        return (self.question, self.options)

    def summary(self) -> str:
        return clip("\n".join(self.text))

    def kind(self) -> str:
        words = " ".join(self.text).lower()
        opts = " ".join(self.options).lower()
        if "trust this folder" in opts or "one you trust" in words or "trust the files" in words:
            return "trust_folder"
        if "api key" in words:
            return "api_key"
        if "do you want to" in words:
            return "permission"
        return "question"


def option_label(option: str) -> str:
    """An option without the number some versions put in front (`1. Yes` -> `Yes`)."""
    return _OPTION_NUMBER_RE.sub("", option.strip())


def policy_option(dialog: Dialog, answer: str) -> int | None:
    """The option that gives a policy's answer ("accept" or "decline"), by its words, not
    its place: versions order and number these menus differently."""
    labels = [option_label(o).lower() for o in dialog.options]
    if answer == "accept":
        tests = (lambda o: o.startswith("yes"), lambda o: "trust" in o and not o.startswith("no"))
    else:
        tests = (lambda o: o.startswith("no"),)  # type: ignore[assignment]
    for test in tests:
        found = next((i for i, label in enumerate(labels) if test(label)), None)
        if found is not None:
            return found
    return None


def bounded_input(value: Any, limit: int = MAX_TOOL_INPUT) -> Any:
    """A tool's input for an event (events go into workflow history): as it is when small,
    else its string values clipped, else a clipped JSON text."""
    if len(json.dumps(value, ensure_ascii=False, default=str)) <= limit:
        return value
    if isinstance(value, dict):
        clipped = {str(k)[:100]: clip(v, 500) if isinstance(v, str) else v
                   for k, v in list(value.items())[:50]}
        if len(json.dumps(clipped, ensure_ascii=False, default=str)) <= limit:
            return clipped
    return {"_truncated": clip(json.dumps(value, ensure_ascii=False, default=str), limit)}


def find_dialog(lines: list[str]) -> Dialog | None:
    """The menu dialog at the bottom of the screen, if one is open.

    A dialog ends in a footer ("Esc to cancel", "Enter to confirm"...) among the last
    lines, above which is a menu whose selected option starts with `❯` (not the input box,
    which is a `❯` at column 0 under a rule). Options are the lines aligned with the
    selected option's text; the dialog's text is what is above them, up to its top rule."""
    rows = [i for i, line in enumerate(lines) if line.strip()]
    foot = next((i for i in reversed(rows[-3:]) if _FOOTER_RE.search(lines[i])), None)
    if foot is None:
        return None
    sel = None
    for i in range(foot - 1, max(-1, foot - 40), -1):
        line = lines[i]
        if line.lstrip(" ").startswith("❯"):
            if line.startswith("❯") and i > 0 and _is_rule(lines[i - 1], "─"):
                return None  # the input box: no dialog
            sel = i
            break
    if sel is None:
        return None
    col = _indent(lines[sel]) + 2

    def option_like(i: int) -> bool:
        return bool(lines[i].strip()) and _indent(lines[i]) >= col

    top = sel
    while top - 1 >= 0 and option_like(top - 1):
        top -= 1
    bottom = sel
    while bottom + 1 < foot and (option_like(bottom + 1) or not lines[bottom + 1].strip()):
        bottom += 1
    options: list[str] = []
    selected = 0
    for i in range(top, bottom + 1):
        line = lines[i]
        if not line.strip():
            continue
        label = line.strip().lstrip("❯").strip()
        if i == sel or _indent(line) == col or not options:
            if i == sel:
                selected = len(options)
            options.append(label)
        else:  # a wrapped option: part of the one before
            options[-1] = f"{options[-1]} {label}"
    text: list[str] = []
    for i in range(top - 1, max(-1, top - 30), -1):
        line = lines[i]
        if _is_rule(line):
            break
        stripped = line.strip()
        if not stripped or _is_rule(line, "╌") or stripped.startswith("Tip:"):
            continue
        text.append(stripped)
    text.reverse()
    return Dialog(text=tuple(text[-12:]), options=tuple(options), selected=selected)
