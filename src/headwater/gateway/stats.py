"""Counts of what the Tracking API accepted and refused, with the latest refusals as samples.

Every refusal is counted per scope and reason, and the newest ``samples`` are kept. The
scope is the source's name when the write key was known, and ``key:<prefix>…`` (a redacted
prefix, never the whole key) when it was not, so "nothing arrives" can be traced to a wrong
key without exposing keys. Counters live for the life of the process, like Prometheus
counters; the debugger and diagnose (later issues) read them through ``snapshot()``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

MAX_UNKNOWN_KEY_SCOPES = 1000
UNKNOWN_KEY_OVERFLOW = "key:other"


def redact_key(key: str) -> str:
    """Enough of a write key to recognise it, not enough to use it: ``wk_web…``."""
    keep = min(6, max(1, len(key) // 3))
    return f"{key[:keep]}…"


@dataclass(frozen=True, slots=True)
class Rejection:
    at: str  # ISO time
    scope: str  # source name, or "key:<prefix>…", or "unknown" when no key was sent
    code: str
    message: str
    status: int
    path: str
    ip: str | None
    user_agent: str | None
    message_id: str | None = None
    index: int | None = None  # position in the batch, when one item was refused
    excerpt: str | None = None  # the start of what was sent


@dataclass
class IngestStats:
    samples: int = 20
    received: Counter[str] = field(default_factory=Counter)  # events stored, per source
    duplicates: Counter[str] = field(default_factory=Counter)  # per source
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (scope, code)
    processed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(source, step): what the processor did at ingest — ``blocked:<reason>``,
    ``violations``, ``transformed`` (counted by the processor through app.py)."""
    _latest: dict[tuple[str, str], deque[Rejection]] = field(default_factory=dict)
    _key_scopes: set[str] = field(default_factory=set)
    on_refuse: Callable[[Rejection], None] | None = None
    """Told of every refusal after it is counted (the debugger and the flow counts)."""

    def accepted(self, source: str, stored: int, duplicates: int) -> None:
        self.received[source] += stored
        if duplicates:
            self.duplicates[source] += duplicates

    def refuse(self, rejection: Rejection) -> None:
        scope = rejection.scope
        if scope.startswith("key:") and scope not in self._key_scopes:
            if len(self._key_scopes) >= MAX_UNKNOWN_KEY_SCOPES:  # random keys must not grow memory
                scope = UNKNOWN_KEY_OVERFLOW
                rejection = replace(rejection, scope=scope)
            else:
                self._key_scopes.add(scope)
        key = (scope, rejection.code)
        self.rejected[key] += 1
        latest = self._latest.get(key)
        if latest is None:
            latest = self._latest[key] = deque(maxlen=self.samples)
        latest.append(rejection)
        if self.on_refuse is not None:
            self.on_refuse(rejection)

    def latest(self, scope: str, code: str) -> list[Rejection]:
        return list(self._latest.get((scope, code), ()))

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "duplicates": dict(self.duplicates),
            "rejected": [
                {"scope": scope, "code": code, "count": count,
                 "samples": [vars_of(r) for r in self._latest.get((scope, code), ())]}
                for (scope, code), count in sorted(self.rejected.items())
            ],
        }  # fmt: skip


def vars_of(rejection: Rejection) -> dict[str, Any]:
    return {name: getattr(rejection, name) for name in rejection.__slots__}
