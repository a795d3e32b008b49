"""The Codex CLI versions semo drives (docs/codex.md, "Supported versions").

`codex --version` prints `codex-cli 0.171.0`. Outside the range is a warning (an
`agent_version` session event), not a refusal."""

from __future__ import annotations

from typing import Any

from activities.claude.versions import cli_version, parse

#: the oldest release the end-to-end tests run (`make test`), and the newest seen to pass
OLDEST_SUPPORTED = "0.169.0"
NEWEST_TESTED = "0.171.0"
#: what the tests install by default (tests/codex_standin/install.py)
PINNED = "0.171.0"

__all__ = ["NEWEST_TESTED", "OLDEST_SUPPORTED", "PINNED", "cli_version", "support"]


def support(version: str | None) -> dict[str, Any]:
    """What semo makes of a Codex CLI version: `{version, supported, note}`."""
    found = parse(version or "")
    if found is None:
        return {"version": version, "supported": False,
                "note": "could not tell the Codex CLI version (`codex --version`)"}
    if found < parse(OLDEST_SUPPORTED):  # type: ignore[operator]
        return {"version": version, "supported": False,
                "note": f"Codex CLI {version} is older than the oldest supported "
                        f"({OLDEST_SUPPORTED}); update it: npm install -g @openai/codex"}
    if found > parse(NEWEST_TESTED):  # type: ignore[operator]
        return {"version": version, "supported": True,
                "note": f"Codex CLI {version} is newer than the newest tested "
                        f"({NEWEST_TESTED}); if sessions misbehave, see docs/codex.md"}
    return {"version": version, "supported": True, "note": None}

