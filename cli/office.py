"""`semo office ...`: create, list, show and delete offices through the API."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import (
    EXIT_CODES_HELP,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ApiUrl,
    Json,
    Token,
    api_errors,
    client,
    die,
    emit,
    progress,
    say,
    short_time,
    stdout,
    styled,
    table,
)
from semo.usage import describe as describe_usage

app = typer.Typer(help="Offices: teams of agents with a session pool.", epilog=EXIT_CODES_HELP,
                  no_args_is_help=True)

OfficeId = Annotated[str, typer.Argument(metavar="OFFICE_ID", help="The office")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for people")],
    office_id: Annotated[str | None, typer.Option(
        "--id", help="The office id (default: one is made up)")] = None,
    machine: Annotated[str | None, typer.Option(
        "--machine", "-m", help="The client machine its sessions run on "
                                "(default: machine_id in .semo/dev.json)")] = None,
    agent: Annotated[str | None, typer.Option(
        help="The agent profile its sessions run (default: claude)")] = None,
    warm: Annotated[list[str] | None, typer.Option(
        "--warm", help="A role to keep one warm session of (repeat) (default: FE, BE, QA)")] = None,
    no_warm: Annotated[bool, typer.Option("--no-warm", help="No warm pool")] = False,
    roles: Annotated[list[str] | None, typer.Option(
        "--role", help="Allow only these roles (repeat) (default: any)")] = None,
    max_sessions: Annotated[int | None, typer.Option(
        help="At most this many live sessions (default: 6)")] = None,
    idle_timeout: Annotated[int | None, typer.Option(
        help="Seconds an idle cold session lives (default: 600)")] = None,
    workspace_root: Annotated[str | None, typer.Option(
        help="Where its sessions' working dirs go, on the machine")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait until the warm sessions are ready")] = False,
    wait_timeout: Annotated[float, typer.Option(help="Seconds --wait waits")] = 180.0,
    api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Create an office; its warm pool starts at once."""
    api = client(api_url, token)
    body: dict = {"name": name}
    if office_id:
        body["office_id"] = office_id
    machine = machine or (api.config.dev_info or {}).get("machine_id")
    if not machine:
        die("which machine do its sessions run on? Pass --machine MACHINE_ID (the SEMO_MACHINE_ID "
            "of a client worker)", EXIT_USAGE)
    body["machine_id"] = machine
    if no_warm:
        body["warm_roles"] = []
    elif warm:
        body["warm_roles"] = warm
    for key, value in (("agent", agent), ("roles", roles), ("max_sessions", max_sessions),
                       ("idle_timeout_s", idle_timeout), ("workspace_root", workspace_root)):
        if value is not None:
            body[key] = value
    with api_errors(api, office=office_id or ""):
        with progress(f"creating office {escape(name)}…"):
            office = api.create_office(body)
        for warning in office.get("warnings") or []:
            say(f"[yellow]warning:[/] {escape(warning)}")
        if wait and office["warm_roles"]:
            office = _wait_warm(api, office, wait_timeout)
    emit(office, as_json, lambda: _print_created(office, defaulted=not (no_warm or warm)))


def _wait_warm(api, office: dict, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    want = len(office["warm_roles"])
    with progress(f"starting {want} warm session(s)…") as update:
        while True:
            view = api.get_office(office["office_id"])
            sessions = view["pool"]["sessions"] if view.get("pool") else []
            ready = [s for s in sessions if s.get("warm") and s["status"] == "ready"]
            update(f"warm sessions ready: {len(ready)}/{want}…")
            if len(ready) >= want:
                return view
            if time.monotonic() > deadline:
                die(f"after {timeout_s:g}s, {len(ready)} of {want} warm sessions are ready",
                    EXIT_TIMEOUT, hint=f"`semo office show {office['office_id']}` shows the pool")
            time.sleep(0.5)


def _print_created(office: dict, defaulted: bool = False) -> None:
    warm = ", ".join(office["warm_roles"]) or "none"
    stdout().print(f"created office [bold]{escape(office['office_id'])}[/] "
                   f"({escape(office['name'])}) on machine {escape(office['machine_id'])}; "
                   f"agent {escape(office['agent'])}; warm roles: {escape(warm)}")
    if defaulted and office["warm_roles"]:
        # they start now and hold slots of the office's cap: not something to learn later
        say(f"[dim]note:[/] no --warm given, so one warm session of each default role "
            f"({escape(warm)}) is starting now; choose with --warm ROLE (repeat) or --no-warm")


@app.command("list")
def list_(api_url: ApiUrl = None, token: Token = None, as_json: Json = False) -> None:
    """The offices your token opens."""
    api = client(api_url, token)
    with api_errors(api):
        offices = api.list_offices()

    def human() -> None:
        if not offices:
            say("no offices yet: `semo office create NAME` makes one")
            return
        table(("OFFICE", "NAME", "MACHINE", "AGENT", "WARM", "MAX", "CREATED"),
              [(o["office_id"], o["name"], o["machine_id"], o["agent"], ",".join(o["warm_roles"]),
                str(o["max_sessions"]), short_time(o["created_at"])) for o in offices])

    emit({"offices": offices}, as_json, human)


@app.command("show")
def show(office_id: OfficeId, api_url: ApiUrl = None, token: Token = None,
         as_json: Json = False) -> None:
    """An office and its pool: capacity, and each live session."""
    api = client(api_url, token)
    with api_errors(api, office=office_id):
        office = api.get_office(office_id)

    def human() -> None:
        out = stdout()
        pool = office.get("pool") or {}
        out.print(f"[bold]{escape(office['office_id'])}[/]  {escape(office['name'])}")
        out.print(f"  machine {escape(office['machine_id'])} · agent {escape(office['agent'])} · "
                  f"warm {escape(', '.join(office['warm_roles']) or 'none')} · idle timeout "
                  f"{office['idle_timeout_s']}s · created {short_time(office['created_at'])}")
        out.print(f"  pool: {pool.get('in_use', 0)} in use, {pool.get('live', 0)} live, "
                  f"capacity {pool.get('capacity', office['max_sessions'])}")
        if office.get("usage") is not None:
            out.print(f"  usage: {escape(describe_usage(office['usage']))}")
        sessions = pool.get("sessions") or []
        if not sessions:
            out.print("  no live sessions")
            return
        table = Table("SESSION", "ROLE", "STATUS", "POOL", "WARM", "JOB", "RESTARTS",
                      box=None, pad_edge=False)
        for s in sessions:
            table.add_row(escape(s["session_id"]), escape(s["role"]), styled(s["status"]),
                          styled(s.get("pool_state")),
                          "yes" if s.get("warm") else "no" if s.get("warm") is False else "-",
                          escape(s.get("current_job_id") or "-"), str(s["restarts"]))
        out.print(table)

    emit(office, as_json, human)


@app.command("usage")
def usage(
    office_id: OfficeId,
    group_by: Annotated[str, typer.Option(
        "--by", help="One row per session, role or (UTC) day")] = "session",
    since: Annotated[str | None, typer.Option(
        help="Responses from this time on (ISO 8601 with a zone, e.g. 2026-12-01T00:00Z)")] = None,
    until: Annotated[str | None, typer.Option(help="Responses before this time")] = None,
    api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Tokens and cost of an office's agents: per session, role or day, and in total."""
    api = client(api_url, token)
    with api_errors(api, office=office_id):
        table = api.office_usage(office_id, group_by=group_by, since=since, until=until)

    def human() -> None:
        if table["total"] is None:
            say(f"office {escape(office_id)} has no usage to show: none of its sessions runs an "
                "agent that reports it (shell agents report none)")
            return
        if not table["rows"]:
            say("no model responses recorded " + ("in that time" if since or until else "yet"))
            return
        out = Table(group_by.upper(), "IN", "OUT", "CACHE READ", "CACHE WRITE", "RESPONSES",
                    "COST", box=None, pad_edge=False)

        def add(key: str, u: dict) -> None:
            cost = "unknown" if u["cost_usd"] is None else f"${u['cost_usd']:.4f}"
            out.add_row(escape(key), f"{u['input_tokens']:,}", f"{u['output_tokens']:,}",
                        f"{u['cache_read_input_tokens']:,}",
                        f"{u['cache_creation_input_tokens']:,}", str(u["responses"]), cost)

        for row in table["rows"]:
            add(row["key"] or "-", row)
        add("total", table["total"])
        stdout().print(out)

    emit(table, as_json, human)


@app.command("delete")
def delete(office_id: OfficeId,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
           api_url: ApiUrl = None, token: Token = None, as_json: Json = False) -> None:
    """Delete an office: terminates its sessions (their agents stop) and its pool."""
    if not yes:
        if not sys.stdin.isatty():
            die(f"deleting office {office_id} terminates its sessions: pass --yes to confirm",
                EXIT_USAGE)
        typer.confirm(f"Delete office {office_id} and terminate its sessions?", abort=True)
    api = client(api_url, token)
    with api_errors(api, office=office_id):
        with progress(f"deleting office {escape(office_id)} (terminating its sessions)…"):
            res = api.delete_office(office_id)

    def human() -> None:
        gone = ", ".join(res.get("terminated_sessions") or []) or "none"
        stdout().print(f"deleted office [bold]{escape(office_id)}[/]; terminated sessions: "
                       f"{escape(gone)}")

    emit(res, as_json, human)
