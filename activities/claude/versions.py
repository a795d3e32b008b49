"""The Claude Code versions semo drives, and the version a profile's CLI is.

Claude Code ships several releases a week and users run whatever npm served them, so the
client worker asks each Claude Code profile's binary for its version (`claude --version`:
`2.1.330 (Claude Code)`) and says so when it is outside the range tested here
(docs/claude-code.md records what differs across it): in the `client_machines` row, the
worker's log, and an `agent_version` session event. Outside the range is a warning, not a
refusal: a newer CLI usually works, and the event says where to look when it does not.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the oldest release the end-to-end tests run (`make test`), and the newest seen to pass
OLDEST_SUPPORTED = "2.1.197"
NEWEST_TESTED = "2.1.332"
VERSION_TIMEOUT_S = 30.0
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")

_cache: dict[tuple[str, int, int], str | None] = {}


def parse(text: str) -> tuple[int, int, int] | None:
    m = _VERSION_RE.search(text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def support(version: str | None) -> dict[str, Any]:
    """What semo makes of a CLI version: `{version, supported, note}`."""
    found = parse(version or "")
    if found is None:
        return {"version": version, "supported": False,
                "note": "could not tell the Claude Code version (`claude --version`)"}
    if found < parse(OLDEST_SUPPORTED):  # type: ignore[operator]
        return {
            "version": version,
            "supported": False,
            "note": f"Claude Code {version} is older than the oldest supported "
            f"({OLDEST_SUPPORTED}); update it: npm install -g @anthropic-ai/claude-code",
        }
    if found > parse(NEWEST_TESTED):  # type: ignore[operator]
        return {"version": version, "supported": True,
                "note": f"Claude Code {version} is newer than the newest tested "
                        f"({NEWEST_TESTED}); if sessions misbehave, see docs/claude-code.md"}
    return {"version": version, "supported": True, "note": None}


def cli_version(argv0: str, env: dict[str, str]) -> str | None:
    """`argv0 --version` as the agent would run it (its PATH), cached per binary file."""
    path = shutil.which(argv0, path=env.get("PATH") or os.environ.get("PATH"))
    if path is None:
        return None
    st = Path(path).stat()
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    if key in _cache:
        return _cache[key]
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=VERSION_TIMEOUT_S, stdin=subprocess.DEVNULL,
                             env={**os.environ, **env, "DISABLE_AUTOUPDATER": "1"})
        found = parse(out.stdout)
        version = ".".join(map(str, found)) if found else None
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("%s --version failed: %s", path, err)
        version = None
    _cache[key] = version
    return version
