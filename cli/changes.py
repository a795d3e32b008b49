"""`semo session changes|review|handoff`: what an agent changed, comments back to it, and its
branch handed off (SPEC §9)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from cli.common import (
    EXIT_USAGE,
    ApiUrl,
    Json,
    Office,
    Token,
    api_errors,
    client,
    die,
    emit,
    progress,
    ref,
    say,
    stdout,
    table,
)
from cli.session import SessionRef, app

_LINE_COMMENT = re.compile(r"^(?P<path>[^\s:][^:]*):(?P<line>\d+):\s?(?P<text>.*)$")


@app.command("changes")
def changes(
    session: SessionRef,
    path: Annotated[str | None, typer.Argument(
        help="Only this file (as the list names it)")] = None,
    stat: Annotated[bool, typer.Option(
        "--stat", help="The files and their counts, no diff")] = False,
    office: Office = None, api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """What the agent changed in its worktree, committed and not, since its branch started:
    the diff (coloured on a terminal), or with --stat the files and commits."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    with api_errors(api, office=office, session=sid):
        with progress(f"reading the changes of {escape(sid)}…"):
            got = api.changes(office, sid, path)

    def human() -> None:
        base = got["base"]
        say(f"branch [bold]{escape(got['branch'])}[/] from {escape(base['ref'])} "
            f"({base['commit'][:12]}), {len(got['commits'])} commit(s), "
            f"{len(got['files'])} file(s) changed")
        if stat or not got["diff"]:
            _print_stat(got)
            return
        _print_diff(got["diff"])
        if got["truncated"]:
            say("[yellow]the diff was cut short[/]: name a file (`semo session changes "
                f"{escape(sid)} PATH`) to see it whole")

    emit(got, as_json, human)


def _print_stat(got: dict) -> None:
    if not got["files"]:
        say("no changes")
        return
    rows = []
    for f in got["files"]:
        name = f"{f['old_path']} → {f['path']}" if f.get("old_path") else f["path"]
        counts = "binary" if f["binary"] else f"+{f['additions']} -{f['deletions']}"
        rows.append((f["status"], name, counts))
    table(("STATUS", "FILE", "LINES"), rows)
    for c in got["commits"]:
        say(f"[dim]{c['sha'][:12]}[/] {escape(c['subject'])}")


def _print_diff(diff: str) -> None:
    out = stdout()
    if not out.is_terminal:
        sys.stdout.write(diff)
        return
    for line in diff.splitlines():
        style = ("bold" if line.startswith(("diff --git", "+++", "---")) else
                 "green" if line.startswith("+") else "red" if line.startswith("-") else
                 "cyan" if line.startswith("@@") else "")
        out.print(Text(line, style=style))


def read_comments(text: str) -> dict[str, Any]:
    """A review from a file: JSON (`{"comments": [...], "summary": ...}` or a list of
    `{path, line, text}`), or lines `PATH:LINE: comment` (a line that starts with whitespace
    continues the comment above; lines before the first comment are the summary)."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON: {err}") from None
        return data if isinstance(data, dict) else {"comments": data}
    comments: list[dict[str, Any]] = []
    summary: list[str] = []
    for raw in text.splitlines():
        m = _LINE_COMMENT.match(raw)
        if m:
            comments.append({"path": m["path"], "line": int(m["line"]), "text": m["text"]})
        elif comments and (raw.startswith((" ", "\t")) or not raw.strip()):
            comments[-1]["text"] += "\n" + raw.strip()
        elif not comments and not raw.startswith("#"):
            summary.append(raw)
    for c in comments:
        c["text"] = c["text"].strip()
    if not comments:
        raise ValueError("no comments found: write one per line as `PATH:LINE: comment`, or JSON")
    body: dict[str, Any] = {"comments": comments}
    if "\n".join(summary).strip():
        body["summary"] = "\n".join(summary).strip()
    return body


@app.command("review")
def review(
    session: SessionRef,
    comments_file: Annotated[str, typer.Argument(
        metavar="FILE", help="The comments: lines `PATH:LINE: comment` or JSON; - reads stdin")],
    summary: Annotated[str | None, typer.Option(help="A word on the whole change")] = None,
    office: Office = None, api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Send review comments on the session's changes to its agent, as one prompt that quotes
    each at its file and line (a job, as `semo session prompt`)."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    try:
        text = sys.stdin.read() if comments_file == "-" else Path(comments_file).read_text()
        body = read_comments(text)
    except (OSError, ValueError) as err:
        die(f"{comments_file}: {err}", EXIT_USAGE,
            hint="e.g. a file with `src/app.py:12: rename this` (lines `semo session changes` "
                 "shows)")
    if summary:
        body["summary"] = summary
    with api_errors(api, office=office, session=sid):
        sent = api.review(office, sid, body)
    emit(sent, as_json, lambda: stdout().print(
        f"sent {len(body['comments'])} comment(s): job [bold]{escape(sent['job_id'])}[/] "
        f"(command {sent['command_id']})"))


@app.command("handoff")
def handoff(
    session: SessionRef,
    message: Annotated[str | None, typer.Option(
        "--message", "-m", help="Commit message (default: made from the session's jobs)")] = None,
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push the branch")] = True,
    pull_request: Annotated[bool, typer.Option(
        "--pull-request", "--pr", help="Open a pull request (SEMO_PULL_REQUEST_COMMAND on the "
        "machine)")] = False,
    office: Office = None, api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Commit what the agent left uncommitted, push its branch, and optionally open a pull
    request: on the session's machine, with its git credentials."""
    api = client(api_url, token)
    office, sid = ref(session, office)
    body: dict[str, Any] = {"push": push, "pull_request": pull_request}
    if message:
        body["message"] = message
    with api_errors(api, office=office, session=sid):
        with progress(f"handing off {escape(sid)}…"):
            res = api.handoff(office, sid, body)

    def human() -> None:
        where = f"pushed to {escape(res.get('remote') or '-')}" if res["pushed"] else "not pushed"
        stdout().print(f"branch [bold]{escape(res['branch'])}[/] at {res['commit'][:12]}, {where}")
        if res.get("pull_request_url"):
            stdout().print(f"pull request: {escape(res['pull_request_url'])}")

    emit(res, as_json, human)
