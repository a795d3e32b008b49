"""Temporal workflows. Pure code: no I/O, clocks, randomness or threads in this package."""

SERVER_TASK_QUEUE = "semo-server"


def session_workflow_id(office_id: str, session_id: str) -> str:
    return f"session/{office_id}/{session_id}"


def session_id_for(role: str, seed: str) -> str:
    """A readable session id derived from what creates it (the command id, for a cold one),
    so running the same creation again creates nothing new."""
    hexits = "".join(c for c in seed.lower() if c in "0123456789abcdef")
    return f"{role.lower()}-{hexits[:12]}"
