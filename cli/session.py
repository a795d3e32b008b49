"""`semo session ...`, `semo job show`, `semo command show`: sessions, jobs and commands
through the API."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cli.client import SemoClient, TimedOut, Unreachable
from cli.common import (
    EXIT_CODES_HELP,
    EXIT_JOB_NOT_DONE,
    EXIT_USAGE,
    ApiUrl,
    Json,
    Office,
    Token,
    api_errors,
    client,
    clip,
    die,
    emit,
    print_json,
    progress,
    ref,
    say,
    short_time,
    stdout,
    styled,
    table,
)
from semo.usage import describe as describe_usage

app = typer.Typer(help="Sessions: agent terminals.", epilog=EXIT_CODES_HELP,
                  no_args_is_help=True)
job_app = typer.Typer(help="Jobs: one prompt and its outcome.", no_args_is_help=True)
command_app = typer.Typer(help="Commands: every change, and its result.", no_args_is_help=True)

SessionRef = Annotated[str, typer.Argument(
    metavar="SESSION_ID", help="The session (SESSION_ID with --office, or OFFICE_ID/SESSION_ID)")]

JOB_ENDED = ("done", "failed", "cancelled", "timed_out")
#: the keys `semo session keys` knows (the API's named keys)
KEY_NAMES = ("enter", "esc", "tab", "shift+tab", "backspace", "up", "down", "left", "right",
             "home", "end", "pageup", "pagedown", "space", "ctrl+c", "ctrl+d", "ctrl+z",
             "ctrl+l", "ctrl+u", "ctrl+space", "y", "n", "0-9")


# --- create, list, show --------------------------------------------------------------------------


@app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", "-r", help="The persona's role (FE, BE, QA...)")],
    office: Office = None,
    agent: Annotated[str | None, typer.Option(help="Agent profile (default: the office's)")] = None,
    working_dir: Annotated[str | None, typer.Option(
        help="Working dir on the machine, inside its workspace roots (default: a new one)")] = None,
    machine: Annotated[str | None, typer.Option(
        "--machine", "-m", help="Run on this machine (default: the office's)")] = None,
    wait_s: Annotated[float | None, typer.Option(
        help="At the office's cap, wait this long for room instead of failing (max 300)")] = None,
    api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Start a session (or take an idle warm one) and wait until it is ready."""
    api = client(api_url, token)
    if not office:
        die("which office? Pass --office OFFICE_ID (or set SEMO_OFFICE)", EXIT_USAGE,
            hint="`semo office list` shows the offices your token opens")
    body: dict = {"role": role}
    for key, value in (("agent", agent), ("working_dir", working_dir), ("machine_id", machine),
                       ("wait_s", wait_s)):
        if value is not None:
            body[key] = value
    with api_errors(api, office=office):
        with progress(f"starting a {escape(role)} session in office {escape(office)}…"):
            session = api.create_session(office, body)

    def human() -> None:
        stdout().print(
            f"session [bold]{escape(session['session_id'])}[/] is {styled(session['status'])} "
            f"({session['source']}: {escape(session['agent'])} on {escape(session['machine_id'])}) "
            f"in {escape(session.get('working_dir') or '-')}")

    emit(session, as_json, human)


@app.command("list")
def list_(office: Office = None,
          all_: Annotated[bool, typer.Option("--all", "-a", help="Terminated ones too")] = False,
          api_url: ApiUrl = None, token: Token = None, as_json: Json = False) -> None:
    """An office's sessions (live ones; --all for terminated ones too)."""
    api = client(api_url, token)
    if not office:
        die("which office? Pass --office OFFICE_ID (or set SEMO_OFFICE)", EXIT_USAGE,
            hint="`semo office list` shows the offices your token opens")
    with api_errors(api, office=office):
        sessions = api.list_sessions(office)
    if not all_:
        sessions = [s for s in sessions if s["status"] != "terminated"]

    def human() -> None:
        if not sessions:
            say(f"no {'' if all_ else 'live '}sessions in office {escape(office)}: "
                f"`semo session create --office {escape(office)} --role BE` starts one")
            return
        table(("SESSION", "ROLE", "AGENT", "STATUS", "JOB", "RESTARTS", "CIRCUIT", "MACHINE",
               "LAST ACTIVITY"),
              [(s["session_id"], s["role"], s["agent"], s["status"], s.get("current_job_id"),
                str(s["restarts"]), s["circuit"], s["machine_id"],
                short_time(s["last_activity_at"])) for s in sessions],
              styles={"STATUS": styled, "CIRCUIT": styled}, whole=("SESSION", "LAST ACTIVITY"),
              optional=("CIRCUIT", "RESTARTS", "MACHINE", "AGENT"))

    emit({"sessions": sessions}, as_json, human)


@app.command("show")
def show(session: SessionRef, office: Office = None, api_url: ApiUrl = None, token: Token = None,
         as_json: Json = False) -> None:
    """A session: status, current job, restarts, circuit, where it runs."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    with api_errors(api, office=office, session=sid):
        s = api.get_session(office, sid)

    def human() -> None:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="dim")
        table.add_column()
        for label, value in (
                ("session", escape(s["session_id"])), ("office", escape(s["office_id"])),
                ("status", styled(s["status"])), ("role", escape(s["role"])),
                ("agent", escape(s["agent"])), ("machine", escape(s["machine_id"])),
                ("working dir", escape(s.get("working_dir") or "-")),
                ("current job", escape(s.get("current_job_id") or "-")),
                ("restarts", str(s["restarts"])), ("circuit", styled(s["circuit"])),
                ("workflow", escape(s.get("workflow_id") or "-")),
                ("created", short_time(s["created_at"])),
                ("last activity", short_time(s["last_activity_at"]))):
            table.add_row(label, value)
        if s.get("last_error"):
            table.add_row("last error", f"[red]{escape(s['last_error'])}[/]")
        table.add_row("usage", escape(describe_usage(s.get("usage"))))
        stdout().print(table)

    emit(s, as_json, human)


# --- acting on a session -------------------------------------------------------------------------


@app.command("prompt")
def prompt(
    session: SessionRef,
    text: Annotated[str, typer.Argument(metavar="PROMPT",
                                        help="The prompt; - reads it from stdin")],
    office: Office = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the job to end")] = False,
    wait_timeout: Annotated[float | None, typer.Option(
        help="Seconds --wait waits (default: until the job ends)")] = None,
    job_id: Annotated[str | None, typer.Option(help="Your own job id")] = None,
    timeout_s: Annotated[float | None, typer.Option(
        "--timeout-s", help="The job's timeout in seconds (default: the server's, 3600)")] = None,
    api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Type a prompt into a ready session: it becomes a job.

    With --wait, wait for the job to end; exit 6 if it does not end `done`.
    """
    api = client(api_url, token)
    office, sid = ref(session, office)
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        die("the prompt is empty", EXIT_USAGE)
    with api_errors(api, office=office, session=sid):
        sent = api.prompt(office, sid, text, job_id=job_id, timeout_s=timeout_s)
        if not wait:
            emit(sent, as_json, lambda: stdout().print(
                f"sent: job [bold]{escape(sent['job_id'])}[/] (command {sent['command_id']})"))
            return
        say(f"sent: job [bold]{escape(sent['job_id'])}[/]")
        job = _wait_job(api, office, sent["job_id"], wait_timeout)
    emit(job, as_json, lambda: _print_job(job))
    if job["status"] != "done":
        raise typer.Exit(EXIT_JOB_NOT_DONE)


def _wait_job(api: SemoClient, office: str, job_id: str, timeout_s: float | None) -> dict:
    started = time.monotonic()
    delay = 0.2
    with progress(f"job {escape(job_id)} running…") as update:
        while True:
            job = api.get_job(office, job_id)
            if job["status"] in JOB_ENDED:
                return job
            waited = time.monotonic() - started
            if timeout_s is not None and waited >= timeout_s:
                raise TimedOut(f"job {job_id} is still {job['status']} after {timeout_s:g}s "
                               "(it goes on)")
            update(f"job {escape(job_id)} {job['status']} for {waited:.0f}s… "
                   "(Ctrl+C stops waiting, not the job)")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


@app.command("keys")
def keys(
    session: SessionRef,
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[KEY]...", help=f"Named keys, pressed after the text: {', '.join(KEY_NAMES)}"
        ),
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", "-t", help="Literal text, typed first")
    ] = None,
    enter: Annotated[bool, typer.Option("--enter", help="Then Enter, last")] = False,
    office: Office = None,
    api_url: ApiUrl = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Send keystrokes: the text, then the named keys, then (with --enter) Enter; one command."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    names = [k.lower() for k in names or []] + (["enter"] if enter else [])
    if not names and not text:
        die("nothing to send: name keys (e.g. `ctrl+c`, `enter`), or give --text", EXIT_USAGE)
    with api_errors(api, office=office, session=sid):
        answer = api.keys(office, sid, names, text)
    emit(answer, as_json, lambda: stdout().print(f"sent; session is {styled(answer['status'])}"))


@app.command("cancel")
def cancel(session: SessionRef, office: Office = None, api_url: ApiUrl = None,
           token: Token = None, as_json: Json = False) -> None:
    """Press Ctrl+C in the session: its running job ends `cancelled`."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    with api_errors(api, office=office, session=sid):
        res = api.cancel(office, sid)
    what = f"job {escape(res['job_id'])}" if res.get("job_id") else "(no job was running)"
    emit(res, as_json, lambda: stdout().print(
        f"cancelled {what}; session is {styled(res['status'])}"))


@app.command("release")
def release(session: SessionRef, office: Office = None, api_url: ApiUrl = None,
            token: Token = None, as_json: Json = False) -> None:
    """Hand the session back to the office pool, idle, for the next create of its role."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    with api_errors(api, office=office, session=sid):
        res = api.release(office, sid)
    emit(res, as_json, lambda: stdout().print(
        f"released {escape(sid)}: {styled(res['pool_state'])} in the pool"))


@app.command("terminate")
def terminate(session: SessionRef, office: Office = None, api_url: ApiUrl = None,
              token: Token = None, as_json: Json = False) -> None:
    """Stop the session: its agent's whole process group, for good."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    with api_errors(api, office=office, session=sid):
        with progress(f"terminating {escape(sid)}…"):
            res = api.terminate(office, sid)
    emit(res, as_json, lambda: stdout().print(f"terminated {escape(sid)}"))


# --- watching -------------------------------------------------------------------------------------


@app.command("output")
def output(
    session: SessionRef,
    office: Office = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new output, like tail -f, until the session ends"
        ),
    ] = False,
    since: Annotated[
        int | None,
        typer.Option(
            help="Start at this byte offset of the raw stream (default: the start; with "
            "--follow, the last --lines lines, and --since 0 replays it all)"
        ),
    ] = None,
    lines: Annotated[
        int,
        typer.Option(
            "--lines", "-n", min=0, help="With --follow: how many of the last lines to show first"
        ),
    ] = 10,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="Raw bytes, escape sequences and all (default: text, escapes removed)"
        ),
    ] = False,
    api_url: ApiUrl = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """What the session printed (kept in Postgres; the oldest is dropped past retention)."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    fmt = "raw" if raw else "text"
    with api_errors(api, office=office, session=sid):
        if follow:
            _follow(api, office, sid, since, lines, fmt, as_json)
            return
        pages, offset = [], since or 0
        while True:
            page = api.output(office, sid, since=offset, limit=1024 * 1024, format=fmt)
            pages.append(page)
            if not as_json:
                sys.stdout.write(page["data"])
                sys.stdout.flush()
            if page["next_offset"] == page["since"]:
                break
            offset = page["next_offset"]
    if as_json:
        first = pages[0]
        print_json({**first, "next_offset": pages[-1]["next_offset"],
                    "data": "".join(p["data"] for p in pages)})
    elif pages[0].get("truncated_before") is not None:
        say(f"[dim](output before byte {pages[0]['truncated_before']} is no longer kept)[/]")


#: with --follow, the last lines are looked for in this many bytes before the end
TAIL_BYTES = 16 * 1024


class _Printer:
    """Output on stdout, status lines on stderr, each status line on a line of its own: a
    session's output usually ends mid-line (its shell prompt), and on a terminal both go to
    the same screen. The newline that separates them goes to stderr, so stdout stays exactly
    what the session printed."""

    def __init__(self) -> None:
        self.mid_line = False

    def output(self, data: str) -> None:
        if data:
            sys.stdout.write(data)
            sys.stdout.flush()
            self.mid_line = not data.endswith("\n")

    def status(self, message: str) -> None:
        self.line_break()
        say(message)

    def line_break(self) -> None:
        if self.mid_line:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.mid_line = False


def _last_lines(page: dict, lines: int) -> str:
    """The last `lines` lines of a tail page (its first line is cut unless it starts at 0)."""
    text = page["data"]
    parts = text.splitlines(keepends=True)
    if page["since"] > 0 and parts:
        parts = parts[1:]  # the page starts in the middle of that line
    return "".join(parts[-lines:]) if lines else ""


def _follow(api: SemoClient, office: str, sid: str, since: int | None, lines: int, fmt: str,
            as_json: bool) -> None:
    """The SSE stream, after the last lines (like tail -f) unless `since` is given;
    reconnects from where it was when the connection drops."""
    printer = _Printer()
    if since is None:
        page = api.output(office, sid, tail=TAIL_BYTES, limit=TAIL_BYTES, format=fmt)
        if as_json:  # the whole tail page, so that its offsets are exact
            sys.stdout.write(json.dumps({"event": "output", "offset": page["since"],
                                         "next_offset": page["next_offset"],
                                         "data": page["data"]}) + "\n")
            sys.stdout.flush()
        else:
            printer.output(_last_lines(page, lines))
        since = page["next_offset"]
    offset, retries = since, 0
    try:
        while True:
            try:
                for ev in api.stream_output(office, sid, since=offset, format=fmt):
                    retries = 0
                    if as_json:
                        sys.stdout.write(json.dumps({"event": ev.event, **ev.data}) + "\n")
                        sys.stdout.flush()
                    if ev.event == "output":
                        offset = ev.data.get("next_offset", offset)
                        if not as_json:
                            printer.output(ev.data.get("data", ""))
                    elif ev.event == "status" and not as_json:
                        job = ev.data.get("current_job_id")
                        printer.status(f"[dim]── session {escape(sid)}: {ev.data.get('status')}"
                                       f"{' (job ' + escape(job) + ')' if job else ''}[/]")
                return  # the stream ends when the session is terminated
            except (Unreachable, TimedOut) as err:
                retries += 1
                if retries > 5:
                    raise
                printer.status(f"[dim]── {escape(err.message)}; reconnecting ({retries}/5)…[/]")
                time.sleep(min(0.5 * 2 ** retries, 8))
    finally:
        printer.line_break()  # the shell's prompt (or an error) starts on a line of its own


@app.command("screen")
def screen(session: SessionRef, office: Office = None, api_url: ApiUrl = None,
           token: Token = None, as_json: Json = False) -> None:
    """The terminal screen as a person would see it now."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    with api_errors(api, office=office, session=sid):
        shot = api.screen(office, sid)

    def human() -> None:
        lines = list(shot["lines"])
        while lines and not lines[-1].strip():
            lines.pop()
        if sys.stdout.isatty():
            title = (f"{sid} · {shot['rows']}x{shot['cols']} · cursor "
                     f"{shot['cursor']['row']},{shot['cursor']['col']}")
            stdout().print(Panel(Text("\n".join(lines)), title=escape(title), title_align="left",
                                 expand=False))
        else:
            sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))

    emit(shot, as_json, human)


@app.command("attach")
def attach(
    session: SessionRef, office: Office = None,
    read_only: Annotated[bool, typer.Option(
        "--read-only", "-r",
        help="Watch only: nothing you type is sent (Ctrl+C detaches too)")] = False,
    detach_key: Annotated[str, typer.Option(
        help="The key that detaches (ctrl+LETTER, or ctrl+] ctrl+\\ ctrl+^ ctrl+_)")] = "ctrl+]",
    api_url: ApiUrl = None, token: Token = None,
) -> None:
    """Make this terminal the session's terminal, live (Ctrl+] detaches).

    What you type goes to the agent and what it prints comes here; the session takes this
    terminal's size. Detaching leaves the session running.
    """
    from cli.attach import AttachError, attach as run_attach, detach_byte

    api = client(api_url, token)
    office, sid = ref(session, office)
    try:
        key = detach_byte(detach_key)
    except ValueError as err:
        die(str(err), EXIT_USAGE)
    with api_errors(api, office=office, session=sid):
        try:
            code = run_attach(api.config, office, sid, read_only=read_only, detach_key=key,
                              detach_label=detach_key)
        except AttachError as err:
            die(err.message, err.exit_code, err.hint)
    raise typer.Exit(code)


# --- jobs and commands ----------------------------------------------------------------------------


@job_app.command("show")
def job_show(
    job_id: Annotated[str, typer.Argument(
        metavar="JOB_ID", help="JOB_ID with --office, or OFFICE_ID/JOB_ID")],
    office: Office = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for it to end")] = False,
    wait_timeout: Annotated[float | None, typer.Option(help="Seconds --wait waits")] = None,
    api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """A job: its status, what the monitor saw, how it ended.

    With --wait, wait for it to end; exit 6 unless it ends `done`.
    """
    api = client(api_url, token)
    office, jid = ref(job_id, office, "job")
    with api_errors(api, office=office, job=jid):
        job = _wait_job(api, office, jid, wait_timeout) if wait else api.get_job(office, jid)
    emit(job, as_json, lambda: _print_job(job))
    if wait and job["status"] != "done":
        raise typer.Exit(EXIT_JOB_NOT_DONE)


def _print_job(job: dict) -> None:
    out = stdout()
    finished = f" · finished {short_time(job['finished_at'])}" if job.get("finished_at") else ""
    out.print(f"job [bold]{escape(job['job_id'])}[/] {styled(job['status'])} · session "
              f"{escape(job['session_id'])} · created {short_time(job['created_at'])}{finished}")
    out.print(f"  prompt: {clip(job['prompt'], 100)}")
    if job.get("completion"):
        out.print(f"  completion: {clip(json.dumps(job['completion']), 100)}")
    if job.get("error"):
        out.print(f"  error: [red]{escape(job['error'])}[/]")
    if job.get("usage") is not None:
        out.print(f"  usage: {escape(describe_usage(job['usage']))}")
    if job.get("events"):
        table(("AT", "EVENT", "DATA"),
              [(short_time(ev["at"]), ev["kind"], json.dumps(ev["data"])) for ev in job["events"]],
              whole=("AT", "EVENT"))


@command_app.command("show")
def command_show(
    command_id: Annotated[str, typer.Argument(
        metavar="COMMAND_ID", help="COMMAND_ID with --office, or OFFICE_ID/COMMAND_ID")],
    office: Office = None, api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """A command (a change someone asked for) and its result, once it has one."""
    api = client(api_url, token)
    office, cid = ref(command_id, office, "command")
    with api_errors(api, office=office, command=cid):
        cmd = api.get_command(office, cid)

    def human() -> None:
        out = stdout()
        result = cmd.get("result")
        out.print(f"command [bold]{escape(cmd['command_id'])}[/] {escape(cmd['type'])} · "
                  f"{styled(cmd['status'])} · from {escape(cmd['source'])} · "
                  f"created {short_time(cmd['created_at'])}")
        target = cmd["office_id"] + (f"/{cmd['session_id']}" if cmd.get("session_id") else "")
        out.print(f"  on: {escape(target)}")
        out.print(f"  payload: {clip(json.dumps(cmd['payload']), 100)}")
        if result is None:
            out.print("  result: [cyan]none yet[/] (still running)")
        else:
            out.print(f"  result: {styled(result['status'])} at {short_time(result['created_at'])}")
            body = result.get("result")
            if result.get("error"):
                out.print(f"  error: [red]{escape(result['error'])}[/]")
            elif body:
                out.print(f"  answer: {clip(json.dumps(body), 100)}")

    emit(cmd, as_json, human)


