"""Terminal output as text: the byte grammar of escape sequences and controls, and
`strip_terminal_escapes` for people (the API's `format=text`, the CLI).

Pure and small, so the API can show text without loading the output monitor (whose
Aho-Corasick automaton lives in activities/); the monitor matches with the same grammar.
"""

from __future__ import annotations

import codecs
import re

# --- the terminal byte grammar ----------------------------------------------------------------
#
# Every body is bounded, so whether a sequence is complete is decided by at most
# `MAX_ESCAPE` bytes; no body may contain ESC, CR or LF, so a line break is never inside a
# sequence and "ESC[" always starts one. That is what makes the result chunking-invariant.

CSI_BODY = rb"\[[0-?]{0,64}[ -/]{0,8}"  # after ESC: parameters, intermediates
CSI = rb"\x1b" + CSI_BODY
STRING_BODY = rb"[^\x07\x1b\n\r]{0,4096}"
MAX_ESCAPE = 2 + 4096 + 2
#: cursor motion to another line or to column 1, erase in line/display, scroll: the line
#: ends here
LINE_ESC_RE = re.compile(CSI + rb"[ABEFHJKSTdf]|\x1b\[[01]?G")
#: cursor forward, or to a column (Claude Code writes `Do ESC[6Gyou ESC[10Gwant`): a blank
GAP_RE = re.compile(CSI + rb"[CG]")
#: everything else that is dropped: the other escapes and C0 controls but TAB, LF, CR
DROP = (
    rb"\x1b(?:" + CSI_BODY + rb"[@-~]"  # CSI
    rb"|[\]PX^_]" + STRING_BODY + rb"(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC
    rb"|[ -/]{0,4}[0-~]"  # nF, Fp, Fe, Fs: ESC ( B, ESC 7, ESC M, ...
    rb")?"  # or a stray ESC
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]"
)
DROP_RE = re.compile(DROP)
#: an escape sequence that more bytes could still extend (held back until they come)
INCOMPLETE_RE = re.compile(
    rb"\x1b(?:" + CSI_BODY + rb"|[\]PX^_]" + STRING_BODY + rb"|[ -/]{0,4})\Z"
)
#: tokens inside one raw line, to map a position in clean text back to the raw stream
RAW_TOKEN_RE = re.compile(rb"(?P<gap>" + GAP_RE.pattern + rb")|" + DROP)


def strip_terminal_escapes(data: bytes | str) -> str:
    """Terminal output as plain text, for people and `format=text`.

    Escape sequences and control bytes are removed, `\\r\\n` becomes `\\n`, and a line
    rewritten with lone `\\r` shows its final text (the last non-blank rewrite). Cursor
    motion is not emulated. Invalid UTF-8 becomes U+FFFD; an escape sequence or character
    cut off at the end (a page boundary) is left out.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    esc = raw.rfind(b"\x1b", max(0, len(raw) - MAX_ESCAPE))
    if esc >= 0 and INCOMPLETE_RE.match(raw, esc):  # a page of output may end inside one
        raw = raw[:esc]
    raw = GAP_RE.sub(b" ", LINE_ESC_RE.sub(b"", raw))
    raw = DROP_RE.sub(b"", raw)
    text = codecs.utf_8_decode(raw, "replace", False)[0]  # ... or inside a character
    if "\r" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        lines.append(line)
    return "\n".join(lines)
