"""Refusal counters: bounded however many unknown keys are tried."""

from __future__ import annotations

from headwater.gateway.stats import (
    MAX_UNKNOWN_KEY_SCOPES,
    UNKNOWN_KEY_OVERFLOW,
    IngestStats,
    Rejection,
    redact_key,
)


def rejection(scope: str) -> Rejection:
    return Rejection(
        at="2026-11-26T12:00:00.000Z", scope=scope, code="invalid_write_key", message="m",
        status=401, path="/v1/track", ip="127.0.0.1", user_agent=None,
    )  # fmt: skip


def test_unknown_key_scopes_are_capped() -> None:
    stats = IngestStats(samples=2)
    for i in range(MAX_UNKNOWN_KEY_SCOPES + 50):
        stats.refuse(rejection(f"key:{redact_key(f'random-{i:06d}-key')}{i}"))
    scopes = {scope for scope, _ in stats.rejected}
    assert len(scopes) == MAX_UNKNOWN_KEY_SCOPES + 1
    assert stats.rejected[(UNKNOWN_KEY_OVERFLOW, "invalid_write_key")] == 50
    assert sum(stats.rejected.values()) == MAX_UNKNOWN_KEY_SCOPES + 50, "every refusal counted"
    assert all(
        r.scope == UNKNOWN_KEY_OVERFLOW
        for r in stats.latest(UNKNOWN_KEY_OVERFLOW, "invalid_write_key")
    )


def test_known_scopes_keep_counting_after_the_cap() -> None:
    stats = IngestStats()
    stats.refuse(rejection("key:wk_a…"))
    for i in range(MAX_UNKNOWN_KEY_SCOPES + 5):
        stats.refuse(rejection(f"key:x{i}…"))
    stats.refuse(rejection("key:wk_a…"))
    assert stats.rejected[("key:wk_a…", "invalid_write_key")] == 2
    stats.refuse(rejection("website"))
    assert stats.rejected[("website", "invalid_write_key")] == 1
