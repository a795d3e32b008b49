"""The id rule: office, session and job-free ids name folders, branches and workflow ids, so
they are short, start with a letter or digit, and hold no path separators.

One pattern; the API's path parameters, the command payloads and the client machine (which
makes folders from them) all check it. Deterministic (no I/O)."""

from __future__ import annotations

import re

#: an id, unanchored (`Path(pattern=...)` and pydantic want it anchored: `ID_ANCHORED`)
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ID_ANCHORED = f"^{ID_PATTERN}$"
ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None
