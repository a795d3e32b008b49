"""Patterns: the regexes that turn a line of output into an event, their literal hints (one
Aho-Corasick pass finds the lines worth a regex), and the default sets per agent."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

from activities.monitor import markers

try:  # Python 3.11+
    from re import (  # type: ignore[attr-defined]
        _constants as _sre_c,
        _parser as _sre_parse,
    )
except ImportError:  # pragma: no cover
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]


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
