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
