"""Diagnose per vendor: findings that name the vendor, its status and code, since when, and
the setting to fix — on evidence built from the ledger rows of an Amplitude-like
destination, and once through the real engine against a fake that rejects the key."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import StateConfig
from headwater.delivery.outcomes import EventState, Exchange
from headwater.delivery.store import LedgerEntry, StoreDB
from headwater.destinations import TYPES
from headwater.gateway.normalize import iso_ms
from headwater.observe.delivery_report import delivery_report
from headwater.observe.diagnose import DestinationEvidence, Evidence, Finding, diagnose
from headwater.observe.service import Observer, Window, _failing_offsets
from headwater.observe.vendor_reasons import MissingField, VendorError, parse_reason
from tests.fakes import FakeDestination, Reply
from tests.observe.amplitude_like import AmplitudeLike

MIN = 60_000
UNTIL = calendar.timegm((2026, 1, 31, 15, 0, 0)) * 1000
SINCE = UNTIL - 60 * MIN  # 14:00 UTC
DISCARDED, RETRYING = EventState.DISCARDED, EventState.RETRYING
KEY = "Amplitude 400 invalid_api_key: Invalid API Key"


@pytest.fixture
def db(tmp_path: Path, state_backend: StateConfig | None) -> Iterator[StoreDB]:
    store = StoreDB.open(tmp_path, state_backend)  # SQLite and PostgreSQL
    yield store
    store.close()


def rows(state: EventState, status: int, reason: str, batches: Sequence[range], start_min: int,
         exchange: Exchange | None = None, name: str = "amp") -> list[LedgerEntry]:  # fmt: skip
    """One ledger row per batch, a minute apart from ``start_min`` after 14:00."""
    return [
        LedgerEntry(name, state, list(batch), SINCE + (start_min + i) * MIN, 1, status, reason,
                    exchange=exchange)
        for i, batch in enumerate(batches)
    ]  # fmt: skip


def evidence_of(db: StoreDB, kind: type[Any] = AmplitudeLike, name: str = "amp",
                queued: int = 0, retrying_now: int = 0) -> Evidence:  # fmt: skip
    """What the Observer gathers, from the ledger: the report and each group's samples."""
    report = delivery_report(db, name, SINCE, UNTIL)
    report.retrying_now = retrying_now
    window = Window(SINCE, UNTIL, "1h")
    samples = {
        key: [f"m{o}" for o in _failing_offsets(db, name, key, window)]
        for key in ((g.state.value, g.status, g.reason) for g in report.error_groups())
    }
    dest = DestinationEvidence(name, kind.type, True, ["website"], report, "closed", queued,
                               samples, 0, kind.vendor, kind.key_settings)  # fmt: skip
    return Evidence(SINCE, UNTIL, [], [dest], [], {})


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.title for f in findings]
    return findings[0]


def test_an_api_key_rejected_names_the_vendor_code_time_and_setting(db: StoreDB) -> None:
    db.apply(rows(DISCARDED, 400, KEY, [range(1, 11), range(11, 21), range(21, 31)], 2))
    found = only(diagnose(evidence_of(db)))
    assert found.title == (
        "API key rejected by Amplitude (400 invalid_api_key) since 14:02 — rotate `api_key` "
        "or `secret_key`"
    )
    assert found.severity == "critical" and found.events == 30 and found.destination == "amp"
    assert "Invalid API Key" in found.detail and "discarded" in found.detail
    first = iso_ms(SINCE + 2 * MIN)
    assert f"headwater replay --destination amp --since {first}" in found.fix
    assert "`api_key` or `secret_key` of destination amp" in found.fix
    assert found.evidence["code"] == "invalid_api_key" and found.evidence["status"] == 400
    assert found.evidence["firstSeenMs"] == SINCE + 2 * MIN
    assert set(found.evidence["sampleMessageIds"]) <= {f"m{o}" for o in range(1, 31)}
    assert found.evidence["sampleMessageIds"], "no sample messageIds"


def test_a_field_refused_in_several_batches_is_one_finding(db: StoreDB) -> None:
    reason = "Amplitude 400 events_with_invalid_fields: time (event {})"
    db.apply(rows(DISCARDED, 400, reason.format(3), [range(1, 6), range(6, 11)], 5))
    db.apply(rows(DISCARDED, 400, reason.format(7), [range(11, 13)], 9))
    db.apply(rows(DISCARDED, 400, "Amplitude 400 events_with_invalid_fields: user_id (event 1)",
                  [range(20, 21)], 10))  # fmt: skip
    findings = diagnose(evidence_of(db))
    assert [f.title for f in findings] == [
        "Amplitude refused 12 events: field `time` (events_with_invalid_fields)",
        "Amplitude refused 1 events: field `user_id` (events_with_invalid_fields)",
    ]
    time_field = findings[0]
    assert "(event 7)" in time_field.detail, "the latest answer is not shown"
    assert "`time`" in time_field.fix and "mapping of destination amp" in time_field.fix
    assert len(time_field.evidence["reasons"]) == 2 and time_field.evidence["fields"] == ["time"]


def test_rate_limiting_states_the_vendors_limit_retry_after_and_backlog(db: StoreDB) -> None:
    class BrazeLike(AmplitudeLike):
        type = "braze_like_test"
        vendor = "Braze"

    reason = "Braze 429 rate limited (250,000 requests/hour): Too many requests"
    answer = Exchange({"method": "POST"}, {"status": 429, "headers": {"Retry-After": "30"}})
    db.apply(rows(RETRYING, 429, reason, [range(1, 76), range(76, 151)], 20, answer, "braze"))
    found = only(diagnose(evidence_of(db, BrazeLike, "braze", queued=900, retrying_now=150)))
    assert found.title == (
        "Braze rate limits destination braze (429 rate limited, limit 250,000 requests/hour)"
        " since 14:20"
    )
    assert found.severity == "warning" and found.events == 150
    assert "Retry-After (30 s) is honoured" in found.detail
    assert "150 events waiting for a retry, up to 900 more in the queue" in found.detail
    assert "rate_limit_per_sec of braze under Braze's limit (250,000 requests/hour)" in found.fix
    assert found.evidence["backlog"] == 1050 and found.evidence["limit"] == "250,000 requests/hour"


def test_missing_required_fields_per_action_and_field(db: StoreDB) -> None:
    reason = "missing required field user_id (mapped from $.userId) for action log_event"
    db.apply(rows(DISCARDED, 0, reason, [range(1, 21), range(21, 44)], 1))
    other = ("missing required field user_id or device_id (mapped from $.userId / "
             "$.anonymousId) for action identify_user")  # fmt: skip
    db.apply(rows(DISCARDED, 0, other, [range(50, 52)], 30))
    findings = diagnose(evidence_of(db))
    assert [f.title for f in findings] == [
        "43 events discarded: `user_id` missing for action log_event — map it or send userId",
        "2 events discarded: `user_id` or `device_id` missing for action identify_user — map it"
        " or send userId or anonymousId",
    ]
    assert all(f.severity == "warning" for f in findings)
    assert "action log_event of destination amp" in findings[0].fix


@pytest.mark.parametrize(
    ("reason", "title"),
    [
        ("HTTP 400: bad request", "destination amp: events rejected (400)"),
        ("Mixpanel 400 invalid_api_key: nope", "destination amp: events rejected (400)"),
        ("Amplitude 400 something_odd: x", "destination amp: events rejected (400)"),
        ("Amplitude said no, for reasons of its own: x", "destination amp: events rejected (400)"),
        ("Amplitude 400 invalid_request: the body was not what it expects",
         "destination amp: events rejected (400)"),
    ],
)  # fmt: skip
def test_reasons_in_another_shape_fall_under_the_generic_rules(
    db: StoreDB, reason: str, title: str
) -> None:
    db.apply(rows(DISCARDED, 400, reason, [range(1, 4)], 1))
    assert only(diagnose(evidence_of(db))).title == title


def test_a_generic_401_names_the_key_settings(db: StoreDB) -> None:
    db.apply(rows(DISCARDED, 401, "HTTP 401: unauthorized", [range(1, 4)], 1))
    found = only(diagnose(evidence_of(db)))
    assert found.title == "destination amp: credentials invalid or rotated (401)"
    assert "its `api_key` / `secret_key`" in found.fix


def test_dead_letters_keep_their_own_finding(db: StoreDB) -> None:
    reason = "still failing after 9 attempts when the retry window closed: " + KEY
    db.apply(rows(EventState.DEAD_LETTERED, 400, reason, [range(1, 4)], 1))
    assert only(diagnose(evidence_of(db))).title == "destination amp: events dead-lettered"


def test_reading_reasons() -> None:
    assert parse_reason(KEY, "amplitude") == VendorError(
        "Amplitude", 400, "invalid_api_key", "Invalid API Key", "key"
    )
    slow = parse_reason("Braze 429 rate limited (250,000 requests/hour): wait", "Braze")
    assert isinstance(slow, VendorError) and slow.kind == "rate"
    assert (slow.code, slow.limit) == ("rate limited", "250,000 requests/hour")
    two = parse_reason("Amplitude 400 events_with_invalid_fields: time, user_id (events 3, 7)",
                       "Amplitude")  # fmt: skip
    assert isinstance(two, VendorError) and two.fields == ("time", "user_id")
    sentence = parse_reason("Amplitude 400 invalid_body: the JSON was cut short", "Amplitude")
    assert isinstance(sentence, VendorError) and sentence.kind == "other"
    missing = parse_reason("missing required field email for action track", "X")
    assert missing == MissingField("email", "track", ())
    assert parse_reason("HTTP 500: boom", "HTTP") is None
    assert parse_reason("", "Amplitude") is None


# ---------------------------------------------------------------------- through the engine


async def test_a_rejected_key_through_the_engine_diagnose_and_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeDestination
) -> None:
    from headwater.config.workspace import parse_workspace
    from headwater.gateway.stats import IngestStats
    from tests.delivery.conftest import Pipeline, event

    monkeypatch.setitem(TYPES, AmplitudeLike.type, AmplitudeLike)
    fake.script = lambda _r, _i: Reply(400, b'{"code":400,"error":"Invalid API Key"}')
    workspace = parse_workspace({
        "sources": [{"name": "website", "write_key": "wk_website_1"}],
        "destinations": [{"name": "amp", "type": AmplitudeLike.type, "sources": ["website"],
                          "settings": {"url": f"{fake.url}/2/httpapi", "batch": True}}],
    })  # fmt: skip
    pipeline = Pipeline(workspace, tmp_path / "delivery")
    observer = Observer(workspace, tmp_path, IngestStats())
    await pipeline.engine.start()
    await observer.start(pipeline.log, pipeline.engine)
    try:
        ids = await pipeline.send([event() for _ in range(5)])
        await pipeline.wait_states("amp", ids, EventState.DISCARDED)
        doc = await observer.diagnose(observer.window("1h"))
        trace = await observer.trace(ids[0])
    finally:
        await observer.stop()
        await pipeline.engine.stop()
    [finding] = [f for f in doc["findings"] if f["destination"] == "amp"]
    started = time.strftime("%H:%M", time.gmtime(finding["evidence"]["firstSeenMs"] / 1000))
    assert finding["title"] == (
        f"API key rejected by Amplitude (400 invalid_api_key) since {started} — rotate "
        "`api_key` or `secret_key`"
    )
    assert finding["events"] == 5 and set(finding["evidence"]["sampleMessageIds"]) <= set(ids)
    assert doc["healthy"] is False
    [amp] = trace["destinations"]
    assert amp["state"] == "discarded" and amp["reason"] == KEY
    [attempt] = amp["history"]
    assert attempt["reason"] == KEY and attempt["status"] == 400
    assert "Invalid API Key" in attempt["exchange"]["response"]["body"], "the vendor's text"
