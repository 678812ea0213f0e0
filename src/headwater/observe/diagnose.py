"""Diagnose: the playbook a person would follow during an incident, run on the evidence.

"Are my events arriving, and if not, where are they stuck?" The playbook walks the
pipeline in order — requests refused at the door, nothing arriving at all, events blocked
or filtered before a destination, destinations refusing, throttling or failing, backlogs —
and turns each symptom it finds into a :class:`Finding`: what is most likely wrong, the
evidence (counts and sample messageIds), and the fix. Findings are ordered by severity,
then by how many events they concern.

The rules are pure functions of a :class:`Evidence` snapshot, so each can be tested alone;
:mod:`headwater.observe.service` gathers the evidence from the running process.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from headwater.gateway.normalize import iso_ms
from headwater.observe.delivery_report import DeliveryReport
from headwater.observe.findings import SEVERITY_ORDER, Finding, Severity
from headwater.observe.vendor_findings import by_vendor_error, vendor_finding

# what a sender should do about each refusal code of the Tracking API
REFUSAL_FIXES = {
    "invalid_write_key": "the SDK sends a write key no source has: copy the source's write "
    "key into the SDK's configuration (headwater shows it at first start and in the "
    "workspace file)",
    "missing_write_key": "the SDK sends no write key: set it in the SDK's configuration",
    "invalid_json": "the sender's body is not JSON: check the client or proxy that builds it",
    "payload_too_large": "requests exceed the size limits (32 KB per event, 500 KB per "
    "batch): send smaller batches (flushAt / max batch size in the SDK)",
    "event_too_large": "events exceed 32 KB: drop large properties before sending",
    "request_timeout": "requests arrive too slowly (headers or body cut after "
    "gateway.headers_timeout_secs / body_timeout_secs): check the client's network or a "
    "proxy that buffers, or raise the limits",
    "batch_too_large": "batches exceed 2,500 events: lower the SDK's batch size",
    "invalid_gzip": "the body is not valid gzip: check the client's compression",
    "invalid_authorization": "the Authorization header is malformed: send HTTP Basic with "
    "the write key as user name and an empty password",
    "invalid_field": "a field has the wrong type or length: see the samples",
    "invalid_timestamp": "a timestamp is not ISO-8601: send e.g. 2026-01-31T12:00:00.000Z",
    "invalid_event": "items of a batch are not JSON objects",
    "invalid_batch": "the batch body is malformed: it needs a 'batch' array",
    "missing_identity": "events carry neither userId nor anonymousId: set one before "
    "tracking (analytics.identify / anonymousId)",
    "missing_field": "events miss a required field (event for track, groupId for group, "
    "previousId and userId for alias): fix the calls named in the samples",
    "invalid_type": "items of a batch have no valid type: each needs track, identify, page, "
    "screen, group or alias",
    "source_disabled": "the source is disabled in the workspace: enable it or point the SDK "
    "at another source",
    "origin_not_allowed": "a browser origin is not in the source's cors_origins: add it",
    "unavailable": "Headwater refused writes (disk budget or slow disk): see the status "
    "page's log component; SDKs retry these requests",
}


@dataclass(frozen=True, slots=True)
class RefusalGroup:
    """Refusals of one scope (a source, or an unknown key's prefix) and one code."""

    scope: str
    code: str
    count: int  # in the window
    message: str  # the newest sample's message
    samples: list[dict[str, Any]]  # newest samples (path, ip, user agent, messageId, excerpt)


@dataclass(frozen=True, slots=True)
class DestinationEvidence:
    name: str
    type: str
    enabled: bool
    sources: list[str]
    report: DeliveryReport
    breaker: str  # closed | open | half_open
    queued: int  # events in the log after its cursor (routed or not), an upper bound
    sample_ids: dict[tuple[str, int | None, str], list[str]]  # per error group
    changed_since_start: int = 0  # events its filters or transformations changed
    vendor: str = ""  # the vendor's display name (Destination.vendor); "": the type
    key_settings: tuple[str, ...] = ()  # the settings a rejected credential points at
    last_change: str | None = None  # disabled: the audit trail's who and when

    @property
    def vendor_name(self) -> str:
        return self.vendor or self.type


@dataclass(frozen=True, slots=True)
class SourceEvidence:
    name: str
    enabled: bool
    flow: Counter[str]  # steps of observe.flow in the window
    last_received_ms: int | None  # newest event in the debugger, if any


@dataclass(frozen=True, slots=True)
class Evidence:
    since_ms: int
    until_ms: int
    sources: list[SourceEvidence]
    destinations: list[DestinationEvidence]
    refusals: list[RefusalGroup]  # every scope, including unknown keys
    source_key_prefixes: dict[str, str]  # source → redacted write key, to compare with
    blocked_samples: dict[str, list[str]] = field(default_factory=dict)  # source → messageIds


def diagnose(evidence: Evidence) -> list[Finding]:
    findings: list[Finding] = []
    for rule in (_refusals, _silence, _blocked, _destinations):
        findings.extend(rule(evidence))
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], -f.events))
    return findings


def _window(evidence: Evidence) -> str:
    return f"since {iso_ms(evidence.since_ms)}"


def _refusals(evidence: Evidence) -> list[Finding]:
    out: list[Finding] = []
    known = set(evidence.source_key_prefixes)
    for group in evidence.refusals:
        if not group.count:
            continue
        fix = REFUSAL_FIXES.get(group.code, "see the samples for what the sender must change")
        in_source = group.scope in known
        if group.code == "invalid_write_key":
            keys = ", ".join(f"{s}: {k}" for s, k in sorted(evidence.source_key_prefixes.items()))
            title = f"requests with the unknown write key {group.scope.removeprefix('key:')} "
            title += "are refused"
            detail = f"{group.count} requests refused (401 invalid_write_key) {_window(evidence)}"
            fix = f"{fix}. The sources' keys start: {keys or 'no source has a key'}"
        elif in_source:
            title = f"source {group.scope}: {group.count} refused ({group.code})"
            detail = f"{group.message} — {group.count} times {_window(evidence)}"
        else:
            title = f"requests without a usable write key are refused ({group.code})"
            detail = f"{group.message} — {group.count} times {_window(evidence)}"
        received = next((s.flow["received"] for s in evidence.sources if s.name == group.scope), 0)
        severity: Severity = "critical" if not in_source or not received else "warning"
        out.append(
            Finding(
                severity, title, detail, fix, group.count,
                source=group.scope if in_source else None,
                evidence={"refused": group.count, "code": group.code, "samples": group.samples},
            )
        )  # fmt: skip
    return out


def _silence(evidence: Evidence) -> list[Finding]:
    """A source that received nothing in the window, with nothing refused either."""
    refused_scopes = {g.scope for g in evidence.refusals if g.count}
    out: list[Finding] = []
    for source in evidence.sources:
        active = any(n for step, n in source.flow.items() if step.startswith("blocked:"))
        if source.flow["received"] or active or source.name in refused_scopes:
            continue
        if not source.enabled:
            continue
        last = (
            f"the last event arrived at {iso_ms(source.last_received_ms)}"
            if (source.last_received_ms)
            else "no event arrived since the server started"
        )
        unknown = sum(g.count for g in evidence.refusals if g.scope.startswith("key:"))
        hint = (
            f"; {unknown} requests with unknown write keys were refused — one of them may be "
            "meant for this source"
            if unknown
            else ""
        )
        out.append(
            Finding(
                "warning",
                f"nothing received from source {source.name} {_window(evidence)}",
                f"no request for this source reached Headwater and none was refused; {last}{hint}",
                "check that the SDK points at this server (apiHost / host), that the app is "
                "running and can reach it (DNS, firewall, proxy), and that it uses this "
                "source's write key",
                source=source.name,
                evidence={"received": 0, "unknownKeyRefusals": unknown},
            )
        )
    return out


def _blocked(evidence: Evidence) -> list[Finding]:
    """Events stopped or changed before any destination: tracking plans and source
    transformations."""
    out: list[Finding] = []
    for source in evidence.sources:
        violations, transformed = source.flow["violations"], source.flow["transformed"]
        not_kept = source.flow["blocked_not_kept"]
        if not_kept:
            out.append(
                Finding(
                    "warning",
                    f"source {source.name}: {not_kept} blocked events could not be kept",
                    f"the protocols store's budget for blocked events is spent; {not_kept} "
                    f"blocked events {_window(evidence)} were counted but not kept",
                    "re-send the blocked events once the plan or the sender is fixed "
                    f"(`headwater plans resend-blocked --source {source.name}`), which frees "
                    "their room; or fix what blocks so many events",
                    not_kept, source=source.name, evidence={"blockedNotKept": not_kept},
                )
            )  # fmt: skip
        if violations:
            out.append(
                Finding(
                    "info",
                    f"source {source.name}: {violations} tracking plan violations",
                    f"violations found {_window(evidence)}; events that were not blocked went "
                    "on with them recorded in context.protocols (and invalid or unplanned "
                    "properties omitted where the plan says so)",
                    f"see GET /api/v1/sources/{source.name}/violations (or the console's "
                    "Violations page) for the fields, expected and got values; fix the sender "
                    "or the plan",
                    violations, source=source.name, evidence={"violations": violations},
                )
            )  # fmt: skip
        if transformed:
            out.append(
                Finding(
                    "info",
                    f"source {source.name}: {transformed} events changed by transformations",
                    f"source-scoped transformations changed {transformed} events "
                    f"{_window(evidence)} before they were stored",
                    "expected if the transformations say so; each event's trace lists what "
                    "was changed",
                    transformed, source=source.name, evidence={"transformed": transformed},
                )
            )  # fmt: skip
        blocked = {k: n for k, n in source.flow.items() if k.startswith("blocked:") and n}
        if not blocked:
            continue
        total = sum(blocked.values())
        reasons = ", ".join(f"{k.removeprefix('blocked:')} ×{n}" for k, n in blocked.items())
        out.append(
            Finding(
                "warning",
                f"source {source.name}: {total} events blocked by its tracking plan",
                f"blocked {_window(evidence)}: {reasons}",
                "see the violations (console → Sources → Violations, or GET "
                f"/api/v1/sources/{source.name}/violations); fix the sender or the plan, then "
                f"`headwater plans resend-blocked --source {source.name}`",
                total,
                source=source.name,
                evidence={"blocked": blocked,
                          "sampleMessageIds": evidence.blocked_samples.get(source.name, [])},
            )
        )  # fmt: skip
    return out


def _destinations(evidence: Evidence) -> list[Finding]:
    out: list[Finding] = []
    for dest in evidence.destinations:
        out.extend(_destination(evidence, dest))
    return out


def _destination(evidence: Evidence, dest: DestinationEvidence) -> list[Finding]:
    out: list[Finding] = []
    report = dest.report
    name = dest.name
    if not dest.enabled:
        kept = report.counts["filtered"]
        by = f"; it was {dest.last_change}" if dest.last_change else ""
        out.append(
            Finding(
                "info", f"destination {name} is disabled",
                f"{kept} events were kept from it {_window(evidence)}{by}",
                f"set enabled: true on destination {name} in the workspace, then replay the "
                f"window: `headwater replay --destination {name} --since ...`",
                kept, destination=name,
            )
        )  # fmt: skip
        return out
    vendor_groups, generic = by_vendor_error(dest, report.error_groups())
    out.extend(vendor_finding(evidence, dest, v) for v in vendor_groups)
    for group in generic:
        ids = dest.sample_ids.get((group.state.value, group.status, group.reason), [])
        out.append(_error_finding(evidence, dest, group.state.value, group.status,
                                  group.reason, group.events, ids))  # fmt: skip
    if report.retrying_now and not any(g.state.value == "retrying" for g in report.error_groups()):
        out.append(
            Finding(
                "warning", f"destination {name}: {report.retrying_now} events wait for a retry",
                "failures happened before the window; the events are retried until "
                f"{_deadline(report.retry_deadline_ms)}",
                "see the destination's Event Delivery for the errors",
                report.retrying_now, destination=name,
            )
        )  # fmt: skip
    if report.dead_letters:
        out.append(
            Finding(
                "warning",
                f"destination {name}: {report.dead_letters} events in the dead-letter store",
                "they were still failing when their retry window (4 h by default) closed",
                f"fix the cause, then `headwater deadletter retry --destination {name}` "
                "(or purge them)",
                report.dead_letters, destination=name,
            )
        )  # fmt: skip
    filtered = report.filtered
    if filtered:
        total = sum(filtered.values())
        reasons = "; ".join(f"{r} ×{n}" for r, n in filtered.most_common(5))
        out.append(
            Finding(
                "info",
                f"destination {name}: {total} events filtered, not delivered",
                f"kept from the destination on purpose {_window(evidence)}: {reasons}",
                "expected if the filters and integrations say so; otherwise change the "
                "destination's filters or the events' integrations object",
                total, destination=name,
                evidence={"filtered": dict(filtered.most_common(10))},
            )
        )  # fmt: skip
    if dest.changed_since_start:
        out.append(
            Finding(
                "info",
                f"destination {name}: {dest.changed_since_start} events changed on the way",
                "its filters (DROP_PROPERTIES / ALLOW_PROPERTIES) or transformations changed "
                f"{dest.changed_since_start} events since the server started",
                "expected if its filters and transformations say so; an event's trace shows "
                "what the destination gets, and POST /api/v1/destinations/"
                f"{name}/filters/preview tries them on a sample",
                dest.changed_since_start, destination=name,
                evidence={"changedSinceStart": dest.changed_since_start},
            )
        )  # fmt: skip
    if dest.breaker != "closed" and not report.error_groups():
        out.append(
            Finding(
                "warning", f"destination {name}: the circuit breaker is {dest.breaker}",
                "delivery is paused after consecutive failures; a probe decides when it resumes",
                "see the destination's errors", destination=name,
            )
        )  # fmt: skip
    return out


def _deadline(at_ms: int | None) -> str:
    return iso_ms(at_ms) if at_ms else "their retry window closes"


def _error_finding(
    evidence: Evidence,
    dest: DestinationEvidence,
    state: str,
    status: int | None,
    reason: str,
    events: int,
    sample_ids: list[str],
) -> Finding:
    name = dest.name
    proof: dict[str, Any] = {
        "state": state, "status": status, "reason": reason, "events": events,
        "sampleMessageIds": sample_ids,
    }  # fmt: skip
    where = f"{events} events {_window(evidence)}"
    if status in (401, 403):
        keys = " / ".join(f"`{k}`" for k in dest.key_settings) or "API key / secret / headers"
        return Finding(
            "critical", f"destination {name}: credentials invalid or rotated ({status})",
            f"{name} answered {status} and {where} were discarded: {reason}",
            f"update destination {name}'s settings (its {keys}) in the "
            f"workspace; then `headwater replay --destination {name} --since "
            f"{iso_ms(evidence.since_ms)}` to send what was discarded",
            events, destination=name, evidence=proof,
        )  # fmt: skip
    if status == 429:
        return Finding(
            "warning", f"destination {name}: throttling (429)",
            f"{name} asks Headwater to slow down; {where} are waiting, Retry-After honoured",
            f"lower delivery.rate_limit_per_sec of {name}, or raise your tier with them; "
            f"events are queued and retried until {_deadline(dest.report.retry_deadline_ms)}",
            events, destination=name, evidence=proof,
        )  # fmt: skip
    if state == "retrying":
        return Finding(
            "warning", f"destination {name}: degraded ({status or 'no answer'})",
            f"{where} failed and will be retried: {reason}",
            f"nothing to do if it recovers: events are queued and retried until "
            f"{_deadline(dest.report.retry_deadline_ms)}; check {name}'s own status page, "
            f"and its URL and network if it never answers",
            events, destination=name, evidence=proof,
        )  # fmt: skip
    if state == "dead_lettered":
        return Finding(
            "critical", f"destination {name}: events dead-lettered",
            f"{where} were still failing when their retry window closed: {reason}",
            f"fix the cause, then `headwater deadletter retry --destination {name}`",
            events, destination=name, evidence=proof,
        )  # fmt: skip
    return Finding(
        "critical", f"destination {name}: events rejected ({status or reason})",
        f"{name} refused {where} for good: {reason}",
        "compare the sample request with what the destination expects (its answer is in "
        "the sample); fix the settings or the events (a destination filter or "
        f"transformation can drop or reshape them), then replay with `headwater replay "
        f"--destination {name}`",
        events, destination=name, evidence=proof,
    )  # fmt: skip


__all__ = [
    "REFUSAL_FIXES",
    "SEVERITY_ORDER",
    "DestinationEvidence",
    "Evidence",
    "Finding",
    "RefusalGroup",
    "Severity",
    "SourceEvidence",
    "diagnose",
]
