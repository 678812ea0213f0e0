"""Diagnose per vendor: the findings that name the vendor's own error.

A destination's error groups (one per outcome, status and reason) whose reasons follow the
vendors' convention (:mod:`headwater.observe.vendor_reasons`) are gathered by what they mean
— a rejected key, throttling, a refused field, a field the mapping could not build — across
reasons that differ only in detail (``time (event 3)``, ``time (event 7)``), and each
becomes one finding:

- ``API key rejected by Amplitude (400 invalid_api_key) since 14:02 — rotate `api_key```;
- ``Braze rate limits destination braze (429 rate limited, limit 250,000 requests/hour)``,
  with the ``Retry-After`` honoured and the backlog;
- ``Amplitude refused 12 events: field `time` (events_with_invalid_fields)``;
- ``43 events discarded: `user_id` missing for action log_event — map it or send userId``.

Groups in any other shape stay with diagnose's generic rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from headwater.gateway.normalize import iso_ms
from headwater.observe.delivery_report import ErrorGroup
from headwater.observe.findings import Finding
from headwater.observe.vendor_reasons import MissingField, VendorError, clock, parse_reason

if TYPE_CHECKING:
    from headwater.observe.diagnose import DestinationEvidence, Evidence

MAX_SAMPLES = 10
MAX_REASONS = 5
VENDOR_STATES = ("retrying", "discarded")  # dead letters keep their own finding


@dataclass
class VendorGroup:
    """Error groups of one destination that mean the same thing."""

    meaning: VendorError | MissingField  # the newest group's
    events: int = 0
    first_at_ms: int = 0
    last_at_ms: int = 0
    states: set[str] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    retry_after: str | None = None  # the newest sample's Retry-After header


def _key(meaning: VendorError | MissingField) -> tuple[Any, ...]:
    if isinstance(meaning, MissingField):
        return ("missing", meaning.action, meaning.field)
    return (meaning.kind, meaning.status, meaning.code, meaning.fields[:1])


def by_vendor_error(
    dest: DestinationEvidence, groups: Sequence[ErrorGroup]
) -> tuple[list[VendorGroup], list[ErrorGroup]]:
    """The groups read as the vendor's errors (gathered), and the rest as they are."""
    gathered: dict[tuple[Any, ...], VendorGroup] = {}
    rest: list[ErrorGroup] = []
    for group in groups:
        meaning = None
        if group.state.value in VENDOR_STATES:
            meaning = parse_reason(group.reason, dest.vendor_name)
        if meaning is None or (isinstance(meaning, VendorError) and meaning.kind == "other"):
            rest.append(group)
            continue
        vg = gathered.setdefault(_key(meaning), VendorGroup(meaning, first_at_ms=group.first_at_ms))
        _add(vg, dest, group, meaning)
    return sorted(gathered.values(), key=lambda g: -g.events), rest


def _add(vg: VendorGroup, dest: DestinationEvidence, group: ErrorGroup, meaning: Any) -> None:
    vg.events += group.events
    vg.first_at_ms = min(vg.first_at_ms, group.first_at_ms)
    if group.last_at_ms >= vg.last_at_ms:
        vg.last_at_ms, vg.meaning = group.last_at_ms, meaning
        vg.retry_after = _retry_after(group.sample_exchange) or vg.retry_after
    vg.states.add(group.state.value)
    if len(vg.reasons) < MAX_REASONS:
        vg.reasons.append(group.reason)
    ids = dest.sample_ids.get((group.state.value, group.status, group.reason), [])
    vg.sample_ids.extend(ids[: MAX_SAMPLES - len(vg.sample_ids)])


def _retry_after(exchange: dict[str, Any] | None) -> str | None:
    response = (exchange or {}).get("response")
    headers = response.get("headers") if isinstance(response, dict) else None
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if str(name).lower() == "retry-after":
            return str(value)
    return None


def vendor_finding(evidence: Evidence, dest: DestinationEvidence, vg: VendorGroup) -> Finding:
    meaning = vg.meaning
    proof: dict[str, Any] = {
        "vendor": dest.vendor_name, "events": vg.events, "states": sorted(vg.states),
        "firstSeenMs": vg.first_at_ms, "lastSeenMs": vg.last_at_ms, "reasons": vg.reasons,
        "sampleMessageIds": vg.sample_ids,
    }  # fmt: skip
    if isinstance(meaning, MissingField):
        proof |= {"action": meaning.action, "field": meaning.field,
                  "mappedFrom": list(meaning.mapped_from)}  # fmt: skip
        return _missing(evidence, dest, vg, meaning, proof)
    proof |= {"status": meaning.status, "code": meaning.code, "kind": meaning.kind}
    if meaning.kind == "key":
        return _key_rejected(evidence, dest, vg, meaning, proof)
    if meaning.kind == "rate":
        return _throttled(evidence, dest, vg, meaning, proof)
    return _refused_field(evidence, dest, vg, meaning, proof)


def _since(evidence: Evidence, vg: VendorGroup) -> str:
    return clock(vg.first_at_ms, evidence.until_ms - evidence.since_ms)


def _replay(dest: DestinationEvidence, vg: VendorGroup) -> str:
    return f"`headwater replay --destination {dest.name} --since {iso_ms(vg.first_at_ms)}`"


def _ticks(names: Sequence[str]) -> str:
    return " or ".join(f"`{n}`" for n in names)


def _key_rejected(
    evidence: Evidence, dest: DestinationEvidence, vg: VendorGroup, e: VendorError,
    proof: dict[str, Any],
) -> Finding:  # fmt: skip
    rotate = f"rotate {_ticks(dest.key_settings)}" if dest.key_settings else "update its key"
    title = (f"API key rejected by {e.vendor} ({e.status} {e.code}) since "
             f"{_since(evidence, vg)} — {rotate}")  # fmt: skip
    said = f": {e.detail}" if e.detail else ""
    detail = (f"{e.vendor} refused destination {dest.name}'s credentials{said}; {vg.events} "
              f"events since {iso_ms(vg.first_at_ms)} (last at {iso_ms(vg.last_at_ms)}) were "
              f"{_fate(vg)}")  # fmt: skip
    where = f"{_ticks(dest.key_settings)} of destination {dest.name}" if dest.key_settings \
        else f"the credentials in destination {dest.name}'s settings"  # fmt: skip
    fix = (f"get a valid key from {e.vendor} and set {where} in the workspace (`headwater "
           f"apply`); then {_replay(dest, vg)} to send what was refused")  # fmt: skip
    return Finding("critical", title, detail, fix, vg.events, destination=dest.name,
                   evidence=proof)  # fmt: skip


def _throttled(
    evidence: Evidence, dest: DestinationEvidence, vg: VendorGroup, e: VendorError,
    proof: dict[str, Any],
) -> Finding:  # fmt: skip
    limit = f", limit {e.limit}" if e.limit else ""
    title = (f"{e.vendor} rate limits destination {dest.name} ({e.status} {e.code}{limit}) "
             f"since {_since(evidence, vg)}")  # fmt: skip
    report = dest.report
    waits = (
        f"its Retry-After ({vg.retry_after} s) is honoured: nothing is sent before it"
        if vg.retry_after
        else f"{e.vendor} sent no Retry-After: retries back off"
    )
    backlog = report.retrying_now + dest.queued
    detail = (f"{vg.events} events {_window(evidence)} were throttled; {waits}; backlog: "
              f"{report.retrying_now} events waiting for a retry, up to {dest.queued} more in "
              f"the queue")  # fmt: skip
    under = f" under {e.vendor}'s limit ({e.limit})" if e.limit else ""
    deadline = iso_ms(report.retry_deadline_ms) if report.retry_deadline_ms else \
        "their retry window closes"  # fmt: skip
    fix = (f"lower delivery.rate_limit_per_sec of {dest.name}{under}, send bigger batches "
           f"(fewer requests), or raise your plan's limit with {e.vendor}; nothing is lost: "
           f"events are retried until {deadline}")  # fmt: skip
    proof |= {"limit": e.limit, "retryAfter": vg.retry_after, "backlog": backlog,
              "retryingNow": report.retrying_now, "queued": dest.queued}  # fmt: skip
    return Finding("warning", title, detail, fix, vg.events, destination=dest.name,
                   evidence=proof)  # fmt: skip


def _refused_field(
    evidence: Evidence, dest: DestinationEvidence, vg: VendorGroup, e: VendorError,
    proof: dict[str, Any],
) -> Finding:  # fmt: skip
    names = ", ".join(f"`{f}`" for f in e.fields)
    noun = "field" if len(e.fields) == 1 else "fields"
    title = f"{e.vendor} refused {vg.events} events: {noun} {names} ({e.code})"
    detail = (f"{e.vendor} answered {e.status} {e.code} to destination {dest.name} "
              f"{_window(evidence)} (first at {iso_ms(vg.first_at_ms)}); latest: {e.detail}; "
              f"the events were {_fate(vg)}")  # fmt: skip
    fix = (
        f"fix {names} in the events (the sender's calls; see the samples) or in the "
        f"mapping of destination {dest.name} (docs/mapping.md), then {_replay(dest, vg)}"
    )
    proof |= {"fields": list(e.fields)}
    return Finding("critical", title, detail, fix, vg.events, destination=dest.name,
                   evidence=proof)  # fmt: skip


def _missing(
    evidence: Evidence, dest: DestinationEvidence, vg: VendorGroup, m: MissingField,
    proof: dict[str, Any],
) -> Finding:  # fmt: skip
    send = f" or send {' or '.join(m.event_fields)}" if m.event_fields else ""
    title = (f"{vg.events} events discarded: {_ticks(m.fields)} missing for action "
             f"{m.action} — map it{send}")  # fmt: skip
    mapped = f" (mapped from {' / '.join(m.mapped_from)})" if m.mapped_from else ""
    detail = (
        f"destination {dest.name} did not send them: its action {m.action} requires "
        f"{_ticks(m.fields)}{mapped}, which these events lack {_window(evidence)}"
    )
    fix = (f"set {' or '.join(m.event_fields) or 'the field'} in the sender's calls, or map "
           f"{_ticks(m.fields)} from another field in action {m.action} of destination "
           f"{dest.name} (actions: in the workspace, docs/mapping.md); then "
           f"{_replay(dest, vg)}")  # fmt: skip
    return Finding("warning", title, detail, fix, vg.events, destination=dest.name,
                   evidence=proof)  # fmt: skip


def _fate(vg: VendorGroup) -> str:
    if vg.states == {"retrying"}:
        return "kept for a retry"
    return "discarded (not retried)" if vg.states == {"discarded"} else \
        "discarded or kept for a retry"  # fmt: skip


def _window(evidence: Evidence) -> str:
    return f"since {iso_ms(evidence.since_ms)}"
