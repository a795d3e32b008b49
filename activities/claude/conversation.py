"""A session's Claude Code conversation: its own id from the first start on, and a restart
resumes exactly it (never "the most recent conversation in this folder", which another
session in the same folder may own).

The id is derived from the session id (a name-based UUID), so it is the session's for its
whole life without being stored anywhere: a new worker, a continued run or a restart after
a crash all compute the same one. A restart resumes it only if Claude Code wrote its
transcript (it does so with the first message): resuming a conversation that does not
exist fails the start.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from semo.settings import AgentProfile

#: the namespace of the conversation ids (fixed: changing it forgets every conversation)
NAMESPACE = uuid.UUID("6f1b3c7e-25d0-4a8e-9c51-5e3a0c2b7d19")


def conversation_id(session_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, session_id))


def config_dir(profile: AgentProfile) -> Path:
    """Where the profile's Claude Code keeps its state (`CLAUDE_CONFIG_DIR`, else ~/.claude
    of the HOME it runs with)."""
    env = {**os.environ, **profile.env}
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"])
    return Path(env.get("HOME") or Path.home()) / ".claude"


def has_transcript(profile: AgentProfile, conversation: str) -> bool:
    """Whether Claude Code has written this conversation (`projects/<folder>/<id>.jsonl`)
    with a message in it. A file holding only bookkeeping lines (an agent killed before it
    wrote the first prompt) is "No conversation found" to `--resume`, and makes
    `--session-id` say "already in use": it is set aside (renamed, kept)."""
    found = False
    for path in (config_dir(profile) / "projects").glob(f"*/{conversation}.jsonl"):
        if _has_message(path):
            found = True
        else:
            try:
                path.rename(path.with_name(f"{path.name}.empty-{time.time_ns()}"))
            except OSError:
                pass
    return found


def _has_message(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the kill
                if isinstance(entry, dict) and entry.get("type") in ("user", "assistant"):
                    return True
    except OSError:
        pass
    return False


def start_args(profile: AgentProfile, session_id: str, generation: int) -> list[str]:
    """The arguments a start of the session's agent adds to the profile's argv."""
    if not (profile.hooks and profile.resume_conversation):
        return profile.resume_args if generation > 0 else []
    conversation = conversation_id(session_id)
    if has_transcript(profile, conversation):
        return ["--resume", conversation]
    return ["--session-id", conversation]
