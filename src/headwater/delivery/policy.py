"""Backoff, rate limiting and the circuit breaker: written once for every destination."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable

Clock = Callable[[], float]


def backoff_secs(
    attempts: int, base_secs: float, max_secs: float, rand: Callable[[], float] = random.random
) -> float:
    """Randomised exponential backoff ("full jitter" on the upper half): after the n-th
    failure wait between half and all of ``base * 2**(n-1)``, capped at ``max_secs``.

    The jitter spreads retries of many batches so a recovering destination is not hit by
    all of them in the same instant.
    """
    ceiling = min(max_secs, base_secs * 2.0 ** max(0, attempts - 1))
    return ceiling * (0.5 + rand() / 2)


class TokenBucket:
    """At most ``rate`` requests a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Clock = time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._clock = clock
        self._at = clock()

    def delay(self) -> float:
        """Take a token; return how long to wait before using it (0 when one is available)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


class BreakerState(enum.Enum):
    CLOSED = "closed"  # sending normally
    OPEN = "open"  # failing: nothing is sent until the next probe
    HALF_OPEN = "half_open"  # one probe in flight


class CircuitBreaker:
    """Stops hammering a destination that keeps failing, and probes until it recovers.

    ``failures`` consecutive retryable failures open the breaker. While open, the worker
    sends nothing; when ``probe_at`` comes, it sends a single batch (half-open). Success
    closes the breaker; failure re-opens it with the wait doubled, up to ``max_probe_secs``.
    """

    def __init__(
        self,
        failures: int,
        probe_secs: float,
        max_probe_secs: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.failures_to_open = failures
        self.probe_secs = probe_secs
        self.max_probe_secs = max_probe_secs
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.probe_at = 0.0
        self._wait = probe_secs
        self.opened_at: float | None = None

    def allows_send(self) -> bool:
        return self.state is BreakerState.CLOSED

    def probe_due(self) -> bool:
        return self.state is BreakerState.OPEN and self._clock() >= self.probe_at

    def start_probe(self) -> None:
        self.state = BreakerState.HALF_OPEN

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._wait = self.probe_secs
        self.opened_at = None

    def failure(self, at_least_secs: float = 0.0) -> None:
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._wait = min(self.max_probe_secs, self._wait * 2)
            self._open(at_least_secs)
        elif self.consecutive_failures >= self.failures_to_open:
            self._open(at_least_secs)

    def reprobe(self) -> None:
        """A probe that offered the destination nothing (all its events were filtered): open
        again with the next probe due at once."""
        self.state = BreakerState.OPEN
        self.probe_at = self._clock()

    def pause(self, secs: float) -> None:
        """Open at once for at least ``secs`` (the destination said when to come back)."""
        self._open(secs)

    def _open(self, at_least_secs: float) -> None:
        if self.opened_at is None:
            self.opened_at = self._clock()
        self.state = BreakerState.OPEN
        self.probe_at = self._clock() + max(self._wait, at_least_secs)
