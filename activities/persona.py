"""PersonaInjector: the persona and the completion protocol in the agent's memory file in the
worktree (Claude Code's `.claude/CLAUDE.md`, Codex's `AGENTS.md`).

The file belongs to the user; semo owns one clearly delimited block in it:

    <!-- semo:persona:begin -->
    ...persona and completion protocol...
    <!-- semo:persona:end -->

Everything outside the block is kept byte for byte; injecting again replaces only the
block (a new block goes at the top, so that a user's file that does not end in a newline
stays exactly as it was). Writes are atomic (temporary file in the same directory, fsync,
rename, fsync of the directory).

Persona text comes from the API, so it is untrusted here. Rendering makes sure it can
neither end the block early nor put a completion marker on a line of its own:

- every line break a reader might honour (CR, VT, FF, NEL, U+2028/2029, ...) becomes LF and
  other control characters are dropped, so "lines" mean the same to every reader;
- `semo:` (any case, blanks allowed before the colon) in persona text becomes `semo-`: the
  delimiters and the markers `[SEMO:DONE]` / `[SEMO:ERROR]` all contain it, so no persona
  text can spell them;
- list items (scope patterns, skills) and the name/role/description lines are collapsed to
  one line each.

Our own text mentions the markers only inside sentences, never on a line of their own: the
agent reads CLAUDE.md, and the screen monitor (for agents without hooks) must not mistake it
for the agent's reply.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from activities.workspace import WorkspaceError, is_within
from workflows.contracts import Persona

BEGIN = b"<!-- semo:persona:begin -->"
END = b"<!-- semo:persona:end -->"
CLAUDE_MD = Path(".claude") / "CLAUDE.md"
#: Codex's convention: the working dir's AGENTS.md, managed the same way
AGENTS_MD = Path("AGENTS.md")
#: the most of an existing CLAUDE.md we read (it is the agent's context; bigger is a mistake)
MAX_FILE_BYTES = 4 * 1024 * 1024

# Line breaks that some reader (Python's splitlines, editors, the model) may honour.
_BREAKS_RE = re.compile(r"\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Other control characters: C0 but TAB and LF, DEL, C1.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f\x80-\x84\x86-\x9f]")
_SEMO_COLON_RE = re.compile(r"(semo)\s*:", re.IGNORECASE)


class PersonaError(ValueError):
    """The persona cannot be written where it was asked to be."""


def clean_text(text: str) -> str:
    """Persona text made safe for the block: LF line breaks only, no control characters,
    and no `semo:` (so no delimiter and no marker can be spelled)."""
    text = _BREAKS_RE.sub("\n", text)
    text = _CONTROL_RE.sub("", text)
    return _SEMO_COLON_RE.sub(lambda m: f"{m.group(1)}-", text)


def one_line(text: str) -> str:
    return " ".join(clean_text(text).split())


def render_block(persona: Persona | None) -> bytes:
    """The managed block, delimiters included, ending in a newline."""
    out: list[str] = [
        BEGIN.decode(),
        "<!-- Managed by semo-sessions: this block is rewritten whenever the session starts. "
        "Put your own notes outside it. -->",
        "",
    ]
    if persona is not None:
        out += [f"# You are {one_line(persona.name)} ({one_line(persona.role)})", ""]
        if persona.description and persona.description.strip():
            out += [one_line(persona.description), ""]
        if persona.scope_patterns:
            out += ["## Your scope", "",
                    "Work on files matching these patterns; leave other files alone unless the "
                    "task needs them:", ""]
            out += [f"- `{one_line(p).replace('`', '')}`" for p in persona.scope_patterns]
            out.append("")
        if persona.core_skills:
            out += ["## Core skills", ""]
            out += [f"- {one_line(s)}" for s in persona.core_skills]
            out.append("")
        if persona.instructions and persona.instructions.strip():
            out += ["## Instructions", "", clean_text(persona.instructions).strip("\n"), ""]
    out += [
        "## Completion protocol (required)",
        "",
        "You are supervised by semo-sessions, which reads your final reply to know when a task "
        "is over.",
        "",
        "- When the task is finished, end your final reply with the line `[SEMO:DONE]`, "
        "alone on the last line, with nothing else on it.",
        "- When you cannot finish the task and are giving up, end your final reply with a line "
        "that starts with `[SEMO:ERROR]` followed by the reason, for example "
        "`[SEMO:ERROR] the tests need a database I cannot reach`.",
        "- If you need an answer from the user before you can go on, ask your question and "
        "end your reply without either marker.",
        "- Print a marker only in your own final reply, never in files, commits or commands.",
        "- If you open a pull request, put its URL in your final reply.",
        "- semo's files here (`.claude/CLAUDE.md`, `.claude/settings.local.json`, this block "
        "in `AGENTS.md`) are local to this session: do not commit them.",
        "",
        END.decode(),
    ]
    return ("\n".join(out) + "\n").encode("utf-8")


def _lines(data: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end after the LF, line without CR/LF) for each line of `data`."""
    out, pos = [], 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        out.append((pos, end, data[pos:end].rstrip(b"\n").rstrip(b"\r")))
        pos = end
    return out


def find_blocks(data: bytes) -> list[tuple[int, int]]:
    """Byte spans of the complete managed blocks in `data` (BEGIN line .. END line)."""
    spans, start = [], None
    for s, e, line in _lines(data):
        if line == BEGIN:
            start = s  # a stray BEGIN before ours is the user's text
        elif line == END and start is not None:
            spans.append((start, e))
            start = None
    return spans


def user_text(data: bytes) -> bytes:
    """What is the user's: everything outside the managed blocks."""
    out, pos = [], 0
    for s, e in find_blocks(data):
        out.append(data[pos:s])
        pos = e
    out.append(data[pos:])
    return b"".join(out)


def splice(existing: bytes | None, block: bytes) -> bytes:
    """`existing` with its first managed block replaced by `block` (other copies of ours are
    dropped), or `block` put in front when there is none."""
    if not existing:
        return block
    spans = find_blocks(existing)
    if not spans:
        return block + existing
    out, pos = [], 0
    for i, (s, e) in enumerate(spans):
        out.append(existing[pos:s])
        if i == 0:
            out.append(block)
        pos = e
    out.append(existing[pos:])
    return b"".join(out)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that a reader sees the old or the new file, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checked_target(worktree: Path, relative: Path, roots: list[Path]) -> Path:
    """`worktree/relative`, symlinks followed, refused unless it stays inside the worktree,
    which must be inside the workspace roots; the file's directory is created if missing."""
    roots = [r.resolve() for r in roots]
    base = Path(worktree).resolve()
    if not is_within(base, roots):
        raise WorkspaceError(f"{worktree} resolves to {base}, outside this machine's workspace "
                             f"roots ({', '.join(map(str, roots))})")
    if not base.is_dir():
        raise WorkspaceError(f"{base} is not a directory")
    parent = base / relative.parent
    if not (parent.exists() or parent.is_symlink()):
        parent.mkdir(parents=True)  # nothing there to follow: created inside the worktree
    try:
        real_parent = parent.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as err:  # a dangling or looping symlink
        raise WorkspaceError(f"{parent} cannot be resolved: {err}") from None
    target = real_parent / relative.name
    if target.is_symlink():
        target = target.resolve()
    if not is_within(target, [base]):
        raise WorkspaceError(f"{base / relative} resolves to {target}, outside the worktree {base}")
    if not real_parent.is_dir() or (target.exists() and not target.is_file()):
        raise WorkspaceError(f"{target} is not a regular file in a directory")
    return target


class PersonaInjector:
    """Writes personas into worktrees inside this machine's workspace roots."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(r).resolve() for r in roots]

    def inject_persona(self, worktree: Path, persona: Persona | None,
                       relative: Path = CLAUDE_MD) -> Path:
        """Write (or rewrite) the managed block of `worktree/relative` (the agent's memory
        file: `.claude/CLAUDE.md`, Codex's `AGENTS.md`); returns the file written. With no
        persona the block holds the completion protocol alone."""
        target = checked_target(worktree, relative, self.roots)
        existing: bytes | None = None
        mode = 0o644
        if target.exists():
            st = target.stat()
            if st.st_size > MAX_FILE_BYTES:
                raise PersonaError(
                    f"{target} is larger than {MAX_FILE_BYTES} bytes; not touching it"
                )
            existing = target.read_bytes()
            mode = st.st_mode & 0o7777
        new = splice(existing, render_block(persona))
        if new != existing:
            atomic_write(target, new, mode)
        return target


def inject_persona(worktree: Path, persona: Persona | None, roots: list[Path]) -> Path:
    return PersonaInjector(roots).inject_persona(worktree, persona)
