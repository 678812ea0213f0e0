"""What the gateway lets the processor decide before an event is stored.

Tracking plans and source-scoped transformations run at ingest, on the event the gateway
has just normalised and before it is appended (docs/decisions.md says why): a blocked
event must never reach the log's followers, each event is checked once rather than once
per destination, and the parsed event is at hand. The gateway does not import the
processor; ``app.py`` hands it an :class:`IngestProcessor`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Processed:
    """The processor's answer for one event.

    ``event`` is what to store (the input, or a changed copy), None when the event is
    blocked; then ``blocked`` says why (a code such as ``unplanned_event``) and ``detail``
    explains it. ``extra`` are further events to store, each under a source:
    blocked events and ``Violation Generated`` events forwarded to another source.
    ``decisions`` describe what was done, for the per-event trace and the counts.
    """

    event: dict[str, Any] | None
    blocked: str | None = None
    detail: str | None = None
    extra: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    opaque: object = None  # the processor's own record of a blocked event, handed back


SourceHook = Callable[[dict[str, Any]], Processed]
"""Processes one normalised event of a source."""


@dataclass(frozen=True, slots=True)
class Blocked:
    """An event a source's plan blocked: kept (durably) so it can be re-sent later."""

    source: str
    received_ms: int
    event: dict[str, Any]
    reason: str
    detail: str
    decisions: list[dict[str, Any]]
    opaque: object = None  # from Processed.opaque


class IngestProcessor(Protocol):
    def hook(self, source: str) -> SourceHook | None:
        """The source's hook, or None when nothing applies to it (the fast path)."""
        ...

    async def keep(
        self, blocked: Sequence[Blocked], decided: Sequence[tuple[str, Processed]]
    ) -> None:
        """Store blocked events durably (the request is acknowledged afterwards), and
        record the decisions taken on stored events (``(source, processed)``)."""
        ...
