"""`semo webhook add|list|deliveries|delete`: an office's signed event subscriptions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from cli.common import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    ApiUrl,
    Json,
    Office,
    Token,
    api_errors,
    client,
    die,
    emit,
    ref,
    say,
    short_time,
    stdout,
    styled,
    table,
)
from semo.webhooks import EVENT_TYPES

app = typer.Typer(help="Webhooks: an office's events POSTed to a URL, signed.",
                  epilog=EXIT_CODES_HELP, no_args_is_help=True)

WebhookRef = Annotated[str, typer.Argument(
    metavar="WEBHOOK_ID", help="WEBHOOK_ID (wh_…) with --office, or OFFICE_ID/WEBHOOK_ID")]


def _office(office: str | None) -> str:
    """The office of a command that names no other id (`--office` or SEMO_OFFICE)."""
    if not office:
        die("which office? Pass --office OFFICE_ID (or -o), or set SEMO_OFFICE", EXIT_USAGE,
            hint="`semo office list` shows the offices your token opens")
    return office


@app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Where events are POSTed (http:// or https://)")],
    events: Annotated[list[str], typer.Option(
        "--event", "-e", help="An event type (repeat): " + ", ".join(EVENT_TYPES))],
    office: Office = None,
    secret: Annotated[str | None, typer.Option(
        help="whsec_… (default: one is made and shown once)")] = None,
    description: Annotated[str | None, typer.Option(help="A note for people")] = None,
    slack: Annotated[bool, typer.Option(
        "--slack", help="Send Slack's {\"text\": …} body, unsigned")] = False,
    api_url: ApiUrl = None, token: Token = None, as_json: Json = False,
) -> None:
    """Subscribe a URL to an office's events; prints the signing secret, this once."""
    api = client(api_url, token)
    office = _office(office)
    body: dict = {"url": url, "events": events, "format": "slack" if slack else "standard"}
    if secret:
        body["secret"] = secret
    if description:
        body["description"] = description
    with api, api_errors(api, office=office):
        hook = api.create_webhook(office, body)

    def human() -> None:
        stdout().print(f"added webhook [bold]{escape(hook['webhook_id'])}[/] → "
                       f"{escape(hook['url'])} ({escape(', '.join(hook['events']))})")
        stdout().print(f"secret: {escape(hook['secret'])}")
        say("[dim]note:[/] the secret is shown this once: verify each request's "
            "webhook-signature with it")

    emit(hook, as_json, human)


@app.command("list")
def list_(office: Office = None, api_url: ApiUrl = None, token: Token = None,
          as_json: Json = False) -> None:
    """An office's webhooks (without their secrets); a disabled one says why."""
    api = client(api_url, token)
    office = _office(office)
    with api, api_errors(api, office=office):
        hooks = api.list_webhooks(office)

    def human() -> None:
        if not hooks:
            say(f"no webhooks in office {escape(office)}: `semo webhook add URL --event job.done "
                f"--office {escape(office)}` adds one")
            return
        table(("WEBHOOK", "ENABLED", "EVENTS", "URL"),
              [(h["webhook_id"], "yes" if h["enabled"] else f"no: {h['disabled_reason']}",
                ",".join(h["events"]), h["url"]) for h in hooks], whole=("WEBHOOK",))

    emit({"webhooks": hooks}, as_json, human)


@app.command("deliveries")
def deliveries(webhook: WebhookRef, office: Office = None,
               limit: Annotated[int, typer.Option(help="The newest this many")] = 20,
               api_url: ApiUrl = None, token: Token = None, as_json: Json = False) -> None:
    """A webhook's delivery log, newest first: each event's status, attempts and last answer."""
    api = client(api_url, token)
    office, webhook_id = ref(webhook, office, "webhook")
    with api, api_errors(api, office=office):
        found = api.webhook_deliveries(office, webhook_id, limit=limit)

    def human() -> None:
        if not found:
            say(f"no deliveries yet for {escape(webhook_id)}")
            return
        table(("EVENT AT", "TYPE", "SESSION", "STATUS", "ATTEMPTS", "LAST ANSWER"),
              [(short_time(d["event_at"]), d["type"], d["session_id"], d["status"],
                str(len(d["attempts"])),
                str(d["last_status_code"]) if d["last_status_code"] else d["last_error"])
               for d in found], styles={"STATUS": styled}, whole=("EVENT AT", "TYPE"))

    emit({"webhook_id": webhook_id, "deliveries": found}, as_json, human)


@app.command("delete")
def delete(webhook: WebhookRef, office: Office = None, api_url: ApiUrl = None,
           token: Token = None, as_json: Json = False) -> None:
    """Stop sending to a webhook; its delivery log goes with it."""
    api = client(api_url, token)
    office, webhook_id = ref(webhook, office, "webhook")
    with api, api_errors(api, office=office):
        api.delete_webhook(office, webhook_id)
    result = {"webhook_id": webhook_id, "deleted": True}
    emit(result, as_json, lambda: stdout().print(f"deleted webhook {escape(webhook_id)}"))
