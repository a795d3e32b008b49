"""Which agent profiles can run on this machine, as the client worker registers them.

Each profile's program is looked up as its agent would be started (its `PATH`); a Claude Code
profile's CLI is also asked its version (activities/claude/versions.py). The worker records
the answer in `client_machines.agent_versions`, so the API refuses a session whose agent cannot
start here (a 4xx before anything is recorded) and `GET /api/machines` shows it.

A missing program is a warning in the log only for a profile this machine configured
(`SEMO_AGENT_PROFILES`): the built-in `claude` on a machine set up for shell agents is not news.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from activities.claude import versions as claude_versions
from semo.settings import AgentProfile

log = logging.getLogger(__name__)


def find_program(profile: AgentProfile) -> str | None:
    """The program the profile runs, found as the agent would find it; None when missing."""
    return shutil.which(profile.argv[0], path=profile.env.get("PATH") or os.environ.get("PATH"))


def survey(profiles: dict[str, AgentProfile], configured: set[str]) -> dict[str, dict[str, Any]]:
    """`{profile: {program, runs, version, supported, note}}` (blocking: run it in a thread)."""
    found: dict[str, dict[str, Any]] = {}
    for name, profile in profiles.items():
        program = find_program(profile)
        if program is None:
            entry = {"program": None, "runs": False, "version": None, "supported": False,
                     "note": f"`{profile.argv[0]}` was not found on this machine's PATH"}
        elif profile.kind == "claude":
            entry = {"program": program, "runs": True,
                     **claude_versions.support(claude_versions.cli_version(program, profile.env))}
        else:
            entry = {"program": program, "runs": True, "version": None, "supported": True,
                     "note": None}
        found[name] = entry
        if entry["note"]:
            level = logging.WARNING if name in configured or entry["runs"] else logging.INFO
            log.log(level, "agent profile %r: %s", name, entry["note"])
    return found
