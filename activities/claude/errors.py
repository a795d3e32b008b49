"""What goes wrong with Claude Code on this machine, as exceptions the activities map."""

from __future__ import annotations

from activities.claude.screen import Dialog
from activities.terminal import TerminalError


class DialogOpen(TerminalError):
    """A prompt arrived while Claude Code shows a dialog no policy answers: it is not typed."""

    def __init__(self, dialog: Dialog) -> None:
        super().__init__(f"Claude Code shows a dialog ({dialog.kind()}): {dialog.question!r} "
                         f"(options: {', '.join(dialog.options)}); answer it first "
                         "(POST .../keys), then send the prompt")
        self.dialog = dialog


class ClaudeSetupError(Exception):
    """The worktree's Claude Code settings cannot be merged (the message says why)."""


class StartupError(Exception):
    """Claude Code did not reach its input box. `permanent`: retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
