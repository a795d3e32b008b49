"""The OutputMonitor: raw PTY bytes in, events out, chunking-invariant (see the package doc)."""

from __future__ import annotations

import bisect
import codecs
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from activities.monitor.events import MonitorEvent
from activities.monitor.patterns import Pattern, PatternSet
from semo.terminal_text import (  # the grammar, and the text view the API uses too
    DROP_RE as _DROP_RE,
    GAP_RE as _GAP_RE,
    INCOMPLETE_RE as _INCOMPLETE_RE,
    LINE_ESC_RE as _LINE_ESC_RE,
    MAX_ESCAPE as _MAX_ESCAPE,
    RAW_TOKEN_RE as _RAW_TOKEN_RE,
)

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
        last = _last_line_escape(raw, done, len(raw))
        if last is not None:
            done = last.end()
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
        if self.patterns._hints.every or forced:
            bounds = [(start, start)]
            if batch.find(b"\x1b[", start, end) >= 0:
                bounds += [(m.start(), m.end()) for m in _LINE_ESC_RE.finditer(batch, start, end)]
            bounds.append((end, term))
            segments = [(s, e, after)
                        for (_, s), (e, after) in zip(bounds, bounds[1:], strict=False)]
        else:  # only the lines a hint is in (a TUI's frame has hundreds of line escapes)
            segments = _segments_with_hits(batch, start, end, term, hits)
        for s, e, after in segments:
            if e <= s:
                continue
            window = max(s, e - LINE_CAP)
            first = forced and s == 0
            if first or self.patterns._hints.every or _any_between(hits, window, e):
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


def _last_line_escape(raw: bytes, start: int, before: int,
                      limit: int | None = None) -> re.Match[bytes] | None:
    """The last line escape (LINE_ESC_RE) that starts in raw[start:before] (matched up to
    `limit`, default `before`), searched from the end: a TUI's frame holds hundreds, and
    the last is usually at its very end."""
    limit = before if limit is None else limit
    j = raw.rfind(b"\x1b[", start, before + 1)  # the needle's 2 bytes: one may be at `before`
    while j >= 0:
        m = _LINE_ESC_RE.match(raw, j, limit)
        if m is not None:
            return m
        j = raw.rfind(b"\x1b[", start, j + 1)
    return None


def _segments_with_hits(batch: bytes, start: int, end: int, term: int,
                        hits: list[int]) -> list[tuple[int, int, int]]:
    """The (start, end, after) of each line of batch[start:end] (line escapes split it; the
    last one ends with batch[end:term]) that a hit starts in, in order, each once: the
    lines `finditer` over every line escape would give, without visiting the others."""
    out: list[tuple[int, int, int]] = []
    i = bisect.bisect_left(hits, start)
    while i < len(hits) and hits[i] < end:
        h = hits[i]
        before = _last_line_escape(batch, start, h + 1, end)
        if before is not None and before.end() > h:  # the hit is inside a line escape
            i += 1
            continue
        s = before.end() if before is not None else start
        after = _LINE_ESC_RE.search(batch, h, end)
        e, t = (after.start(), after.end()) if after is not None else (end, term)
        out.append((s, e, t))
        i = bisect.bisect_left(hits, max(e, h + 1), i + 1)
    return out


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
