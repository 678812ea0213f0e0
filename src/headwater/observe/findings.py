"""A finding of diagnose: the most likely cause, its evidence and the fix
(:mod:`headwater.observe.diagnose`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    title: str  # the most likely cause, one line
    detail: str  # what the evidence shows
    fix: str  # what to do
    events: int = 0  # how many events (or requests) it concerns
    source: str | None = None
    destination: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
            "events": self.events,
            "source": self.source,
            "destination": self.destination,
            "evidence": self.evidence,
        }


# ---------------------------------------------------------------------- identity resolution

IDENTITY_SAMPLES = 10


def identity_findings(
    space: str, problems: list[Any], counters: list[tuple[str, str, str, int, str | None]]
) -> list[Finding]:
    """Diagnose's "check the Identity Graph for merge errors": merges refused and identifier
    limits hit in a space (``problems``: the store's history entries of those kinds in the
    window, newest first), and values blocked or refused ever (``counters``), each with the
    identifiers and messageIds that show it."""
    found: list[Finding] = []
    for kind, title, fix in (
        ("refused", "merges refused", "the identifiers named are shared by profiles that each "
         "hold a user_id (a shared device, a kiosk, an anonymousId not reset at logout, a team "
         "email): nothing was merged, which is right for shared values. If they are test or "
         "placeholder values, add them to the space's identity.blocked_values"),
        ("limit", "identifier limits hit", "a profile received more values of one identifier "
         "type than its limit allows (identity.identifiers[].limit); the extra values were "
         "kept off it. Raise the limit if such profiles are real, or block the value"),
    ):  # fmt: skip
        entries = [p for p in problems if p.kind == kind]
        if not entries:
            continue
        values = sorted({str(p.detail.get("dropped")) for p in entries})
        samples = [{"messageId": p.message_id, "profile": p.segment_id,
                    "dropped": p.detail.get("dropped"), "reason": p.detail.get("reason")}
                   for p in entries[:IDENTITY_SAMPLES]]  # fmt: skip
        shown = ", ".join(values[:5]) + (" and others" if len(values) > 5 else "")
        found.append(Finding(
            "warning", f"Identity Graph of space {space!r}: {len(entries)} {title}",
            f"{len(entries)} events in the window: {entries[0].detail.get('reason')}; "
            f"identifiers: {shown}; latest messageId {entries[0].message_id}",
            fix, len(entries), evidence={"space": space, "kind": kind, "identifiers": values,
                                         "samples": samples},
        ))  # fmt: skip
    blocked = [c for c in counters if c[0] in ("blocked", "too_long")]
    if blocked:
        total = sum(c[3] for c in blocked)
        top = [{"type": t, "value": v, "count": n, "lastMessageId": m, "reason": k}
               for k, t, v, n, m in blocked[:IDENTITY_SAMPLES]]  # fmt: skip
        found.append(Finding(
            "info", f"Identity Graph of space {space!r}: {total} identifier values not used",
            "values blocked (identity.blocked_values / blocked_patterns) or too long never "
            "link profiles: " + ", ".join(f"{b['type']}:{b['value']} ({b['count']})"
                                          for b in top[:5]),
            "nothing to do if these are placeholders; a real value listed here should be "
            "removed from identity.blocked_values", total,
            evidence={"space": space, "values": top},
        ))  # fmt: skip
    return found


def identity_stage(space: str, found: dict[str, Any] | None) -> dict[str, Any]:
    """The identity step of an event's trace: the profile it joined, the merge it caused."""
    if found is None:
        return {"stage": "identity", "space": space, "decision": "pending",
                "detail": f"space {space!r} has not applied this event yet (or it had no "
                "identifier, or its profile was deleted)"}  # fmt: skip
    history = found["history"]
    merged = [h for h in history if h["kind"] == "merged"]
    refused = [h for h in history if h["kind"] in ("refused", "limit")]
    created = any(h["kind"] == "created" for h in history)
    joined = found["joined"]
    decision = "merged" if merged else "created" if created else "joined"
    parts = [f"{'created' if created else 'joined'} profile {joined}"]
    if found.get("live") and found["live"] != joined:
        parts.append(f"(since merged into {found['live']})")
    parts += [f"merged {h['other_id']} into {h['segment_id']} (linked by "
              f"{', '.join(h.get('identifiers', []))})" for h in merged]  # fmt: skip
    parts += [f"{h['kind']}: {h.get('dropped')} kept off ({h.get('reason')})" for h in refused]
    return {"stage": "identity", "space": space, "decision": decision, "profile": joined,
            "detail": "; ".join(parts), "history": history}  # fmt: skip
