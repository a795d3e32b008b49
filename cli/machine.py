"""`semo machine list`: the client machines sessions may run on, and what each can run."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from cli.common import EXIT_CODES_HELP, ApiUrl, Json, Token, api_errors, client, emit, say, table

app = typer.Typer(help="Client machines: where sessions run.", epilog=EXIT_CODES_HELP,
                  no_args_is_help=True)


@app.command("list")
def list_(api_url: ApiUrl = None, token: Token = None, as_json: Json = False) -> None:
    """The registered machines: agent profiles (and whether each can run there), workspace
    roots, when its client worker was last seen, live sessions."""
    api = client(api_url, token)
    with api, api_errors(api):
        machines = api.list_machines()

    def human() -> None:
        if not machines:
            say("no client machine has registered: `semo worker client` (or `semo dev`) starts one")
            return
        table(("MACHINE", "AGENTS", "LIVE", "LAST SEEN", "WORKSPACE ROOTS"),
              [(m["machine_id"], agents(m), str(m["live_sessions"]), seen(m["last_seen_at"]),
                " ".join(m["workspace_roots"])) for m in machines], whole=("MACHINE",))
        for m in machines:
            for name, found in sorted(m["agent_versions"].items()):
                if found.get("note"):
                    say(f"[dim]note:[/] {m['machine_id']}: {name}: {found['note']}")

    emit({"machines": machines}, as_json, human)


def agents(machine: dict) -> str:
    """Profile names, each with its Claude Code version, and `(missing)` when its program
    was not found on the machine."""
    out = []
    for name in machine["agent_profiles"]:
        found = machine["agent_versions"].get(name) or {}
        if found.get("runs") is False:
            out.append(f"{name} (missing)")
        elif found.get("version"):
            out.append(f"{name} {found['version']}")
        else:
            out.append(name)
    return ", ".join(out)


def seen(at: str | None) -> str:
    """How long ago: `12s ago`, `3m ago`, `2h ago`, `5d ago`."""
    if not at:
        return "-"
    s = max(0, int((datetime.now(UTC) - datetime.fromisoformat(at)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"
