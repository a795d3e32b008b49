"""OutputMonitor: turns a terminal's raw output bytes into session events.

A pure component: no I/O, no clock reads (time is passed in), no global state. The client
worker feeds it every chunk it reads from the PTY and forwards the events it returns.

Events (`MonitorEvent.kind`; `offset` = raw stream offset just after what produced it)
    completion      `[SEMO:DONE]` on a line of its own, a GitHub PR URL (`pr_created`), or
                    with `commit_completes=True` a git commit line
    commit          a git commit line, as a job event that does not complete the job
    error           `[SEMO:ERROR] reason`, or an agent failure (API error, rate limit, ...)
    waiting_input   a permission / trust / yes-no prompt, a selection menu or a Claude Code
                    dialog ("Enter to confirm"), with the question
    stall           from `check_stall()`: no output for `stall_after_s` while the caller is busy

Screen lines
    A line ends at LF, CR, CR LF (one line end) and at the escape sequences with which a TUI
    moves the cursor to another line or to column 1 or wipes a line (CSI A B E F H J K S T d
    f, CSI G). Every piece of text between two line ends is matched on its own, with the
    other escape sequences (CSI, OSC, DCS/SOS/PM/APC, two/three-byte ESC sequences) and C0
    controls removed. Cursor-forward and cursor-to-column (CSI n C, CSI n G) read as one
    blank: Claude Code 2.x writes the spaces between words that way (`Do ESC[6Gyou
    ESC[10Gwant`), and reaches its next line with cursor moves rather than newlines. So the
    line written after a frame is erased (`ESC[2K ESC[1A ... ESC[G ● [SEMO:DONE]`) is seen on
    its own, and in `progress\r[SEMO:DONE]\r\n` both texts are lines: what a later CR
    overwrites was on screen too. A backspace is dropped, not emulated.

    Completion and error patterns run on finished lines. Waiting patterns run on the
    unfinished last line as well, because prompts (`Overwrite? (y/n) `) wait without a line
    end; such an event's offset is just after the prompt's last byte.

Chunking does not matter
    Escape sequences, UTF-8 characters and CRs (the LF of a CR LF may follow) split across
    reads are held back until the next read decides them, and offsets are computed from the
    stream. Any split of a stream gives the same events with the same offsets. (Exceptions,
    by design: lines longer than `LINE_CAP`, and waiting patterns that are not prefix-stable,
    i.e. whose first match in a line changes as the line grows; all defaults are literals
    or bounded classes without `$`.)

Memory and speed
    The unfinished line keeps its last `LINE_CAP` (8 KiB) raw bytes, and every line is
    matched on its last `LINE_CAP` raw bytes, so a line that never ends costs nothing more.
    Each pattern has hints: words one of which is in every line it matches (`SEMO`,
    `/pull/`, `API`, `want`, ...). One Aho-Corasick automaton of all hints (Rust, SIMD)
    finds them in the raw bytes of each read, at GB/s; only the lines they are in are
    cleaned of escapes, decoded and matched, and line ends elsewhere are found with
    `bytes.rfind`. So hints should be rare in ordinary output (`y/n` rather than `/n`, which
    every `/node_modules` has), and few: past ~16 the automaton's SIMD prefilter slows down.
    Words are hinted one by one because styling and Claude's cursor-placed blanks sit
    between words; the markers have two hints (`SEMO`, `DONE]`), so one escape sequence
    inside the marker is harmless. The blind spot: a line whose every hint has an escape
    sequence inside it in the raw bytes (per-letter colouring) is not looked at.

Echo: our own typing never counts
    `expect_echo(text)` records each line we type. A line that would raise an event is
    discarded when it is the echo of a recently typed line `t` (compared with runs of blanks
    collapsed, as a cursor-placed blank may stand for several):
      * decorated echo: `t` behind a shell or input prompt, optionally before a border (`$ t`,
        `user@host:~/x$ t`, `❯ t`, `│ > t   │`). Discarded while `t` is among the last 64
        typed lines, however often it shows: TUIs redraw their input box and copy the
        submitted prompt into the transcript. An agent's own output does not put a prompt
        in front of our text (Claude's replies start with `●`/`⏺`, not a prompt character).
      * bare echo: exactly `t`. Claude Code's input box is one (its renderer leaves the `❯ `
        on screen and writes only the text), and so is a terminal echoing raw input. Typed
        single-line text discounts one such line; seeing any echo of `t` (bare or decorated)
        uses the discount up, and after that the agent printing `t` counts. Typing
        `[SEMO:DONE]` into `cat` gives an echo line (discarded) and an output line (a
        completion); typing `echo [SEMO:DONE]` into a shell gives `$ echo [SEMO:DONE]`
        (discarded) and the command's `[SEMO:DONE]` (a completion). Multi-line text gets no
        discount: a TUI shows a paste as `[Pasted text #1 +3 lines]`, so an owed discount
        would eat the agent's own `[SEMO:DONE]` if the prompt had that line; a shell shows
        such lines behind its prompts (decorated).
    For waiting_input, only a prompt inside the echoed text is discarded (`Overwrite? (y/n) y`
    after we typed `y` still asks). Not handled: a typed line that a TUI wraps over several
    screen lines is not recognised piecewise (the anchored marker cannot fire on a piece
    unless the piece is exactly `[SEMO:DONE]`). Text the agent reads, such as CLAUDE.md, is
    not echo: the persona must not put the marker on a line of its own.

De-duplication
    TUIs repaint the same lines many times. Between two inputs (`expect_echo`/`note_input`)
    an event with the same kind and identifying data (question, reason, URL, sha, line) is
    emitted once. A line yields at most one waiting_input event, and at most one error or,
    failing that, one completion/commit event.

Patterns
    `PatternSet.for_agent("claude" | "shell")` gives the defaults; `PatternSet.from_config()`
    extends or replaces them from JSON-able config. A pattern is a `str` regex searched in
    one line (escapes removed, blanks kept). Named groups: `reason` (error), `question`
    (waiting_input); any other (`url`, `sha`, ...) is copied into completion/commit data.
    Hints are derived from the regex when not given; a pattern without any makes every
    line a candidate (slower, still correct).

Modules: `engine` (OutputMonitor), `patterns` (Pattern, PatternSet, the defaults), `markers`
(the [SEMO:…] markers), `events` (MonitorEvent); the escape grammar is semo/terminal_text.py.
"""

from __future__ import annotations

from activities.monitor.engine import LINE_CAP, OutputMonitor
from activities.monitor.events import MonitorEvent
from activities.monitor.patterns import Pattern, PatternSet
from semo.terminal_text import strip_terminal_escapes

__all__ = [
    "LINE_CAP",
    "MonitorEvent",
    "OutputMonitor",
    "Pattern",
    "PatternSet",
    "strip_terminal_escapes",
]
