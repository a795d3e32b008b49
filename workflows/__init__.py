"""Temporal workflows. Pure code: no I/O, clocks, randomness or threads in this package."""

SERVER_TASK_QUEUE = "semo-server"


def session_workflow_id(office_id: str, session_id: str) -> str:
    return f"session/{office_id}/{session_id}"
