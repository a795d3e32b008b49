"""One router per resource."""

from fastapi import Response

from commands.executor import Outcome
from semo.errors import from_problem


def answer(outcome: Outcome, response: Response) -> dict:
    """A command's outcome as the HTTP answer (errors go through the one error handler)."""
    if not outcome.ok:
        raise from_problem(outcome.body)
    response.status_code = outcome.status_code
    response.headers["X-Command-Id"] = str(outcome.command_id)
    return outcome.body
