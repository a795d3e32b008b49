"""The domain's exception tree, in one place. The API maps it to problem+json (status,
title, detail); the command intake writes it into `agent_command_results`."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used (settings, the CLI's API address and token, the API's
    keys); the message names the setting and the fix. Raised at start, never as an answer."""


class SemoError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type(self) -> str:
        return type(self).__name__

    def problem(self) -> dict:
        return {"type": f"urn:semo:error:{self.type}", "title": self.title,
                "status": self.status, "detail": self.detail, **self.extra}


class Unauthorized(SemoError):
    status, title = 401, "Unauthorized"


class Forbidden(SemoError):
    """A request the credentials would allow, refused for how it came (a console cookie
    without the console's header, or from another origin: CSRF)."""
    status, title = 403, "Forbidden"


class NotFound(SemoError):
    status, title = 404, "Not found"


class InvalidInput(SemoError):
    status, title = 422, "Invalid input"


class Conflict(SemoError):
    status, title = 409, "Conflict"


class CapacityExceeded(SemoError):
    status, title = 429, "Office at capacity"


class Unavailable(SemoError):
    status, title = 503, "Unavailable"


class CommandTimeout(SemoError):
    status, title = 504, "Command still running"


ERRORS_BY_TYPE: dict[str, type[SemoError]] = {
    cls.__name__: cls for cls in (Unauthorized, Forbidden, NotFound, InvalidInput, Conflict,
                                  CapacityExceeded, Unavailable, CommandTimeout)
}


def from_problem(problem: dict) -> SemoError:
    """Rebuild an error from a stored problem (an idempotent replay answers the same)."""
    name = str(problem.get("type", "")).rsplit(":", 1)[-1]
    cls = ERRORS_BY_TYPE.get(name, SemoError)
    extra = {k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail")}
    return cls(str(problem.get("detail", "")), **extra)
