"""What a session accepts now: the update validators' checks of its state, as the
ApplicationError the command executor maps to HTTP (409, 503). Deterministic (no I/O)."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from workflows.contracts import SessionState
from workflows.failures import ErrorType


def check_alive(s: SessionState, *, terminating: bool) -> None:
    """Refuse a command to a session that is gone, failing or not started yet."""
    if terminating or s.status == "terminated":
        raise ApplicationError("session is terminated", type=ErrorType.SESSION_GONE)
    if s.circuit == "open":
        raise ApplicationError(
            "session's circuit is open after repeated failures; it will probe again after "
            "its cool-down", type=ErrorType.CIRCUIT_OPEN)
    if s.status in ("starting", "restarting", "failed"):
        raise ApplicationError(
            f"session is {s.status}, not ready", type=ErrorType.SESSION_NOT_READY
        )


def check_accepts_prompt(s: SessionState, *, terminating: bool) -> None:
    """Refuse a prompt unless the session is ready with no job and no open question."""
    check_alive(s, terminating=terminating)
    if s.status == "waiting_input":
        raise ApplicationError(
            "session is waiting for input (a question or dialog is open); answer it "
            "first (POST .../keys), then send the prompt", type=ErrorType.SESSION_BUSY)
    if s.status != "ready" or s.job is not None:
        raise ApplicationError(
            f"session is {s.status} with job {s.job.job_id if s.job else '-'}; "
            "wait for it to finish or cancel it", type=ErrorType.SESSION_BUSY)
