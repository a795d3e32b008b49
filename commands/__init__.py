"""The command executor: how an API request or an `agent_commands` row becomes a Temporal
action. The application layer the API and the intake both call; it imports `db`, `workflows`
and the shared rules in `semo`, never a process package (`api`, `worker`, `cli`, `dev`)."""

from commands.executor import (
    BACKGROUND_LIMIT_S,
    Command,
    CommandExecutor,
    CommandType,
    Outcome,
)

__all__ = ["BACKGROUND_LIMIT_S", "Command", "CommandExecutor", "CommandType", "Outcome"]
