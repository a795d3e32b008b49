"""Token usage of Claude Code sessions, read on the client machine from their transcripts.

Claude Code records every model response in its transcript (docs/claude-code.md): an
`assistant` line with `message.id`, `message.model` and `message.usage`, one line per content
block (so one response can be several lines with the same id), subagents' responses in
`<transcript>/subagents/agent-*.jsonl` (isSidechain). A `user` line carries the `promptId`
of the prompt it belongs to (a subagent's first line that of the prompt that started it),
and the UserPromptSubmit hook carries the same `prompt_id` while we know which job typed it:
that is how a response is told to a job, even when it is read late.

`UsageTracker` reads each tracked session's transcript files from where it stopped, and
upserts the responses it found into `model_responses` (db/usage.py), keyed by (session,
message id) with counts that only grow: reading a file again, after a worker restart or
whatever else, never counts a response twice. It reads every `interval_s` while the
session lives, and at once before a job's completion or error is signalled (so a job that
is `done` already shows its usage). Nothing of it goes through workflow history.

`semo_tokens_total{kind, model}` counts what the upserts added, so it too counts a
response once, however often it is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from db.usage import Response, mark_session, record_responses

log = logging.getLogger(__name__)

#: a file is read in chunks of this size, at most MAX_CHUNKS per read (the rest waits for
#: the next read); a line longer than a chunk is skipped
READ_CHUNK = 4 * 1024 * 1024
MAX_CHUNKS = 16
#: how long a read before a job's end may hold its completion signal
FLUSH_TIMEOUT_S = 10.0
#: Claude Code writes transcript lines through a buffer: the turn's last response can land a
#: moment after the Stop hook ran. A job's end waits this long at most for it.
SETTLE_S = 3.0
SETTLE_POLL_S = 0.05
#: Claude Code's own messages (an API error shown as a reply) carry this model and no usage
SYNTHETIC_MODEL = "<synthetic>"
_METRIC_KINDS = {"input_tokens": "input", "output_tokens": "output",
                 "cache_read_input_tokens": "cache_read",
                 "cache_creation_input_tokens": "cache_creation"}

Tap = Callable[[dict, "str | None"], None]


@dataclass(frozen=True)
class UsageSource:
    """Where an agent kind records its model responses (Claude Code's transcripts are the
    default; activities/codex/usage.py has Codex's rollout files)."""

    #: a path a hook names that is this agent's record (hook events come from the agent)
    accepts: Callable[[Path], bool]
    #: the responses in what the record gained since the last read
    read: Callable[[_Session], dict[str, Response]]
    #: the field of the UserPromptSubmit hook that the record's lines name the prompt by
    prompt_key: str = "prompt_id"


@dataclass
class _File:
    offset: int = 0
    #: the prompt the lines read so far belong to (the last `user` line's promptId)
    prompt_id: str | None = None
    #: in the middle of a line longer than a chunk
    skipping: bool = False
    #: the model of each prompt, for records that name it apart from the responses (Codex)
    models: dict[str, str] = field(default_factory=dict)


@dataclass
class _Session:
    session_id: str
    office_id: str
    transcript: Path | None = None
    #: prompt id (from the UserPromptSubmit hook) -> the job that typed it
    jobs: dict[str, str] = field(default_factory=dict)
    #: job -> its latest prompt id
    last_prompt: dict[str, str] = field(default_factory=dict)
    #: prompts whose turn's final response has been read
    ended: set[str] = field(default_factory=set)
    files: dict[Path, _File] = field(default_factory=dict)
    #: read but not yet written (Postgres was away): written with the next flush
    pending: dict[str, Response] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: where the agent records its responses (None: Claude Code's transcripts)
    source: UsageSource | None = None


def is_transcript(path: Path) -> bool:
    """A path a hook may name as the transcript: `…/projects/<folder>/<session>.jsonl`.
    (A hook event comes from the agent's side; this keeps it to Claude Code's layout.)"""
    return path.is_absolute() and path.suffix == ".jsonl" and path.parent.parent.name == "projects"


def transcript_files(transcript: Path) -> list[Path]:
    """The main transcript and its subagents' files."""
    files = [transcript]
    sub = transcript.with_suffix("") / "subagents"
    try:
        files += sorted(sub / e.name for e in os.scandir(sub)
                        if e.name.endswith(".jsonl") and e.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        pass
    return files


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def response_of(entry: dict, state: _File, session: _Session) -> Response | None:
    """The response an `assistant` line records (None for other lines); `user` lines move
    `state.prompt_id` on."""
    kind = entry.get("type")
    if kind == "user":
        if isinstance(entry.get("promptId"), str):
            state.prompt_id = entry["promptId"]
        return None
    if kind != "assistant":
        return None
    message = entry.get("message")
    if not isinstance(message, dict):
        return None
    msg_id, model, usage = message.get("id"), message.get("model"), message.get("usage")
    if not (isinstance(msg_id, str) and msg_id and isinstance(model, str) and model
            and model != SYNTHETIC_MODEL and isinstance(usage, dict)):
        return None
    creation = usage.get("cache_creation")
    one_hour = (
        _count(creation.get("ephemeral_1h_input_tokens")) if isinstance(creation, dict) else 0
    )
    written = _count(usage.get("cache_creation_input_tokens"))
    return Response(
        session_id=session.session_id, message_id=msg_id[:200], office_id=session.office_id,
        job_id=session.jobs.get(state.prompt_id) if state.prompt_id else None,
        model=model[:200], sidechain=bool(entry.get("isSidechain")),
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        cache_read_input_tokens=_count(usage.get("cache_read_input_tokens")),
        cache_creation_input_tokens=written, cache_creation_1h_input_tokens=min(one_hour, written),
        responded_at=_timestamp(entry.get("timestamp")))


def _ends_turn(entry: dict) -> bool:
    """A main-thread response that ends its turn (not a tool call; Claude Code's own error
    reply counts)."""
    message = entry.get("message")
    return (entry.get("type") == "assistant" and not entry.get("isSidechain")
            and isinstance(message, dict) and message.get("stop_reason") not in (None, "tool_use"))


def read_new(session: _Session) -> dict[str, Response]:
    """The responses in what was appended to the session's transcript files since the last
    read (complete lines only), by message id, each with its largest counts."""
    found: dict[str, Response] = {}
    if session.transcript is None:
        return found
    for path in transcript_files(session.transcript):
        state = session.files.setdefault(path, _File())
        try:
            if path.stat().st_size == state.offset:
                continue  # nothing new: not even opened
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                if (
                    size < state.offset
                ):  # replaced or truncated: read it again (nothing counts twice)
                    state.offset, state.prompt_id, state.skipping = 0, None, False
                for _ in range(MAX_CHUNKS):
                    f.seek(state.offset)  # where the last complete line ended
                    data = f.read(READ_CHUNK)
                    _take(data, state, session, found)
                    if len(data) < READ_CHUNK:
                        break
        except OSError:
            continue
    return found


def _take(data: bytes, state: _File, session: _Session, found: dict[str, Response]) -> None:
    """Take the complete lines of `data` (read at `state.offset`) and move the offset past them."""
    start = 0
    if state.skipping:  # the rest of a line longer than a chunk: no response is that long
        nl = data.find(b"\n")
        if nl < 0:
            state.offset += len(data)
            return
        start, state.skipping = nl + 1, False
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    if end <= start:
        if len(data) - start == READ_CHUNK:  # one line fills the chunk: skip it
            log.warning("%s: a transcript line over %d bytes skipped", session.session_id,
                        READ_CHUNK)
            state.offset, state.skipping = state.offset + len(data), True
        else:
            state.offset += start
        return
    for line in data[start:end].splitlines():
        if b"assistant" not in line and b"promptId" not in line:
            continue  # most lines (attachments, request blobs) are neither: not parsed
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if _ends_turn(entry) and state.prompt_id:
            session.ended.add(state.prompt_id)
        if (r := response_of(entry, state, session)) is not None:
            if r.message_id in found:
                found[r.message_id].merge(r)
            else:
                found[r.message_id] = r
    state.offset += end


class UsageTracker:
    """The client worker's usage reader: one per worker, sessions tracked while they live."""

    def __init__(self, pool: AsyncConnectionPool, meter: Any = None, *,
                 interval_s: float = 5.0) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.sessions: dict[str, _Session] = {}
        self._tokens = meter.create_counter(
            "semo_tokens_total", "model tokens used by this machine's agents, by kind and model",
            "tokens") if meter is not None else None
        self._task: asyncio.Task | None = None

    # --- sessions ---------------------------------------------------------------------------

    async def track(self, session_id: str, office_id: str,
                    source: UsageSource | None = None) -> Tap:
        """Start (or go on) tracking a session whose agent reports usage (in `source`;
        default Claude Code's transcripts); returns the tap its hook events go through:
        `tap(event, job_id of the turn under way or None)`."""
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = _Session(session_id, office_id)
        session.source = source
        try:
            async with self.pool.connection() as conn:
                await mark_session(conn, session_id, office_id)
        except Exception as err:  # the agent starts regardless; its jobs may show null for a while
            log.warning("could not mark %s as reporting usage: %s", session_id, err)

        accepts = source.accepts if source is not None else is_transcript
        prompt_key = source.prompt_key if source is not None else "prompt_id"

        def tap(event: dict, job_id: str | None) -> None:
            path = event.get("transcript_path")
            if isinstance(path, str) and accepts(Path(path)):
                session.transcript = Path(path)
            prompt_id = event.get(prompt_key)
            if (event.get("hook_event_name") == "UserPromptSubmit" and job_id
                    and isinstance(prompt_id, str)):
                session.jobs[prompt_id] = job_id
                session.last_prompt[job_id] = prompt_id

        return tap

    async def flush(self, session_id: str) -> None:
        """Read what the session's transcript gained and write it (raises when Postgres fails;
        what was read is kept for the next flush)."""
        session = self.sessions.get(session_id)
        if session is None:
            return
        async with session.lock:
            reader = session.source.read if session.source is not None else read_new
            found = await asyncio.to_thread(reader, session)
            for msg_id, r in found.items():
                if msg_id in session.pending:
                    session.pending[msg_id].merge(r)
                else:
                    session.pending[msg_id] = r
            if not session.pending:
                return
            async with self.pool.connection() as conn:
                grown = await record_responses(conn, list(session.pending.values()))
            session.pending.clear()
        self._count(grown)

    async def flush_before_end(self, session_id: str, job_id: str | None = None,
                               turn_ended: bool = False) -> None:
        """A flush before a job's end is signalled: bounded, and never in the signal's way.
        `turn_ended` (its Stop hook came): read until the turn's final response is in, for
        SETTLE_S at most."""
        session = self.sessions.get(session_id)
        if session is None:
            return
        prompt = session.last_prompt.get(job_id) if job_id and turn_ended else None
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await self.flush(session_id)
                deadline = time.monotonic() + SETTLE_S
                while prompt and prompt not in session.ended and time.monotonic() < deadline:
                    await asyncio.sleep(SETTLE_POLL_S)
                    await self.flush(session_id)
        except Exception as err:
            log.warning("usage of %s not saved before its job ended (the next read saves it): %s",
                        session_id, err)

    async def forget(self, session_id: str) -> None:
        """The session is gone from this machine: a last read, then stop tracking it."""
        await self.flush_before_end(session_id)
        self.sessions.pop(session_id, None)

    # --- the periodic reader ------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for session_id in list(self.sessions):
                try:
                    await self.flush(session_id)
                except Exception as err:
                    log.warning("usage of %s not saved (tried again in %.0fs): %s", session_id,
                                self.interval_s, err)

    async def close(self) -> None:
        """Stop reading, after a last read of every session."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for session_id in list(self.sessions):
            await self.flush_before_end(session_id)

    def _count(self, grown: list[dict]) -> None:
        if self._tokens is None:
            return
        for row in grown:
            for column, kind in _METRIC_KINDS.items():
                if row[column] > 0:
                    self._tokens.add(int(row[column]), {"kind": kind, "model": row["model"]})
