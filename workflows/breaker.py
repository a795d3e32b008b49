"""The restart circuit breaker's arithmetic, pure (no clock: `now` is the workflow's), so that
it can be tested without a workflow. The session workflow applies the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from workflows.contracts import BreakerPolicy

#: the longest pause before a restart, however many strikes are in the window
MAX_BACKOFF_S = 30


@dataclass(frozen=True)
class Verdict:
    #: the strikes still inside the window, this one last
    failures: list[datetime]
    #: the circuit opens: `max_failures` strikes in the window, or a half-open probe failed
    opens: bool
    #: how long to wait before the restart (when it does not open): 1, 2, 4, ... 30 s
    backoff_s: int


def strike(failures: list[datetime], now: datetime, policy: BreakerPolicy,
           circuit: str) -> Verdict:
    """One more failure at `now`, against the strikes so far and the circuit's state."""
    window = timedelta(seconds=policy.window_s)
    kept = [t for t in failures if now - t < window] + [now]
    return Verdict(failures=kept,
                   opens=len(kept) >= policy.max_failures or circuit == "half_open",
                   backoff_s=min(2 ** (len(kept) - 1), MAX_BACKOFF_S))
