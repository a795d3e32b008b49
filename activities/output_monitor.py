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
"""

from __future__ import annotations

import bisect
import codecs
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

from activities.monitor import markers
from semo.terminal_text import (
    DROP_RE as _DROP_RE,
)
from semo.terminal_text import (
    GAP_RE as _GAP_RE,
)
from semo.terminal_text import (
    INCOMPLETE_RE as _INCOMPLETE_RE,
)
from semo.terminal_text import (
    LINE_ESC_RE as _LINE_ESC_RE,
)
from semo.terminal_text import (  # the grammar, and the text view the API uses too
    MAX_ESCAPE as _MAX_ESCAPE,
)
from semo.terminal_text import (
    RAW_TOKEN_RE as _RAW_TOKEN_RE,
)
from semo.terminal_text import (
    strip_terminal_escapes,
)

try:  # Python 3.11+
    from re import _constants as _sre_c  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = [
    "LINE_CAP",
    "MonitorEvent",
    "OutputMonitor",
    "Pattern",
    "PatternSet",
    "strip_terminal_escapes",
]

#: raw bytes of a line kept and matched (the last ones)
LINE_CAP = 8192
#: raw bytes of finished output kept to find the question above a selection menu
_CONTEXT_BYTES = 4096
#: how many typed lines are remembered for echo suppression
_ECHO_MEMORY = 64
#: how many event keys are remembered for de-duplication within one turn
_DEDUPE_MEMORY = 512

#: CRs held back at the end of a read (a longer run is split: no line ends that way)
_MAX_CR_RUN = 64


def _clean(raw: bytes) -> bytes:
    """Raw terminal bytes -> text bytes, each line end (CR, LF, line escape) one LF, each
    gap (and TAB) one blank.

    The passes cannot interact: their replacements (LF, TAB) never extend an escape
    sequence, and TAB becomes a blank only at the end.
    """
    if b"\x1b" in raw:
        raw = _LINE_ESC_RE.sub(b"\n", raw)
        raw = _GAP_RE.sub(b"\t", raw)
    raw = _DROP_RE.sub(b"", raw)
    if b"\r" in raw:
        raw = raw.replace(b"\r", b"\n")
    return raw.replace(b"\t", b" ") if b"\t" in raw else raw


def _raw_index(raw: bytes, start: int, n: int) -> int:
    """Index in `raw` just after the n-th clean byte of the line piece starting at `start`."""
    pos = start
    while True:
        m = _RAW_TOKEN_RE.search(raw, pos)
        run_end = m.start() if m else len(raw)
        if n <= run_end - pos:
            return pos + n
        if m is None:  # pragma: no cover - n is always within the line
            return len(raw)
        n -= run_end - pos
        if m.lastgroup == "gap":
            if n <= 1:
                return m.end()
            n -= 1
        pos = m.end()


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """Something the monitor saw. `offset`: raw stream offset just after what produced it."""

    kind: str  # "completion" | "commit" | "error" | "waiting_input" | "stall"
    data: dict
    offset: int


# --- patterns ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pattern:
    """One regex over a screen line; `kind` names it in event data (completion `kind`)."""

    regex: re.Pattern[str]
    kind: str = ""
    #: literals one of which every line it matches contains; () = none known: every line
    hints: tuple[str, ...] = ()
    #: raw byte strings to look for in the output instead of the hints (for a pattern
    #: without a good literal, such as git's `[main 1a2b3c4] msg`)
    anchors: tuple[bytes, ...] = ()

    @classmethod
    def make(cls, pattern: str, kind: str = "", hints: Iterable[str] | None = None,
             ignore_case: bool = False, anchors: Iterable[bytes] = ()) -> Pattern:
        try:
            regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as err:
            raise ValueError(f"bad pattern {pattern!r}: {err}") from None
        found = tuple(hints) if hints is not None else _derive_hints(regex)
        if any(not h or "\n" in h or "\r" in h for h in found):
            raise ValueError(f"hints of {pattern!r} must be non-empty and on one line")
        return cls(regex=regex, kind=kind, hints=found, anchors=tuple(anchors))


def _derive_hints(regex: re.Pattern[str]) -> tuple[str, ...]:
    """Words one of which must occur in any match, from the parsed regex; () if unsure."""
    try:
        parsed = _sre_parse.parse(regex.pattern, regex.flags & ~re.IGNORECASE)
    except Exception:  # pragma: no cover - it compiled, so it parses
        return ()
    best = _seq_hints(list(parsed))
    return best if best and min(len(h) for h in best) >= 3 else ()


_REPEATS = {_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT}
if hasattr(_sre_c, "POSSESSIVE_REPEAT"):  # 3.11+
    _REPEATS.add(_sre_c.POSSESSIVE_REPEAT)


def _seq_hints(items: list) -> tuple[str, ...] | None:
    """Best required literal set of a sequence of sre items (longest shortest literal).

    Literal runs are cut at whitespace: styling often changes at a word boundary.
    """
    candidates: list[tuple[str, ...]] = []
    run: list[str] = []

    def close_run() -> None:
        words = "".join(run).split()
        if words:
            candidates.append((max(words, key=len),))
        run.clear()

    for op, av in items:
        if op is _sre_c.LITERAL:
            run.append(chr(av))
            continue
        close_run()
        sub: tuple[str, ...] | None = None
        if op is _sre_c.SUBPATTERN:
            _group, add_flags, _del_flags, body = av
            if not add_flags & re.IGNORECASE:
                sub = _seq_hints(list(body))
        elif op in _REPEATS:
            lo, _hi, body = av
            if lo >= 1:
                sub = _seq_hints(list(body))
        elif op is _sre_c.BRANCH:
            alts = [_seq_hints(list(b)) for b in av[1]]
            if all(alts):
                sub = tuple(h for a in alts for h in a)  # type: ignore[union-attr]
        if sub:
            candidates.append(sub)
    close_run()
    if not candidates:
        return None
    return max(candidates, key=lambda hs: (min(len(h) for h in hs), -len(hs)))


@dataclass(frozen=True)
class PatternSet:
    """The patterns one agent's output is matched with. Build with `for_agent`/`from_config`."""

    completion: tuple[Pattern, ...] = ()
    error: tuple[Pattern, ...] = ()
    waiting: tuple[Pattern, ...] = ()
    name: str = "custom"
    # derived in __post_init__
    _hints: _Hints = field(init=False, repr=False, compare=False)
    _wait_hints: _Hints | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for group in ("completion", "error", "waiting"):
            object.__setattr__(self, group, tuple(getattr(self, group)))
        every = self.completion + self.error + self.waiting
        object.__setattr__(self, "_hints", _Hints(every))
        object.__setattr__(self, "_wait_hints", _Hints(self.waiting) if self.waiting else None)

    @classmethod
    def for_agent(cls, name: str) -> PatternSet:
        """Defaults for an agent: "claude" (Claude Code) or "shell"; anything else -> "shell"."""
        if name == "claude":
            return cls(completion=_CLAUDE_COMPLETION, error=_CLAUDE_ERROR, waiting=_WAITING,
                       name="claude")
        return cls(completion=_SHELL_COMPLETION, error=_SHELL_ERROR, waiting=_WAITING,
                   name="shell")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PatternSet:
        """Build from JSON-able config, e.g. an agent profile's monitor block::

            {"base": "claude",                    # defaults to start from; "none": none
             "replace": false,                    # true: your lists replace the base lists
             "completion": [{"pattern": "^All done$", "kind": "marker"}],
             "error": ["^FATAL: (?P<reason>.*)"],   # a bare string is {"pattern": ...}
             "waiting": [{"pattern": "Continue\\\\?", "hints": ["Continue"],
                          "ignore_case": true}]}

        Your patterns are tried before the base ones. Raises ValueError on bad input.
        """
        if not isinstance(config, Mapping):
            raise ValueError("pattern config must be an object")
        unknown = set(config) - {"base", "replace", "completion", "error", "waiting"}
        if unknown:
            raise ValueError(f"unknown pattern config keys: {sorted(unknown)}")
        base_name = config.get("base", "shell")
        if base_name in (None, "none"):
            base = cls(name="none")
        elif isinstance(base_name, str):
            base = cls.for_agent(base_name)
        else:
            raise ValueError("'base' must be an agent name or 'none'")
        replace = config.get("replace", False)
        if not isinstance(replace, bool):
            raise ValueError("'replace' must be true or false")
        lists: dict[str, tuple[Pattern, ...]] = {}
        for group in ("completion", "error", "waiting"):
            mine = tuple(_pattern_from_config(item, group) for item in _as_list(config, group))
            theirs: tuple[Pattern, ...] = getattr(base, group)
            lists[group] = mine if replace and group in config else mine + theirs
        return cls(name=f"{base.name}+config", **lists)


def _as_list(config: Mapping[str, Any], key: str) -> list[Any]:
    value = config.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"'{key}' must be a list of patterns")
    return value


def _pattern_from_config(item: Any, group: str) -> Pattern:
    if isinstance(item, str):
        item = {"pattern": item}
    if not isinstance(item, Mapping) or not isinstance(item.get("pattern"), str):
        raise ValueError(f"a {group} pattern must be a string or an object with 'pattern'")
    unknown = set(item) - {"pattern", "kind", "hints", "ignore_case"}
    if unknown:
        raise ValueError(f"unknown keys in a {group} pattern: {sorted(unknown)}")
    hints = item.get("hints")
    if hints is not None and (not isinstance(hints, list) or not hints
                              or not all(isinstance(h, str) and h for h in hints)):
        raise ValueError("'hints' must be a non-empty list of non-empty strings")
    kind = item.get("kind", {"completion": "marker", "error": "pattern",
                             "waiting": "prompt"}[group])
    if not isinstance(kind, str):
        raise ValueError("'kind' must be a string")
    return Pattern.make(item["pattern"], kind=kind, hints=hints,
                        ignore_case=bool(item.get("ignore_case", False)))


class _Hints:
    """Where the hints of some patterns start in raw bytes.

    Case-sensitive hints go into one Aho-Corasick automaton (the Rust `aho-corasick` crate,
    whose SIMD prefilter scans at GB/s, outside the GIL); case-insensitive ones into a byte
    regex (slower; only configured patterns have them). When some pattern has no hints,
    `every` line is a candidate: `starts` gives where each CR/LF-delimited stretch starts.
    """

    __slots__ = ("_automaton", "_fold", "every", "longest")

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        literals: set[bytes] = set()
        folded: set[bytes] = set()
        self.every = False
        for p in patterns:
            if p.anchors:
                literals.update(p.anchors)
                continue
            fold = bool(p.regex.flags & re.IGNORECASE)
            for h in p.hints:
                if fold and not h.isascii():  # byte regexes fold ASCII only
                    self.every = True
                (folded if fold else literals).add(h.encode("utf-8"))
            if not p.hints:
                self.every = True
        self._automaton = (ahocorasick_rs.BytesAhoCorasick(
            sorted(literals), matchkind=ahocorasick_rs.MatchKind.LeftmostFirst)
            if literals else None)
        self._fold = (re.compile(b"|".join(b"(?i:" + re.escape(h) + b")"
                                           for h in sorted(folded))) if folded else None)
        self.longest = max(map(len, literals | folded), default=1)

    def starts(self, data: bytes | memoryview) -> list[int]:
        """Sorted offsets in `data` where a hint starts (at least one in each line that
        holds one: matches do not overlap, and no hint spans a CR or LF)."""
        if self.every:
            return [m.start() for m in _LINE_RE.finditer(data)]
        found = ([s for _, s, _ in self._automaton.find_matches_as_indexes(data)]
                 if self._automaton is not None else [])
        if self._fold is not None:
            found = sorted(set(found).union(m.start() for m in self._fold.finditer(data)))
        return found


_LINE_RE = re.compile(rb"[^\r\n]+")


# --- default patterns -------------------------------------------------------------------------

_P = Pattern.make
# the [SEMO:…] markers: activities/monitor/markers.py. Tool output (under ⎿) is not the
# agent's reply.

_PR = _P(f"(?P<url>{markers.PR_URL})", kind="pr_created", hints=("/pull/",))
_COMMIT = _P(r"^[\s⎿│]*\[(?P<branch>[^\]\s]+)(?: \(root-commit\))? (?P<sha>[0-9a-f]{7,40})\] "
             r"(?P<message>.*\S)", kind="commit", hints=("]",),
             anchors=(b"] ", b"]\x1b["))  # "] " or "]" + a cursor move (a blank)

_SHELL_COMPLETION = (_P(markers.SHELL_DONE, kind="marker", hints=markers.DONE_HINTS),
                     _COMMIT, _PR)
_CLAUDE_COMPLETION = (_P(markers.CLAUDE_DONE, kind="marker", hints=markers.DONE_HINTS),
                      _COMMIT, _PR)

_SHELL_ERROR = (_P(markers.SHELL_ERROR, kind="marker", hints=markers.ERROR_HINTS),)
# Agent failures count only where they start a line (after glyphs), so prose that mentions
# "rate limit" or "API Error" does not fail a job; Claude's retry notices are not failures.
_LEAD = r"^[^A-Za-z0-9]*"
_CLAUDE_ERROR = (
    _P(markers.CLAUDE_ERROR, kind="marker", hints=markers.ERROR_HINTS),
    _P(r"^(?!.*\b[Rr]etrying\b)[^A-Za-z0-9]*(?P<reason>API Error(?::| \().*?)\s*$",
       kind="api_error", hints=("API",)),
    _P(_LEAD + r"(?P<reason>Credit balance is too low\b.*?)\s*$", kind="billing",
       hints=("Credit",)),
    _P(_LEAD + r"(?P<reason>Invalid API key(?:\s*[·•∙-].*?)?)\s*$", kind="auth",
       hints=("API",)),
    _P(_LEAD + r"(?P<reason>OAuth token (?:has )?expired\b.*?)\s*$", kind="auth",
       hints=("OAuth",)),
    _P(_LEAD + r"(?P<reason>Prompt is too long\b.*?)\s*$", kind="api_error", hints=("Prompt",)),
    _P(_LEAD + r"(?P<reason>(?:Claude (?:AI )?)?[Uu]sage limit reached\b.*?)\s*$",
       kind="rate_limit", hints=("imit",)),
    _P(_LEAD + r"(?P<reason>(?:\d+-hour|[Ww]eekly|[Ss]ession|[Dd]aily) limit reached\b.*?)\s*$",
       kind="rate_limit", hints=("imit",)),
    _P(_LEAD + r"(?P<reason>(?:Error: )?[Rr]ate[ _-]?[Ll]imit(?:ed|_error| exceeded| reached)"
       r"\b.*?)\s*$", kind="rate_limit", hints=("imit",)),
)

# Searched anywhere in a line, also in the unfinished last line: each must be prefix-stable.
_WAITING = (
    _P(r"Do you want to [^?\n]{1,300}\?", kind="permission", hints=("want",)),
    _P(r"Do you trust the files in this folder\?", kind="trust", hints=("trust",)),
    _P(r"\bone you trust\?", kind="trust", hints=("trust",)),  # Claude Code 2.x
    _P(r"[(\[](?:[yY]/[nN]|[yY]es/[nN]o)(?:/\[fingerprint\])?[)\]]", kind="yes_no",
       hints=("y/n", "Y/n", "y/N", "Y/N", "s/n", "s/N")),
    _P(r"\[sudo\] password for [^:\n]{1,64}:", kind="password", hints=("password",)),
    _P(r"Enter passphrase for [^:\n]{1,200}:", kind="password", hints=("Enter",)),
    _P(r"Press (?:Enter|RETURN|any key) to continue", kind="continue", hints=("Press",)),
    # a selection menu, or the footer of a Claude Code dialog: the question is above it
    _P(r"❯\s*1\.\s*\S", kind="menu", hints=("❯",)),
    _P(r"Enter to confirm", kind="menu", hints=("confirm",)),
)

_DECOR = " \t│┃║|╭╮╰╯─━"
_BORDER = " \t│┃║|"
_PROMPT_ENDS = frozenset("$#%>❯›»│┃║|")


def _public(text: str) -> str:
    """Surrogate-escaped bytes -> U+FFFD, for text leaving the monitor."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decode(clean: bytes, final: bool = True) -> str:
    """Clean bytes -> str, one surrogate per undecodable byte (so lengths map back)."""
    if final:
        return clean.decode("utf-8", "surrogateescape")
    return codecs.utf_8_decode(clean, "surrogateescape", False)[0]


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


# --- the monitor ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wait:
    event: MonitorEvent
    question: str
    start: int  # where the prompt starts in the line's text


class OutputMonitor:
    """Feed raw PTY output in, get events out. Not thread-safe; one per terminal."""

    def __init__(self, patterns: PatternSet | None = None, *, commit_completes: bool = False,
                 stall_after_s: float | None = None) -> None:
        self.patterns = patterns if patterns is not None else PatternSet.for_agent("claude")
        self.commit_completes = commit_completes
        self.stall_after_s = stall_after_s
        self._offset = 0
        self._hold = b""  # raw bytes of an escape sequence that is not complete yet
        self._line = b""  # raw bytes of the unfinished screen line (its last LINE_CAP)
        self._line_at = 0  # stream offset of _line[0]
        self._line_hint = False  # a waiting hint was seen in the unfinished line
        self._line_wait: _Wait | None = None  # the prompt found in the unfinished line
        self._line_wait_done = False  # ... emitted, discarded, or answered
        self._context = b""  # the last _CONTEXT_BYTES raw bytes of finished lines
        self._typed: deque[str] = deque(maxlen=_ECHO_MEMORY)  # recently typed lines
        self._owed: deque[str] = deque(maxlen=_ECHO_MEMORY)  # typed lines not echoed yet
        self._seen: OrderedDict[tuple, None] = OrderedDict()  # event keys this turn
        self._last_output: float | None = None
        self._unstamped_output = False
        self._busy_since: float | None = None
        self._stall_reported = False

    @property
    def offset(self) -> int:
        """Raw bytes fed so far."""
        return self._offset

    # --- input side ---------------------------------------------------------------------

    def expect_echo(self, text: str) -> None:
        """We typed `text` into the terminal: its echo raises no events. Starts a new turn."""
        lines = [t for t in map(_squash, re.split(r"[\r\n]+", text)) if t]
        self._typed.extend(lines)
        if len(lines) == 1:  # see the module docstring: multi-line input has no bare echo
            self._owed.append(lines[0])
        self.note_input()

    def note_input(self) -> None:
        """Input reached the terminal (text or keys): an event seen before counts again."""
        self._seen.clear()
        if self._line_wait is not None:
            self._line_wait_done = True  # the prompt on screen has been answered

    # --- stall --------------------------------------------------------------------------

    def check_stall(self, now: float, busy: bool) -> MonitorEvent | None:
        """One stall event per quiet period: busy, and no output for `stall_after_s`."""
        if not busy:
            self._busy_since = None
            self._stall_reported = False
            return None
        if self._busy_since is None:
            self._busy_since = now
        if self._unstamped_output:  # output came through feed() without a time
            self._unstamped_output = False
            self._last_output = now
        if self.stall_after_s is None or self._stall_reported:
            return None
        quiet_since = self._busy_since
        if self._last_output is not None and self._last_output > quiet_since:
            quiet_since = self._last_output
        idle = now - quiet_since
        if idle < self.stall_after_s:
            return None
        self._stall_reported = True
        return MonitorEvent("stall", {"idle_s": round(idle, 3)}, self._offset)

    # --- output side --------------------------------------------------------------------

    def feed(self, data: bytes, now: float | None = None) -> list[MonitorEvent]:
        """Raw terminal output, in any chunking. Returns the events it completes, in order."""
        if not data:
            return []
        if now is None:
            self._unstamped_output = True
        else:
            self._last_output = now
            self._unstamped_output = False
        self._stall_reported = False

        events: list[MonitorEvent] = []
        raw = self._hold + data if self._hold else bytes(data)
        base = self._offset - len(self._hold)  # stream offset of raw[0]
        self._offset += len(data)

        # hold back an escape sequence that the next read may complete, or CRs at the end:
        # the next read may bring the LF of a CR LF
        cut = len(raw)
        esc = raw.rfind(b"\x1b", max(0, cut - _MAX_ESCAPE))
        if esc >= 0 and _INCOMPLETE_RE.match(raw, esc):
            cut = esc
        else:
            while cut and raw[cut - 1] == 13 and len(raw) - cut < _MAX_CR_RUN:
                cut -= 1
        if cut < len(raw):
            self._hold = raw[cut:]
            raw = raw[:cut]
        else:
            self._hold = b""
        if not raw:
            return events

        # everything up to the last line end is finished
        done = max(raw.rfind(b"\n"), raw.rfind(b"\r")) + 1
        if raw.find(b"\x1b[", done) >= 0:
            for m in _LINE_ESC_RE.finditer(raw, done):
                done = m.end()
        if done == 0:
            self._extend_line(raw, base)
            self._check_line(len(raw), events)
            return events

        if self._line:
            batch, batch_at = self._line + raw[:done], self._line_at
        else:
            batch, batch_at = (raw[:done] if done < len(raw) else raw), base
        self._scan(batch, batch_at, events)
        if len(batch) >= _CONTEXT_BYTES:
            self._context = batch[-_CONTEXT_BYTES:]
        else:
            self._context = (self._context + batch)[-_CONTEXT_BYTES:]
        self._line = b""
        self._line_hint = False
        self._line_wait = None
        self._line_wait_done = False
        if done < len(raw):
            self._extend_line(raw[done:], base + done)
            self._check_line(len(raw) - done, events)
        return events

    def _extend_line(self, raw: bytes, at: int) -> None:
        if self._line:
            line = self._line + raw
        else:
            line, self._line_at = raw, at
        if len(line) > LINE_CAP:
            self._line_at += len(line) - LINE_CAP
            line = line[-LINE_CAP:]
        self._line = line

    # --- finished lines -----------------------------------------------------------------

    def _scan(self, batch: bytes, at: int, events: list[MonitorEvent]) -> None:
        """Match the lines of `batch` (finished lines; it ends with a line end) that hold a
        hint. `at` is the stream offset of batch[0]."""
        hits = self.patterns._hints.starts(batch)
        n = len(batch)
        next_lf = next_cr = -1
        pos = i = 0
        forced = self._line_wait is not None  # the first line showed a prompt before it ended
        while pos < n:
            if forced:
                hit = 0
            else:
                i = bisect.bisect_left(hits, pos, i)
                if i == len(hits):
                    return
                hit = hits[i]
            # the CR/LF-delimited stretch around the hit; line escapes split it further
            start = max(batch.rfind(b"\n", pos, hit), batch.rfind(b"\r", pos, hit), pos - 1) + 1
            if next_lf < hit:
                next_lf = batch.find(b"\n", hit)
                if next_lf < 0:
                    next_lf = n
            if next_cr < hit:
                next_cr = batch.find(b"\r", hit)
                if next_cr < 0:
                    next_cr = n
            end = min(next_lf, next_cr)
            term = end  # past the line end: CR LF, CR CR LF, CR, LF (one line end)
            if end < n:
                while term < n and batch[term] == 13:
                    term += 1
                if term < n and batch[term] == 10:
                    term += 1
            self._stretch(batch, at, start, end, term, forced, hits, events)
            forced = False
            pos = term

    def _stretch(self, batch: bytes, at: int, start: int, end: int, term: int, forced: bool,
                 hits: list[int], events: list[MonitorEvent]) -> None:
        """The screen lines in batch[start:end], which batch[end:term] ends (CR/LF; nothing
        at the end of the batch); the one at 0 is `forced` (a prompt was found in it while
        it was unfinished). `hits`: where hints start in the batch."""
        every = self.patterns._hints.every
        bounds = [(start, start)]
        if batch.find(b"\x1b[", start, end) >= 0:
            bounds += [(m.start(), m.end()) for m in _LINE_ESC_RE.finditer(batch, start, end)]
        bounds.append((end, term))
        for (_, s), (e, after) in zip(bounds, bounds[1:], strict=False):
            if e <= s:
                continue
            window = max(s, e - LINE_CAP)
            first = forced and s == 0
            if first or every or _any_between(hits, window, e):
                self._finish_line(batch, at, s, window, e, after, first, events)

    def _finish_line(self, batch: bytes, at: int, start: int, window: int, end: int,
                     term: int, first: bool, events: list[MonitorEvent]) -> None:
        text = _decode(_clean(batch[window:end]))
        core = _squash(text)
        if not core:
            return
        echo = self._echo(core)  # (where the typed text starts in core, typed line) or None
        if echo is not None:
            try:
                self._owed.remove(echo[1])
            except ValueError:
                pass

        wait = self._line_wait if first else None
        if wait is not None:
            if not self._line_wait_done:
                self._line_wait_done = True
                if echo is None or _squashed_at(text, wait.start) < echo[0]:
                    self._emit(events, wait.event, ("waiting_input", wait.question))
        elif self.patterns.waiting:
            found = self._find_wait(
                text, lambda: (self._context
                               + batch[max(0, start - _CONTEXT_BYTES):start])[-_CONTEXT_BYTES:])
            if found is not None and (echo is None or _squashed_at(text, found[1]) < echo[0]):
                j, _start, question = found
                raw_at = _raw_index(batch, window, _byte_len(text[:j]))
                ev = MonitorEvent("waiting_input", {"question": question}, at + raw_at)
                self._emit(events, ev, ("waiting_input", question))
        if echo is not None:
            return

        offset = at + term
        line = _public(text.strip(_DECOR))
        for p in self.patterns.error:
            m = p.regex.search(text)
            if m is not None:
                reason = m.groupdict().get("reason")
                reason = _public(reason.strip()) if reason and reason.strip() else line
                self._emit(events, MonitorEvent("error", {"reason": reason, "text": line}, offset),
                           ("error", reason))
                return
        for p in self.patterns.completion:
            m = p.regex.search(text)
            if m is None:
                continue
            data: dict[str, Any] = {"kind": p.kind, "text": line}
            for name, value in m.groupdict().items():
                if value is not None and name not in data:
                    data[name] = _public(value)
            kind = "commit" if p.kind == "commit" and not self.commit_completes else "completion"
            ident = data.get("url") or data.get("sha") or line
            self._emit(events, MonitorEvent(kind, data, offset), (kind, p.kind, ident))
            return

    # --- the unfinished line ------------------------------------------------------------

    def _check_line(self, added: int, events: list[MonitorEvent]) -> None:
        """Look for a prompt in the unfinished line, whose last `added` raw bytes are new."""
        wait_hints = self.patterns._wait_hints
        if wait_hints is None or self._line_wait_done:
            return
        line = self._line
        if not self._line_hint:
            look = max(0, len(line) - added - wait_hints.longest)
            if not wait_hints.starts(memoryview(line)[look:] if look else line):
                return
            self._line_hint = True
        text = _decode(_clean(line), final=False)
        if self._line_wait is None:
            found = self._find_wait(text, lambda: self._context)
            if found is None:
                return
            j, start, question = found
            raw_at = _raw_index(line, 0, _byte_len(text[:j]))
            ev = MonitorEvent("waiting_input", {"question": question}, self._line_at + raw_at)
            self._line_wait = _Wait(ev, question, start)
        # emit now, unless the line may still turn out to be the echo of what we typed
        if not self._may_be_echo(_squash(text), _squashed_at(text, self._line_wait.start)):
            self._line_wait_done = True
            self._emit(events, self._line_wait.event, ("waiting_input", self._line_wait.question))

    # --- helpers ------------------------------------------------------------------------

    def _find_wait(self, text: str, context: Callable[[], bytes]
                   ) -> tuple[int, int, str] | None:
        """(end, start, question) of the earliest-ending prompt in one line, or None."""
        best: tuple[int, re.Match[str], Pattern] | None = None
        for p in self.patterns.waiting:
            m = p.regex.search(text)
            if m is not None and (best is None or m.end() < best[0]):
                best = (m.end(), m, p)
        if best is None:
            return None
        end, m, p = best
        question = m.groupdict().get("question")
        if p.kind == "menu":
            question = _question_above(context())
        if not question:
            question = text[:end]
        return end, m.start(), _public(question.strip(_DECOR))

    def _emit(self, events: list[MonitorEvent], ev: MonitorEvent, key: tuple) -> None:
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > _DEDUPE_MEMORY:
            self._seen.popitem(last=False)
        events.append(ev)

    def _echo(self, core: str) -> tuple[int, str] | None:
        """(where the typed text starts, typed line) if a finished line is an echo."""
        found: tuple[int, str] | None = None
        for t in reversed(self._typed):
            if core == t:
                if t in self._owed:
                    return 0, t  # a bare echo, still owed
                continue
            at = _decorated_at(core, t)
            if at is not None and (found is None or at < found[0]):
                found = (at, t)
        return found

    def _may_be_echo(self, core: str, prompt_start: int) -> bool:
        """Whether an unfinished line may still become an echo that hides its prompt.

        A superset of what `_echo` says once the line is finished: the typed text must
        start at or before the prompt, after a prompt decoration (or, for a bare echo, at 0).
        """
        if not self._typed or not core:
            return False
        starts = [i + 1 for i, c in enumerate(core[: max(0, prompt_start)]) if c in _PROMPT_ENDS]
        for t in self._typed:
            if t in self._owed and t.startswith(core):
                return True
            for i in starts:
                rest = core[i:].lstrip()
                if rest and (t.startswith(rest) or (rest.startswith(t)
                                                    and not rest[len(t):].strip(_BORDER))):
                    return True
        return False


def _any_between(hits: list[int], start: int, end: int) -> bool:
    """Whether a sorted list holds a value in [start, end)."""
    i = bisect.bisect_left(hits, start)
    return i < len(hits) and hits[i] < end


def _squash(text: str) -> str:
    """Blanks collapsed and trimmed: echo is compared this way (a cursor-placed blank may
    stand for several)."""
    return " ".join(text.split())


def _squashed_at(text: str, i: int) -> int:
    """Where text[i] is in _squash(text)."""
    return len(_squash(text[:i] + "x")) - 1


def _decorated_at(core: str, t: str) -> int | None:
    """Where `t` starts in `core` if `core` is `t` behind a prompt and/or before a border."""
    body = core.rstrip(_BORDER)
    if body == t:
        return 0
    for cand in (core, body):
        if len(cand) > len(t) and cand.endswith(t):
            at = len(cand) - len(t)
            pre = cand[:at].rstrip()
            if pre and pre[-1] in _PROMPT_ENDS:
                return at
    return None


def _question_above(context: bytes) -> str | None:
    """The nearest line above a menu that asks something, else the nearest line of text."""
    nearest = None
    lines = [x for x in _clean(context).split(b"\n") if x.strip()]
    for raw_line in reversed(lines[-12:]):
        line = _decode(raw_line).strip(_DECOR)
        if not any(c.isalnum() for c in line):
            continue
        if "?" in line:
            return _public(line[: line.index("?") + 1])
        if line.endswith(":"):
            return _public(line)
        nearest = nearest or line
    return _public(nearest) if nearest else None
