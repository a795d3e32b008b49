"""Codex's model responses for the usage tracker (activities/usage.py), from its rollout file.

Each response is a `token_usage_record` line (`response_id`, `turn_id`, `usage`); the
turn's model is in its `turn_context` line, and `task_complete` ends the turn. Codex counts
as the Responses API does: `input_tokens` INCLUDES the cached ones. semo's `usage` means the
same for every agent (docs/codex.md), so `input_tokens` here is the uncached part and
`cache_read_input_tokens` the cached one."""

from __future__ import annotations

from activities.codex.rollout import is_rollout, payload, read_lines
from activities.usage import Response, UsageSource, _count, _File, _Session, _timestamp

#: a response whose turn's model was not read (a rollout file cut short) says so
UNKNOWN_MODEL = "unknown"


def response_of(entry: dict, state: _File, session: _Session) -> Response | None:
    """The response a rollout line records (None for other lines); `turn_context` lines
    note the turn's model, `task_complete` lines end the turn."""
    kind, p = entry.get("type"), payload(entry)
    turn = p.get("turn_id") if isinstance(p.get("turn_id"), str) else None
    if kind == "turn_context" and turn and isinstance(p.get("model"), str):
        state.models[turn] = p["model"][:200]
    elif kind == "event_msg" and p.get("type") == "task_complete" and turn:
        session.ended.add(turn)
    elif kind == "token_usage_record":
        usage, response_id = p.get("usage"), p.get("response_id")
        if not (isinstance(usage, dict) and isinstance(response_id, str) and response_id):
            return None
        cached = _count(usage.get("cached_input_tokens"))
        return Response(
            session_id=session.session_id, message_id=response_id[:200],
            office_id=session.office_id, job_id=session.jobs.get(turn) if turn else None,
            model=state.models.get(turn or "", UNKNOWN_MODEL), sidechain=False,
            input_tokens=max(_count(usage.get("input_tokens")) - cached, 0),
            output_tokens=_count(usage.get("output_tokens")),
            cache_read_input_tokens=cached,
            cache_creation_input_tokens=_count(usage.get("cache_write_input_tokens")),
            responded_at=_timestamp(entry.get("timestamp")))
    return None


def read_new(session: _Session) -> dict[str, Response]:
    """The responses in what the session's rollout file gained since the last read."""
    found: dict[str, Response] = {}
    if session.transcript is None:
        return found
    state = session.files.setdefault(session.transcript, _File())
    for entry in read_lines(session.transcript, state):
        r = response_of(entry, state, session)
        if r is not None:
            if r.message_id in found:
                found[r.message_id].merge(r)
            else:
                found[r.message_id] = r
    return found


#: the usage tracker's source for Codex sessions; the UserPromptSubmit hook's `turn_id` is
#: what the rollout's lines name the turn by
ROLLOUT = UsageSource(accepts=is_rollout, read=read_new, prompt_key="turn_id")
