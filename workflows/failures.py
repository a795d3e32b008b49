"""Failures as types: the ApplicationError type names every layer shares, and why a session's
agent went away, each named where it is known rather than guessed later from message words.

Deterministic (no I/O): imported by workflows, activities and the command executor alike."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType


class ErrorType(StrEnum):
    """`ApplicationError.type` values: activities and workflows raise them, the command
    executor (semo/commands WORKFLOW_ERRORS) maps them to HTTP problems."""

    INVALID_INPUT = "InvalidInput"
    INVALID_WORKING_DIR = "InvalidWorkingDir"
    UNKNOWN_AGENT = "UnknownAgent"
    SPAWN_FAILED = "SpawnFailed"
    NO_TERMINAL = "NoTerminal"
    DIALOG_OPEN = "DialogOpen"
    CAPACITY_EXCEEDED = "CapacityExceeded"
    SESSION_BUSY = "SessionBusy"
    SESSION_NOT_READY = "SessionNotReady"
    SESSION_GONE = "SessionGone"
    INPUT_STALE = "InputStale"
    CIRCUIT_OPEN = "CircuitOpen"
    UNAVAILABLE = "Unavailable"
    #: a hand-off found no work: nothing uncommitted, no commit since the branch's start
    NOTHING_TO_HAND_OFF = "NothingToHandOff"
    #: git on the client machine refused (a rejected push, a hook); its words say why
    GIT_FAILED = "GitFailed"
    #: the client worker is restarting and left the agent running to the keeper
    WORKER_LEFT = "WorkerLeft"


class FailureKind(StrEnum):
    """Why an agent's run ended, as the bounded `cause` label of
    `semo_session_restarts_total`."""

    DRAINED = "drained"
    MACHINE_OFFLINE = "machine_offline"
    WORKER_LOST = "worker_lost"
    AGENT_EXITED = "agent_exited"
    AGENT_KILLED = "agent_killed"
    TIMEOUT = "timeout"
    TERMINATED = "terminated"
    OTHER = "other"


@dataclass(frozen=True)
class Failure:
    """An agent's run ended: `kind` for metrics and decisions, `reason` for people (it is what
    events and `last_error` record, worded as before)."""

    kind: FailureKind
    reason: str

    @property
    def drained(self) -> bool:
        """The machine's worker stopped on purpose: restart when it is back, no strike."""
        return self.kind is FailureKind.DRAINED



DRAINED = Failure(FailureKind.DRAINED, "client worker shut down (drained)")
TERMINATED = Failure(FailureKind.TERMINATED, "terminated")
START_FAILED = Failure(FailureKind.OTHER, "start failed")
MACHINE_OFFLINE = Failure(FailureKind.MACHINE_OFFLINE,
                          "machine offline: no client worker took the task")
WORKER_LOST = Failure(FailureKind.WORKER_LOST, "client worker lost (heartbeat timeout)")
WORKER_LEFT = Failure(FailureKind.WORKER_LOST,
                      "client worker restarting (it left the agent running to the keeper)")


def exited(exit_code: int | None, signal: int | None) -> Failure:
    """The agent's process ended by itself (an exit code) or was killed (a signal)."""
    if signal is None:
        return Failure(FailureKind.AGENT_EXITED, f"agent exited (code {exit_code})")
    return Failure(FailureKind.AGENT_KILLED, f"agent killed by signal {signal}")


def timed_out(*, starting: bool) -> Failure:
    return Failure(FailureKind.TIMEOUT, f"{'start' if starting else 'terminal'} timed out")


def reason_of(err: BaseException) -> str:
    """The message at the root of an activity failure."""
    if isinstance(err, ActivityError) and err.cause is not None:
        return reason_of(err.cause)
    return getattr(err, "message", None) or str(err) or type(err).__name__


def application_error(err: BaseException | None) -> ApplicationError | None:
    """The ApplicationError a Temporal failure carries: itself, or the one at the root of the
    activity failures wrapping it (an activity's, or an update's that ran one)."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return err if isinstance(err, ApplicationError) else None


def cause_type(err: BaseException | None) -> str | None:
    """The ApplicationError type at the root of an activity failure, if any."""
    app = application_error(err)
    return app.type if app is not None else None


def failure_of(err: ActivityError, *, starting: bool) -> Failure:
    """What an activity's failure says of the machine: offline, lost, slow, or its own error."""
    cause = err.cause
    if cause_type(err) == ErrorType.WORKER_LEFT:
        return WORKER_LEFT
    if isinstance(cause, TimeoutError):
        if cause.type == TimeoutType.SCHEDULE_TO_START:
            return MACHINE_OFFLINE
        if cause.type == TimeoutType.HEARTBEAT:
            return WORKER_LOST
        return timed_out(starting=starting)
    return Failure(FailureKind.OTHER, reason_of(err))
