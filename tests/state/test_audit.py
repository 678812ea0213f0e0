"""The audit trail: durable, masked, filtered, paged with Segment-style cursors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.config.workspace import StateConfig
from headwater.state.audit import MASK, AuditLog, decode_cursor, diff_of, mask_secrets


@pytest.fixture
def log(tmp_path: Path, state_backend: StateConfig | None) -> Iterator[AuditLog]:
    """Each test of the trail twice: the data directory's file, and PostgreSQL's schema."""
    opened = AuditLog.open(tmp_path, state_backend)
    yield opened
    opened.close()


def test_record_survives_reopen_in_the_state_dir(tmp_path: Path) -> None:
    first = AuditLog.for_data_dir(tmp_path)
    entry = first.record(
        "ci-deploy",
        "disable",
        "destinations/amplitude",
        {"enabled": {"from": True, "to": False}},
        "api",
    )
    first.close()
    again = AuditLog.for_data_dir(tmp_path)
    [back] = again.entries().entries
    assert back == entry
    assert back.diff == {"enabled": {"from": True, "to": False}}


def test_secrets_are_masked_before_they_reach_the_file(tmp_path: Path) -> None:
    log = AuditLog.for_data_dir(tmp_path)
    diff = {
        "settings": {"apiKey": {"from": "k-old-123", "to": "k-new-456"}, "region": "EU"},
        "credentials": {"user": "u", "password": "p"},
        "write_key": "wk_live_abcdef",
        "env": "${AMPLITUDE_KEY}",
        "note": "hwt_" + "x" * 30,
        "api_key": "${AMPLITUDE_KEY}",
    }
    log.record("admin", "update", "destinations/amplitude", diff, "api")
    raw = Path(log.where).read_bytes() + Path(log.where + "-wal").read_bytes()
    for secret in (b"k-old-123", b"k-new-456", b"wk_live_abcdef", b"hwt_xxxx"):
        assert secret not in raw
    [entry] = log.entries().entries
    assert entry.diff["settings"]["apiKey"] == {"from": MASK, "to": MASK}
    assert entry.diff["settings"]["region"] == "EU"
    assert entry.diff["credentials"] == {"user": MASK, "password": MASK}
    assert entry.diff["api_key"] == "${AMPLITUDE_KEY}"  # an env reference names, not reveals
    assert entry.diff["note"] == MASK


def test_mask_is_idempotent_and_keeps_plain_fields() -> None:
    diff = {"name": "amp", "token_count": 3, "secretKey": "s", "tags": ["a", "b"]}
    once = mask_secrets(diff)
    assert mask_secrets(once) == once
    assert once["name"] == "amp" and once["tags"] == ["a", "b"] and once["secretKey"] == MASK


def test_resource_filter_matches_the_resource_and_what_lies_under_it(log: AuditLog) -> None:
    log.record("a", "update", "destinations/amplitude", {}, "api")
    log.record("a", "update", "destinations/amplitude-eu", {}, "api")
    log.record("a", "update", "destinations/amplitude/mappings/track", {}, "console")
    log.record("a", "update", "sources/web", {}, "cli")
    got = [e.resource for e in log.entries("destinations/amplitude").entries]
    assert got == ["destinations/amplitude/mappings/track", "destinations/amplitude"]
    assert len(log.entries("destinations").entries) == 3


def test_since_filter(log: AuditLog) -> None:
    log.record("a", "update", "sources/web", {}, "api", at_ms=1_000)
    log.record("a", "update", "sources/web", {}, "api", at_ms=5_000)
    assert [e.at_ms for e in log.entries(since_ms=2_000).entries] == [5_000]


def test_cursor_pages_cover_every_entry_once_newest_first(log: AuditLog) -> None:
    for i in range(7):
        log.record("a", "update", f"sources/s{i}", {}, "api")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = log.entries(limit=3, cursor=cursor)
        seen += [e.resource for e in page.entries]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"sources/s{i}" for i in reversed(range(7))]
    assert pages == 3
    assert len(list(log.iter_entries())) == 7


def test_bad_cursor_and_origin_are_refused_with_the_field_named(log: AuditLog) -> None:
    with pytest.raises(ValueError, match=r"pagination\.cursor"):
        log.entries(cursor="not-base64!")
    with pytest.raises(ValueError, match=r"pagination\.count"):
        log.entries(limit=0)
    with pytest.raises(ValueError, match="origin"):
        log.record("a", "update", "sources/web", {}, "email")
    with pytest.raises(ValueError, match=r"pagination\.cursor"):
        decode_cursor("MA==")  # id 0: no entry lies below it


def test_last_change_by_action(log: AuditLog) -> None:
    log.record("ci-deploy", "disable", "destinations/amplitude", {}, "api", at_ms=1_000)
    log.record("alice", "update", "destinations/amplitude", {}, "console", at_ms=2_000)
    last = log.last_change("destinations/amplitude")
    assert last is not None and last.actor == "alice"
    off = log.last_change("destinations/amplitude", "disable|delete")
    assert off is not None and off.actor == "ci-deploy"
    assert (
        "destination amplitude was disabled at 1970-01-01 00:00 UTC by token ci-deploy"
        in off.sentence()
    )
    assert log.last_change("destinations/mixpanel") is None


def test_two_connections_append_without_losing_entries(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    server, cli = (AuditLog.open(tmp_path, state_backend) for _ in range(2))
    for i in range(20):
        (server if i % 2 else cli).record("a", "update", f"sources/s{i}", {}, "api")
    entries = list(server.iter_entries())
    server.close()
    cli.close()
    assert len({e.id for e in entries}) == 20
    assert {e.resource for e in entries} == {f"sources/s{i}" for i in range(20)}


def test_diff_of_lists_changed_fields_only() -> None:
    assert diff_of({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {
        "b": {"from": 2, "to": 3},
        "c": {"from": None, "to": 4},
    }
