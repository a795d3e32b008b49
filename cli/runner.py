"""Running one component as a process: logging, metrics, and SIGINT/SIGTERM as a stop event."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from semo.errors import ConfigError
from semo.observability import configure_logging, install_worker_runtime
from semo.settings import Settings, load_settings


def setup_logging(name: str) -> None:
    """Structured logs (semo/observability.py): JSON lines to a file, console to a terminal."""
    configure_logging(name)


def run_component(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]],
                  *, metrics_address: str | None = None) -> None:
    setup_logging(name)
    install_worker_runtime(name, metrics_address)  # before anything connects to Temporal
    try:
        settings = load_settings()
    except ConfigError as err:  # at start, naming the setting: never a silently other agent
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(settings, stop)

    try:
        asyncio.run(runner())
    except ConfigError as err:  # found once running (another worker holds this machine)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
