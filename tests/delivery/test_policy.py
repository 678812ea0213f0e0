"""Backoff, the token bucket and the circuit breaker, on a clock the tests move."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.delivery.policy import BreakerState, CircuitBreaker, TokenBucket, backoff_secs


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # (a call, so that type checkers do not narrow it for good)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- backoff


@given(
    attempts=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.001, max_value=100),
    cap=st.floats(min_value=0.001, max_value=10_000),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_within_half_and_all_of_the_exponential_ceiling(
    attempts: int, base: float, cap: float, r: float
) -> None:
    ceiling = min(cap, base * 2.0 ** (attempts - 1))
    wait = backoff_secs(attempts, base, cap, rand=lambda: r)
    assert ceiling / 2 <= wait <= ceiling
    assert wait <= cap


def test_backoff_doubles_and_stops_at_the_cap() -> None:
    top = [backoff_secs(n, 1.0, 600.0, rand=lambda: 0.999999) for n in range(1, 13)]
    assert [round(t) for t in top[:10]] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert top[10] == top[11] == pytest.approx(600, rel=1e-5)
    low = [backoff_secs(n, 1.0, 600.0, rand=lambda: 0.0) for n in range(1, 4)]
    assert low == [0.5, 1.0, 2.0]


def test_backoff_is_randomised() -> None:
    waits = {backoff_secs(5, 1.0, 600.0) for _ in range(50)}
    assert len(waits) > 40 and all(8 <= w <= 16 for w in waits)


# ---------------------------------------------------------------------- token bucket


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(4, clock=clock)
    delays = [bucket.delay() for _ in range(8)]
    assert delays[:4] == [0, 0, 0, 0]
    assert delays[4:] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    clock.now += 1.0  # the four reserved tokens are paid back, nothing more
    assert bucket.delay() == pytest.approx(0.25)
    clock.now += 10  # refills up to the burst, not beyond
    assert [bucket.delay() for _ in range(5)][-2:] == [0, pytest.approx(0.25)]


def test_token_bucket_with_a_rate_below_one() -> None:
    clock = Clock()
    bucket = TokenBucket(0.5, clock=clock)
    assert bucket.delay() == 0
    assert bucket.delay() == pytest.approx(2.0)
    clock.now += 4
    assert bucket.delay() == 0


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
)
def test_token_bucket_never_exceeds_burst_plus_rate_times_time(
    rate: float, gaps: list[float]
) -> None:
    """Requests sent when the bucket says: over any stretch of time t, at most
    burst + rate * t of them."""
    clock = Clock()
    bucket = TokenBucket(rate, clock=clock)
    sent: list[float] = []
    for gap in gaps:
        clock.now += gap
        sent.append(clock.now + bucket.delay())
    sent.sort()
    for i in range(len(sent)):
        for j in range(i, len(sent)):
            assert j - i + 1 <= bucket.burst + rate * (sent[j] - sent[i]) + 1e-6


# ---------------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, probe_secs=1, max_probe_secs=8, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive
    breaker.failure()
    breaker.failure()
    assert state(breaker) is BreakerState.CLOSED and breaker.allows_send()
    breaker.failure()
    assert state(breaker) is BreakerState.OPEN and not breaker.allows_send()
    assert breaker.opened_at == clock.now


def test_breaker_probes_with_a_doubling_wait_up_to_the_most() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, probe_secs=1, max_probe_secs=5, clock=clock)
    breaker.failure()
    opened = clock.now
    waits = []
    for _ in range(5):
        start = clock.now
        clock.now += 0.01
        assert not breaker.probe_due()
        clock.now = breaker.probe_at
        assert breaker.probe_due()
        waits.append(breaker.probe_at - start)
        breaker.start_probe()
        assert state(breaker) is BreakerState.HALF_OPEN and not breaker.allows_send()
        assert not breaker.probe_due()
        breaker.failure()
        assert state(breaker) is BreakerState.OPEN
    assert waits == pytest.approx([1, 2, 4, 5, 5])
    assert breaker.opened_at == opened  # still the same outage
    breaker.start_probe()
    breaker.success()
    assert state(breaker) is BreakerState.CLOSED and breaker.allows_send()
    assert breaker.opened_at is None and breaker.consecutive_failures == 0
    breaker.failure()  # a new outage starts again from the first wait
    assert breaker.probe_at - clock.now == pytest.approx(1)


def test_breaker_pause_waits_at_least_the_destinations_retry_after() -> None:
    clock = Clock()
    breaker = CircuitBreaker(5, probe_secs=1, max_probe_secs=60, clock=clock)
    breaker.pause(30)
    assert state(breaker) is BreakerState.OPEN
    clock.now += 29.9
    assert not breaker.probe_due()
    clock.now += 0.1
    assert breaker.probe_due()
    breaker.start_probe()
    breaker.pause(0.2)  # a shorter Retry-After still waits the probe interval
    assert breaker.probe_at - clock.now == pytest.approx(1)
