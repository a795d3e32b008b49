"""Waiting on a condition, with a generous bound and no fixed sleeps."""

from __future__ import annotations

import asyncio


async def wait_for(probe, *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `probe` (async, returns a truthy value when done) until it holds, or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


