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

import os
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
    """Whether Claude Code has written this conversation (`projects/<folder>/<id>.jsonl`)."""
    return any((config_dir(profile) / "projects").glob(f"*/{conversation}.jsonl"))


def start_args(profile: AgentProfile, session_id: str, generation: int) -> list[str]:
    """The arguments a start of the session's agent adds to the profile's argv."""
    if not (profile.hooks and profile.resume_conversation):
        return profile.resume_args if generation > 0 else []
    conversation = conversation_id(session_id)
    if has_transcript(profile, conversation):
        return ["--resume", conversation]
    return ["--session-id", conversation]
