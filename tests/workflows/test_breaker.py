"""The restart circuit breaker's arithmetic (workflows/breaker.py), without a workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows.breaker import MAX_BACKOFF_S, strike
from workflows.contracts import BreakerPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = BreakerPolicy(max_failures=3, window_s=600, cooldown_s=300)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_first_failure_restarts_after_a_second():
    v = strike([], at(0), POLICY, "closed")
    assert (v.opens, v.backoff_s, v.failures) == (False, 1, [at(0)])


def test_the_third_failure_in_the_window_opens_the_circuit():
    v1 = strike([], at(0), POLICY, "closed")
    v2 = strike(v1.failures, at(60), POLICY, "closed")
    assert (v2.opens, v2.backoff_s) == (False, 2)
    v3 = strike(v2.failures, at(120), POLICY, "closed")
    assert v3.opens and v3.failures == [at(0), at(60), at(120)]


def test_failures_older_than_the_window_do_not_count():
    v = strike([at(0), at(100)], at(650), POLICY, "closed")
    assert not v.opens
    assert v.failures == [at(100), at(650)]  # at(0) left the 600 s window
    assert strike([at(0)], at(600), POLICY, "closed").failures == [at(600)]  # the edge is out


def test_a_failed_half_open_probe_opens_the_circuit_at_once():
    assert strike([], at(0), POLICY, "half_open").opens


def test_the_backoff_doubles_up_to_its_cap():
    policy = BreakerPolicy(max_failures=100, window_s=10_000)
    failures: list[datetime] = []
    backoffs = []
    for i in range(8):
        v = strike(failures, at(i), policy, "closed")
        failures = v.failures
        backoffs.append(v.backoff_s)
    assert backoffs == [1, 2, 4, 8, 16, MAX_BACKOFF_S, MAX_BACKOFF_S, MAX_BACKOFF_S]
