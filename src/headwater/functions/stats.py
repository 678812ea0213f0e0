"""What a function did, for ``headwater functions logs``, the API, the console and
Prometheus: invocations, errors by kind, call durations (p50/p99), the last log lines and
sampled failures with their tracebacks. Kept in memory by the process running the pool and
written to a small JSON file each second, so the gateway can show the delivery worker's
functions too (:mod:`.host`)."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

DURATIONS_KEPT = 2048
LOGS_KEPT = 200
ERRORS_KEPT = 20


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FunctionStats:
    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.invocations = 0  # events (or requests) handed to the function
        self.calls = 0  # round trips to a worker (a batch is one)
        self.errors: Counter[str] = Counter()  # by kind: ValidationError, Timeout, Exception, ...
        self.dropped = 0  # insert functions: events returned as None
        self.changed = 0  # insert functions: events returned changed
        self.restarts = 0  # workers replaced after dying or hanging
        self.durations: deque[float] = deque(maxlen=DURATIONS_KEPT)
        self.logs: deque[dict[str, Any]] = deque(maxlen=LOGS_KEPT)
        self.failures: deque[dict[str, Any]] = deque(maxlen=ERRORS_KEPT)
        self.loaded_ms: int | None = None
        self.version = ""
        self.load_error: str | None = None  # the last reload that failed (the old code runs)

    def called(self, events: int, ms: float, logs: list[str]) -> None:
        self.invocations += events
        self.calls += 1
        self.durations.append(ms)
        if logs:
            at = now_ms()
            for line in "".join(logs).splitlines():
                self.logs.append({"atMs": at, "line": line})

    def failed(self, kind: str, message: str, traceback: str | None = None) -> None:
        self.errors[kind] += 1
        self.failures.append({"atMs": now_ms(), "kind": kind, "message": message,
                              "traceback": traceback})  # fmt: skip

    def percentile(self, q: float) -> float | None:
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "invocations": self.invocations,
            "calls": self.calls,
            "errors": sum(self.errors.values()),
            "errorsByKind": dict(self.errors),
            "dropped": self.dropped,
            "changed": self.changed,
            "restarts": self.restarts,
            "p50Ms": self.percentile(0.5),
            "p99Ms": self.percentile(0.99),
            "loadedAtMs": self.loaded_ms,
            "version": self.version,
            "loadError": self.load_error,
            "logs": list(self.logs),
            "failures": list(self.failures),
        }
