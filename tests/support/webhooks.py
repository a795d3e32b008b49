"""A loopback webhook receiver and subscriptions, for tests."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.webhook_receiver import Receiver


@contextlib.contextmanager
def overridden(settings, **values):
    """Change the session-wide settings (the API, the dispatcher and the activities share
    them) for one test."""
    before = {k: getattr(settings, k) for k in values}
    for k, v in values.items():
        setattr(settings, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(settings, k, v)


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture
def loopback(settings):
    """This deployment may call loopback receivers, and retries come quickly."""
    with overridden(settings, webhook_allow_loopback=True, webhook_retry_initial_s=0.3,
                    webhook_retry_max_interval_s=0.5):
        yield


async def subscribe(http, office: str, url: str, events: list[str], **extra) -> dict:
    r = await http.post(f"/api/offices/{office}/webhooks", json={"url": url, "events": events, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def arrived(receiver: Receiver, kind: str, count: int = 1):
    async def probe():
        got = receiver.of_type(kind)
        return got if len(got) >= count else None
    return probe


