"""What the API commands of the `semo` CLI share: options, output, errors and exit codes.

Exit codes (also in `semo --help` and docs/cli.md):

    0  done
    1  the API refused the request (4xx: unknown id, busy session, bad input, bad token)
    2  usage: a bad flag or argument, or no API token configured
    3  cannot reach the API (nothing listening, DNS, a dropped connection)
    4  timed out: the API's 504 (the command goes on: `semo command show` reads its result),
       our own timeout, or `--wait` ran out
    5  the API failed (5xx: a dependency is down, see `/readyz`)
    6  the job ended, but not `done` (failed, cancelled, timed_out): with `prompt --wait`
       and `job show --wait`
  130  interrupted (Ctrl+C)
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.markup import escape

from cli.client import (
    ApiFailed,
    ApiRefused,
    ClientConfig,
    SemoClient,
    SemoClientError,
    TimedOut,
    Unreachable,
    resolve_config,
)
from semo.errors import ConfigError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_FAILED = 0, 1, 2, 3, 4, 5
EXIT_JOB_NOT_DONE, EXIT_INTERRUPTED = 6, 130

EXIT_CODES_HELP = (
    "Exit codes: 0 done · 1 the API refused (4xx) · 2 usage, or no token · 3 cannot reach the "
    "API · 4 timed out (504, --wait) · 5 the API failed (5xx) · 6 the job ended but not done · "
    "130 interrupted."
)

# --- options every API command takes ------------------------------------------------------------

ApiUrl = Annotated[str | None, typer.Option(
    "--api-url", metavar="URL", rich_help_panel="Connection",
    help="The API's address (default: $SEMO_API_URL, else api_url in .semo/dev.json)")]
Token = Annotated[str | None, typer.Option(
    "--token", metavar="JWT", rich_help_panel="Connection",
    help="A bearer token (default: $SEMO_TOKEN, else token in .semo/dev.json)")]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON (for scripts)")]
Office = Annotated[str | None, typer.Option(
    "--office", "-o", envvar="SEMO_OFFICE", metavar="OFFICE_ID",
    help="The office; or write the id as OFFICE_ID/ID")]


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """The API's answer as JSON for scripts, or as `human` prints it for people."""
    if as_json:
        print_json(data)
    else:
        human()


def say(message: str) -> None:
    """A line for people, on stderr (stdout stays the data)."""
    stderr().print(message)


@contextlib.contextmanager
def progress(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while something slow happens (only on a terminal)."""
    if not sys.stderr.isatty():
        yield lambda _msg: None
        return
    with stderr().status(message) as status:
        yield lambda msg: status.update(msg)


def die(message: str, code: int, hint: str | None = None) -> NoReturn:
    err = stderr()
    err.print(f"[red]error:[/] {escape(message)}")
    if hint:
        err.print(f"[dim]hint:[/] {hint}")
    raise typer.Exit(code)


# --- connecting ----------------------------------------------------------------------------------


#: `semo --api-url URL --token JWT ...`: set by the root command for the one it runs
_root_options: dict[str, str | None] = {}


def set_root_options(*, api_url: str | None, token: str | None) -> None:
    _root_options.clear()
    _root_options.update(api_url=api_url, token=token)


def client(api_url: str | None, token: str | None) -> SemoClient:
    """The API client, configured from the command's flags, then `semo`'s own (`semo
    --api-url URL office list`), then the environment, then .semo/dev.json."""
    try:
        config = resolve_config(api_url or _root_options.get("api_url"),
                                token or _root_options.get("token"))
    except ConfigError as err:
        die(str(err), EXIT_USAGE)
    return SemoClient(config)


def ref(value: str, office: str | None, what: str = "session") -> tuple[str, str]:
    """`OFFICE/ID` or `ID` with --office: (office id, id)."""
    if "/" in value:
        off, _, ident = value.partition("/")
        if not off or not ident or "/" in ident:
            die(f"{what} {value!r}: write it as {what.upper()}_ID with --office, or "
                f"OFFICE_ID/{what.upper()}_ID", EXIT_USAGE)
        if office and office != off:
            die(f"{value!r} names office {off!r} but --office says {office!r}", EXIT_USAGE)
        return off, ident
    if not office:
        die(f"which office is {what} {value!r} in? Pass --office OFFICE_ID (or -o), set "
            f"SEMO_OFFICE, or write OFFICE_ID/{value}", EXIT_USAGE,
            hint="`semo office list` shows the offices your token opens")
    return office, value


@contextlib.contextmanager
def api_errors(api: SemoClient | None = None, **context: str) -> Iterator[None]:
    """Turn the client's errors into a message, a hint with the fix, and an exit code.

    `context`: the ids the command was about (office, session, job, command), for the hints.
    """
    try:
        yield
    except SemoClientError as err:
        die(_describe(err), err.exit_code, _hint(err, api.config if api else None, context))
    except KeyboardInterrupt:
        stderr().print("[dim]interrupted[/]")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _describe(err: SemoClientError) -> str:
    if err.status:
        return f"{err.message} ({err.status})"
    return err.message


def _hint(err: SemoClientError, config: ClientConfig | None, ctx: dict[str, str]) -> str | None:
    office = ctx.get("office")
    detail = err.message.lower()
    if isinstance(err, Unreachable):
        if config is None:
            return None
        stopped = config.dev_info and config.dev_info.get("stopped_at") \
            and config.api_url_from == str(config.dev_json)
        if stopped:
            return (f"{config.dev_json} is from a `semo dev` that has stopped: run `semo dev` "
                    "again, or point --api-url / SEMO_API_URL at a running API")
        return (f"is the API running at {config.api_url} (from {config.api_url_from})? "
                "`semo dev` starts everything on this machine; `semo api` starts the API alone")
    if isinstance(err, TimedOut):
        if err.command_id and office:
            return (f"the command goes on: `semo command show {err.command_id} --office {office}` "
                    "shows its result once it has one")
        return "the API or the session is slow: try again"
    if isinstance(err, ApiFailed):
        where = config.api_url if config else "the API"
        return (f"a dependency of the API is down or failing: `curl {where}/readyz` says which "
                "(Temporal, Postgres); the API's log says more")
    if not isinstance(err, ApiRefused):
        return None
    if err.status == 401:
        source = config.token_from if config else "?"
        return (f"the token (from {source}) was refused. `semo dev` writes a fresh one to "
                ".semo/dev.json; `semo token --office OFFICE_ID` mints one with the deployment's "
                "JWT secret; pass it with --token or SEMO_TOKEN")
    if err.status == 404:
        if "office" in detail and "not found" in detail and "session" not in detail \
                and "job" not in detail and "command" not in detail:
            return "`semo office list` shows the offices your token opens"
        if "session" in detail:
            return f"`semo session list --office {office or 'OFFICE_ID'}` shows its sessions"
        if "job" in detail:
            return ("a job id is in the answer of `semo session prompt`, and in "
                    "`semo session show` while it runs")
        if "command" in detail:
            return "a command id is in every answer to a change (command_id), and in 504s"
    if err.status == 409:
        if "office" in detail and "already exists" in detail:
            taken = office or "OFFICE_ID"
            return (f"choose another id (--id), or delete the old office first (`semo office "
                    f"delete {taken} --yes`); `semo office list` shows the ones you have")
        if "busy" in detail or "waiting" in detail:
            sid = ctx.get("session", "SESSION_ID")
            job = re.search(r"\bjob (\S+?);", err.message)
            return (f"wait for its job (`semo job show {job.group(1) if job else 'JOB_ID'} "
                    f"--office {office} --wait`) or stop it: `semo session cancel {sid} "
                    f"--office {office}`")
        if "not ready" in detail or "starting" in detail or "restarting" in detail:
            return "the session is (re)starting: try again in a moment (`semo session show` tells)"
        if "terminated" in detail or "no longer" in detail:
            return "the session is gone: `semo session create` makes a new one"
    if err.status == 429:
        return (f"release or terminate a session (`semo session list --office {office}`), or "
                "pass --wait-s to wait for room")
    if err.status == 422 and "no client worker registered" in detail:
        return "start that machine's client worker (`semo worker client`), or `semo dev` here"
    return None


# --- formatting ----------------------------------------------------------------------------------

_STATUS_STYLE = {"ready": "green", "busy": "yellow", "waiting_input": "magenta",
                 "starting": "cyan", "restarting": "cyan", "failed": "red", "terminated": "dim",
                 "done": "green", "running": "yellow", "queued": "cyan", "cancelled": "dim",
                 "timed_out": "red", "deleted": "dim", "active": "green", "ok": "green",
                 "error": "red", "pending": "cyan", "expired": "dim", "idle": "green",
                 "in_use": "yellow"}


def styled(status: str | None) -> str:
    if status is None:
        return "-"
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def short_time(value: str | None) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS` (UTC as the API gives it)."""
    if not value:
        return "-"
    return value.replace("T", " ")[:19]


def clip(value: Any, width: int = 60) -> str:
    text = " ".join(str(value).split()) if value is not None else "-"
    return escape(text if len(text) <= width else text[: width - 1] + "…")


#: the space between two columns of a table on a terminal
GAP = "  "


def table(columns: Sequence[str], rows: Sequence[Sequence[str | None]],
          styles: dict[str, Callable[[str | None], str]] | None = None, *,
          whole: Sequence[str] = (), optional: Sequence[str] = ()) -> None:
    """Rows of plain values. Piped or logged: a tab-separated line per row with every value
    whole (no ellipsis, no wrapping at 80 columns), so ids can be copied and `cut -f` works.

    On a terminal: aligned columns, one line per row, no trailing spaces (statuses coloured
    with `styles`). When the window is too narrow, the `optional` columns are left out (the
    first named first), then the other columns are cut with an ellipsis: never a `whole`
    one (the ids a person copies)."""
    if not sys.stdout.isatty():
        for row in (columns, *rows):
            sys.stdout.write("\t".join(_cell(v) for v in row) + "\n")
        sys.stdout.flush()
        return
    styles = styles or {}
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([cell_len(c)] + [cell_len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))

    def total() -> int:
        return sum(widths[i] for i in shown) + len(GAP) * (len(shown) - 1)

    out = stdout()
    for name in optional:
        if total() <= out.width:
            break
        shown.remove(columns.index(name))
    for i in reversed(shown):  # the last columns give way first, down to their header
        over = total() - out.width
        if over <= 0:
            break
        if columns[i] not in whole:
            widths[i] -= min(over, max(0, widths[i] - max(cell_len(columns[i]), 4)))

    def line(values: Sequence[str], styled_: bool) -> str:
        parts = []
        for n, i in enumerate(shown):
            text = values[i]
            if cell_len(text) > widths[i]:
                text = set_cell_size(text, widths[i] - 1) + "…"
            pad = "" if n == len(shown) - 1 else " " * (widths[i] - cell_len(text))
            style = styles.get(columns[i]) if styled_ else None
            parts.append((style(text) if style else escape(text)) + pad)
        return GAP.join(parts)

    out.print(line(columns, False), style="bold")
    for row in cells:
        out.print(line(row, True))


def _cell(value: str | None) -> str:
    return "-" if value is None or value == "" else " ".join(str(value).split())
