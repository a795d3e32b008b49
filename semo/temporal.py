"""Connecting to Temporal the same way everywhere: pydantic data converter, timeouts, retry."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig

from semo.settings import Settings


async def connect(settings: Settings, *, wait_s: float = 30.0) -> Client:
    """Connect, retrying while the server comes up (a dev server starting, a restart)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await Client.connect(
                settings.effective_temporal_address(),
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
                api_key=settings.temporal_api_key.get_secret_value()
                if settings.temporal_api_key else None,
                tls=settings.temporal_tls,
                retry_config=RetryConfig(max_retries=5, max_elapsed_time_millis=10_000),
            )
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
