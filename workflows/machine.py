"""How a session reaches its client machine: the machine's task queue, and the retry
policies of the activities there (typed input is never sent twice) and of its DB writes."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

NO_RETRY = RetryPolicy(maximum_attempts=1)
DB_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                       maximum_interval=timedelta(seconds=5))


def machine_queue(machine_id: str) -> str:
    """The task queue of a machine's client worker (worker/client.py serves it)."""
    return f"semo-machine-{machine_id}"
