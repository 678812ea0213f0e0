"""The diagnose playbook, one rule at a time, on hand-built evidence."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headwater.config.workspace import parse_workspace
from headwater.delivery.outcomes import EventState
from headwater.gateway.normalize import iso_ms
from headwater.gateway.stats import IngestStats, Rejection
from headwater.log.base import AppendResult, Record
from headwater.observe.delivery_report import DeliveryReport, ErrorGroup
from headwater.observe.diagnose import (
    DestinationEvidence,
    Evidence,
    Finding,
    RefusalGroup,
    SourceEvidence,
    diagnose,
)
from headwater.observe.service import Observer

HOUR = 3_600_000
UNTIL = 1_800_000_000_000
SINCE = UNTIL - HOUR
DEADLINE = UNTIL + 3 * HOUR
KEYS = {"website": "wk_web…", "backend": "wk_bac…"}


def source(name: str = "website", received: int = 10, enabled: bool = True,
           **steps: int) -> SourceEvidence:  # fmt: skip
    flow = Counter({"received": received, **{k.replace("__", ":"): n for k, n in steps.items()}})
    return SourceEvidence(name, enabled, flow, UNTIL - 1000 if received else None)


def report(name: str = "hook", errors: Sequence[ErrorGroup] = (), **fields: Any) -> DeliveryReport:
    out = DeliveryReport(name, SINCE, UNTIL, 60_000)
    out.counts["delivered"] = 5
    for group in errors:
        out.errors[(group.state.value, group.status, group.reason)] = group
        out.counts[group.state.value] += group.events
    for key, value in fields.items():
        setattr(out, key, value)
    return out


def group(state: EventState, status: int | None, reason: str, events: int) -> ErrorGroup:
    return ErrorGroup(state, status, reason, events, events, SINCE + 1000, UNTIL - 1000)


def destination(
    rep: DeliveryReport,
    enabled: bool = True,
    breaker: str = "closed",
    ids: dict[tuple[str, int | None, str], list[str]] | None = None,
) -> DestinationEvidence:
    return DestinationEvidence(rep.destination, "webhook", enabled, ["website"], rep, breaker, 0,
                               ids or {})  # fmt: skip


def evidence(
    sources: list[SourceEvidence] | None = None,
    destinations: Sequence[DestinationEvidence] = (),
    refusals: Sequence[RefusalGroup] = (),
    blocked_samples: dict[str, list[str]] | None = None,
) -> Evidence:
    return Evidence(SINCE, UNTIL, sources if sources is not None else [source(), source("backend")],
                    list(destinations), list(refusals), KEYS, blocked_samples or {})  # fmt: skip


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.title for f in findings]
    return findings[0]


def test_a_healthy_pipeline_has_no_findings() -> None:
    assert diagnose(evidence(destinations=[destination(report())])) == []


def test_401_means_credentials_invalid_or_rotated() -> None:
    key = ("discarded", 401, "HTTP 401: invalid api key")
    ids = ["m1", "m2", "m3"]
    rep = report(errors=[group(EventState.DISCARDED, 401, key[2], 12)])
    found = only(diagnose(evidence(destinations=[destination(rep, ids={key: ids})])))
    assert found.severity == "critical"
    assert found.title == "destination hook: credentials invalid or rotated (401)"
    assert "12 events" in found.detail and "invalid api key" in found.detail
    assert found.destination == "hook" and found.source is None and found.events == 12
    assert found.evidence["sampleMessageIds"] == ids and found.evidence["status"] == 401
    # the fix names the settings to change and the replay that resends what was lost
    assert "settings" in found.fix
    assert f"headwater replay --destination hook --since {iso_ms(SINCE)}" in found.fix


def test_403_is_read_as_credentials_too() -> None:
    rep = report(errors=[group(EventState.DISCARDED, 403, "forbidden", 2)])
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.severity == "critical" and "credentials invalid or rotated (403)" in found.title


def test_429_means_throttling() -> None:
    rep = report(errors=[group(EventState.RETRYING, 429, "HTTP 429", 40)], retrying_now=40,
                 retry_deadline_ms=DEADLINE)  # fmt: skip
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.severity == "warning"
    assert found.title == "destination hook: throttling (429)"
    assert "rate_limit_per_sec" in found.fix and iso_ms(DEADLINE) in found.fix


def test_5xx_being_retried_is_degraded_with_the_retry_deadline() -> None:
    key = ("retrying", 503, "HTTP 503: unavailable")
    rep = report(errors=[group(EventState.RETRYING, 503, key[2], 7)], retrying_now=7,
                 retry_deadline_ms=DEADLINE)  # fmt: skip
    found = only(diagnose(evidence(destinations=[destination(rep, ids={key: ["m9"]})])))
    assert found.severity == "warning"
    assert found.title == "destination hook: degraded (503)"
    assert f"retried until {iso_ms(DEADLINE)}" in found.fix
    assert found.events == 7 and found.evidence["sampleMessageIds"] == ["m9"]


def test_no_answer_at_all_is_degraded_too() -> None:
    rep = report(errors=[group(EventState.RETRYING, None, "timeout", 3)], retrying_now=3,
                 retry_deadline_ms=DEADLINE)  # fmt: skip
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.title == "destination hook: degraded (no answer)"


def test_retries_left_over_from_before_the_window() -> None:
    rep = report(retrying_now=4, retry_deadline_ms=DEADLINE)
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.severity == "warning" and found.events == 4
    assert found.title == "destination hook: 4 events wait for a retry"
    assert iso_ms(DEADLINE) in found.detail


def test_dead_letters() -> None:
    rep = report(dead_letters=30)
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.severity == "warning" and found.events == 30
    assert "30 events in the dead-letter store" in found.title
    assert "headwater deadletter retry --destination hook" in found.fix
    # dead-lettered in the window: a critical error group as well
    rep = report(errors=[group(EventState.DEAD_LETTERED, 500, "window closed", 30)],
                 dead_letters=30)  # fmt: skip
    findings = diagnose(evidence(destinations=[destination(rep)]))
    assert [(f.severity, f.title) for f in findings] == [
        ("critical", "destination hook: events dead-lettered"),
        ("warning", "destination hook: 30 events in the dead-letter store"),
    ]


def test_other_permanent_refusals() -> None:
    rep = report(errors=[group(EventState.DISCARDED, 400, "HTTP 400: bad field", 6)])
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.severity == "critical"
    assert found.title == "destination hook: events rejected (400)"


def test_filtered_events_are_information_with_their_reasons() -> None:
    rep = report()
    rep.filtered.update({"integrations: hook is false": 8, "source not connected": 2})
    found = only(diagnose(evidence(destinations=[destination(rep)])))
    assert found.severity == "info" and found.events == 10
    assert found.title == "destination hook: 10 events filtered, not delivered"
    assert "integrations: hook is false ×8" in found.detail
    assert found.evidence["filtered"] == {"integrations: hook is false": 8,
                                          "source not connected": 2}  # fmt: skip


def test_a_disabled_destination_is_information() -> None:
    rep = report()
    rep.counts["filtered"] = 9
    found = only(diagnose(evidence(destinations=[destination(rep, enabled=False)])))
    assert found.severity == "info" and found.title == "destination hook is disabled"
    assert found.events == 9 and "enabled: true" in found.fix


def test_an_open_breaker_without_errors_in_the_window() -> None:
    found = only(diagnose(evidence(destinations=[destination(report(), breaker="open")])))
    assert found.severity == "warning" and "circuit breaker is open" in found.title


def test_silence_a_source_that_received_nothing() -> None:
    found = only(diagnose(evidence([source(), source("backend", received=0)])))
    assert found.severity == "warning" and found.source == "backend"
    assert found.title == f"nothing received from source backend since {iso_ms(SINCE)}"
    assert "no event arrived since the server started" in found.detail
    assert "apiHost" in found.fix
    # a disabled source is expected to be quiet
    assert diagnose(evidence([source(), source("backend", received=0, enabled=False)])) == []


def test_silence_mentions_refused_unknown_keys() -> None:
    unknown = RefusalGroup("key:wk_bak…", "invalid_write_key", 3, "write key unknown", [])
    findings = diagnose(evidence([source(), source("backend", received=0)], refusals=[unknown]))
    silent = next(f for f in findings if f.source == "backend")
    assert "3 requests with unknown write keys were refused" in silent.detail
    assert silent.evidence["unknownKeyRefusals"] == 3


def test_an_unknown_write_key_names_the_sources_key_prefixes() -> None:
    samples = [{"path": "/v1/batch", "ip": "10.0.0.9", "message_id": None}]
    unknown = RefusalGroup("key:wk_wr…", "invalid_write_key", 25, "write key 'wk_wr…'", samples)
    found = only(diagnose(evidence(refusals=[unknown])))
    assert found.severity == "critical" and found.events == 25
    assert found.title == "requests with the unknown write key wk_wr… are refused"
    assert "25 requests refused (401 invalid_write_key)" in found.detail
    assert "backend: wk_bac…, website: wk_web…" in found.fix
    assert found.evidence == {"refused": 25, "code": "invalid_write_key", "samples": samples}
    assert found.source is None


def test_refusals_in_a_source_that_receives_are_a_warning() -> None:
    bad_json = RefusalGroup("website", "invalid_json", 4, "the body is not valid JSON", [])
    found = only(diagnose(evidence(refusals=[bad_json])))
    assert found.severity == "warning" and found.source == "website"
    assert found.title == "source website: 4 refused (invalid_json)"
    assert "not JSON" in found.fix
    # when nothing gets through at all, it is critical
    found = only(diagnose(evidence([source(received=0), source("backend")], refusals=[bad_json])))
    assert found.severity == "critical"


def test_requests_without_a_key() -> None:
    missing = RefusalGroup("unknown", "missing_write_key", 2, "no write key", [])
    found = only(diagnose(evidence(refusals=[missing])))
    assert found.severity == "critical" and "(missing_write_key)" in found.title
    assert "set it in the SDK" in found.fix


def test_events_blocked_by_a_tracking_plan() -> None:
    planned = source(blocked__unplanned_event=6, blocked__invalid_property=2)
    found = only(diagnose(evidence([planned, source("backend")],
                                   blocked_samples={"website": ["b1", "b2"]})))  # fmt: skip
    assert found.severity == "warning" and found.events == 8 and found.source == "website"
    assert found.title == "source website: 8 events blocked by its tracking plan"
    assert "unplanned_event ×6" in found.detail and "invalid_property ×2" in found.detail
    assert "headwater plans resend-blocked --source website" in found.fix
    assert found.evidence["sampleMessageIds"] == ["b1", "b2"]


def test_findings_come_by_severity_then_by_events() -> None:
    rep = report(errors=[group(EventState.DISCARDED, 401, "unauthorized", 3),
                         group(EventState.RETRYING, 503, "unavailable", 50)],
                 retry_deadline_ms=DEADLINE)  # fmt: skip
    rep.filtered["integrations"] = 100
    unknown = RefusalGroup("key:wk_wr…", "invalid_write_key", 9, "unknown", [])
    findings = diagnose(evidence([source(), source("backend", received=0)],
                                 [destination(rep)], [unknown]))  # fmt: skip
    assert [(f.severity, f.events) for f in findings] == [
        ("critical", 9), ("critical", 3), ("warning", 50), ("warning", 0), ("info", 100),
    ]  # fmt: skip
    assert findings[0].as_dict()["severity"] == "critical"
    assert set(findings[0].as_dict()) == {"severity", "title", "detail", "fix", "events",
                                          "source", "destination", "evidence"}  # fmt: skip


async def test_silence_after_a_key_rotation_still_names_the_last_event(tmp_path: Path) -> None:
    """Through the Observer: the evidence of a source whose SDK got a wrong key — its last
    event two hours ago, and since then only refusals nobody can be tied to."""
    workspace = parse_workspace({"sources": [{"name": "website", "write_key": "wk_website_1"}]})
    stats = IngestStats()
    observer = Observer(workspace, tmp_path, stats)
    stats.on_refuse = observer.recorder.refused
    await observer.flow.open()
    try:
        last_ms = int(time.time() * 1000) - 2 * HOUR
        event = Record("m1", "website", "track", last_ms, b'{"type":"track","event":"E"}')
        observer.debugger.accepted("website", [event], [AppendResult(1, False)])
        for _ in range(60):
            stats.refuse(Rejection(at=iso_ms(last_ms + HOUR), scope="key:wk_wr…",
                                   code="invalid_write_key", message="write key 'wk_wr…' unknown",
                                   status=401, path="/v1/batch", ip=None, user_agent=None))  # fmt: skip
        doc = await observer.diagnose(observer.window("1h"))
    finally:
        await observer.stop()
    assert [f["title"].split(" since ")[0] for f in doc["findings"]] == [
        "requests with the unknown write key wk_wr… are refused",
        "nothing received from source website",
    ]
    silence = doc["findings"][1]["detail"]
    assert f"the last event arrived at {iso_ms(last_ms)}" in silence
    assert "60 requests with unknown write keys were refused" in silence
    assert "The sources' keys start: website: wk_w…" in doc["findings"][0]["fix"]
    assert doc["healthy"] is False


def test_plan_violations_and_source_transformations_are_information() -> None:
    changed = source(violations=4, transformed=3)
    findings = diagnose(evidence([changed, source("backend")]))
    assert [(f.severity, f.events, f.source) for f in findings] == [
        ("info", 4, "website"), ("info", 3, "website"),
    ]  # fmt: skip
    assert findings[0].title == "source website: 4 tracking plan violations"
    assert "/api/v1/sources/website/violations" in findings[0].fix
    assert findings[1].title == "source website: 3 events changed by transformations"


def test_events_a_destination_changed_on_the_way() -> None:
    dest = destination(report())
    dest = dataclasses.replace(dest, changed_since_start=7)
    found = only(diagnose(evidence(destinations=[dest])))
    assert found.severity == "info" and found.events == 7 and found.destination == "hook"
    assert "filters/preview" in found.fix


def test_a_source_whose_events_were_all_blocked_is_not_silent() -> None:
    blocked_only = source(received=0, blocked__unplanned_event=5)
    found = only(diagnose(evidence([blocked_only, source("backend")])))
    assert found.title == "source website: 5 events blocked by its tracking plan"


def test_blocked_events_the_store_could_not_keep_are_a_warning() -> None:
    full = source(blocked__violation=3, blocked_not_kept=2)
    findings = diagnose(evidence([full, source("backend")]))
    assert [f.title for f in findings] == [
        "source website: 3 events blocked by its tracking plan",
        "source website: 2 blocked events could not be kept",
    ]
    assert "resend-blocked --source website" in findings[1].fix
