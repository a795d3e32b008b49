"""The `semo` command."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli import (
    changes as _changes,
    machine as cli_machine,
    office as cli_office,
    session as cli_session,
    webhook as cli_webhook,
)
from cli.common import EXIT_CODES_HELP, ApiUrl, Token, set_root_options
from semo.errors import ConfigError
from semo.settings import Settings, load_settings

app = typer.Typer(help="semo-sessions: AI coding agents in real terminals, supervised by Temporal.",
                  epilog=EXIT_CODES_HELP, no_args_is_help=True, add_completion=False)
worker_app = typer.Typer(help="Run one worker process.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
app.add_typer(cli_office.app, name="office", rich_help_panel="Using the API")
# `semo session changes|review|handoff` live in cli/changes.py, on the session app
assert _changes.app is cli_session.app
app.add_typer(cli_session.app, name="session", rich_help_panel="Using the API")
app.add_typer(cli_session.job_app, name="job", rich_help_panel="Using the API")
app.add_typer(cli_session.command_app, name="command", rich_help_panel="Using the API")
app.add_typer(cli_webhook.app, name="webhook", rich_help_panel="Using the API")
app.add_typer(cli_machine.app, name="machine", rich_help_panel="Using the API")



def settings_or_exit() -> Settings:
    """This process's settings, or exit 2 with what is wrong in the configuration."""
    try:
        return load_settings()
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.callback()
def main_options(api_url: ApiUrl = None, token: Token = None) -> None:
    """semo-sessions: AI coding agents in real terminals, supervised by Temporal."""
    # `semo --api-url URL office list` works as well as `semo office list --api-url URL`
    set_root_options(api_url=api_url, token=token)


MetricsAddress = Annotated[str | None, typer.Option(
    "--metrics-address", envvar="SEMO_METRICS_ADDRESS", metavar="HOST:PORT",
    help="Serve Prometheus metrics (Temporal SDK and semo's) at http://HOST:PORT/metrics")]


@app.command()
def dev() -> None:
    """Start the whole system on this machine (embedded Temporal and Postgres); Ctrl+C stops it."""
    from dev.launcher import run_dev

    raise typer.Exit(run_dev(settings_or_exit()))


@app.command()
def migrate() -> None:
    """Apply pending database migrations (idempotent)."""
    from db.migrate import migrate as apply

    settings = settings_or_exit()
    done = apply(settings.effective_database_url())
    typer.echo(f"applied: {', '.join(done)}" if done else "database is up to date")


@app.command()
def api() -> None:
    """Run the REST API (uvicorn)."""
    import uvicorn

    from api.main import create_app
    from cli.runner import setup_logging

    setup_logging("api")
    settings = settings_or_exit()
    try:
        application = create_app(settings)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(application, host=settings.api_host, port=settings.api_port, log_level="warning",
                log_config=None,  # uvicorn's own lines go through the structured logs too
                timeout_graceful_shutdown=5)


@worker_app.command("server")
def worker_server(metrics_address: MetricsAddress = None) -> None:
    """The server worker: session workflows and their database writes (queue semo-server)."""
    from cli.runner import run_component
    from worker.server import run_server_worker

    run_component("server-worker", run_server_worker, metrics_address=metrics_address)


@worker_app.command("client")
def worker_client(
    metrics_address: MetricsAddress = None,
    stop_agents: Annotated[bool, typer.Option(
        "--stop-agents",
        help="on SIGTERM/SIGINT stop this machine's agents (by default they keep running, "
             "kept by the keeper, and the next worker takes them over: an upgrade)")] = False,
) -> None:
    """This machine's client worker: terminals (queue semo-machine-{machine_id})."""
    from functools import partial

    from cli.runner import run_component
    from worker.client import run_client_worker

    run_component("client-worker", partial(run_client_worker, leave_agents=not stop_agents),
                  metrics_address=metrics_address)


@worker_app.command("intake")
def worker_intake(metrics_address: MetricsAddress = None) -> None:
    """The command intake: carries out rows inserted into agent_commands."""
    from cli.runner import run_component
    from worker.intake import run_intake

    run_component("intake", run_intake, metrics_address=metrics_address)


@app.command()
def token(office: list[str] = typer.Option(["*"], help="office ids the token opens ('*': all)"),
          sub: str = typer.Option("semo-dev", help="the user (sub claim)"),
          ttl: int = typer.Option(7 * 24 * 3600, help="seconds until it expires")) -> None:
    """Mint an API token with this deployment's JWT secret."""
    from api.auth import mint_token

    settings = settings_or_exit()
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is None and settings.dev_json_path.exists():
        secret = json.loads(settings.dev_json_path.read_text()).get("jwt_secret")
    if not secret:
        typer.echo(
            "error: no JWT secret: set SUPABASE_JWT_SECRET or run `semo dev` first", err=True
        )
        raise typer.Exit(2)
    typer.echo(mint_token(secret, sub, office, audience=settings.jwt_audience, ttl_s=ttl))


@app.command(rich_help_panel="Using the API")
def console(next_path: str = typer.Option("/console/", "--next", help="the console page to open"),
            api_url: ApiUrl = None, token: Token = None) -> None:
    """Print a one-time login link to the web console (valid once, for ten minutes)."""
    from cli.common import api_errors, client

    api = client(api_url, token)
    with api, api_errors(api):
        typer.echo(api.console_link(next_path)["url"])


def main() -> None:  # pragma: no cover
    app(prog_name="semo")
