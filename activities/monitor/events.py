"""What the output monitor reports."""

from __future__ import annotations

from dataclasses import dataclass

# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """Something the monitor saw. `offset`: raw stream offset just after what produced it."""

    kind: str  # "completion" | "commit" | "error" | "waiting_input" | "stall"
    data: dict
    offset: int
