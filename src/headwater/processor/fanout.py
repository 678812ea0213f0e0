"""Fan-out to one destination: its filters, then its transformations, on each routed event.

Runs in the destination's delivery worker, after routing (:mod:`headwater.processor.routing`)
decided the event goes there. A destination without filters or transformations costs
nothing: the event's stored JSON goes out untouched. Otherwise the event is parsed once, and
re-encoded only when something changed it.

What the filters drop is recorded in the delivery ledger as ``filtered`` with the filter's
own words (``filter 2 ("Debug events"): DROP where ...``), so the event's trace and the
destination's Event Delivery say which filter dropped what.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.processor.filters import DestinationFilters, Dropped, FilterConfig, Modified
from headwater.processor.transforms import Changed, TransformationConfig, Transformer


@dataclass(frozen=True, slots=True)
class Shaped:
    """The event as the destination gets it: ``payload`` (JSON), and what changed it."""

    payload: bytes
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FilteredOut:
    """The filters dropped the event: ``reason`` names the filter."""

    reason: str


Outcome = Shaped | FilteredOut | None  # None: unchanged, send the stored payload


class DestinationStage:
    """The filters and transformations of one destination."""

    def __init__(
        self,
        destination: str,
        filters: Sequence[FilterConfig],
        transformations: Sequence[TransformationConfig],
    ) -> None:
        self.destination = destination
        self.filters = DestinationFilters(filters)
        self.transformer = Transformer.for_destination(transformations, destination)
        self.transformed = 0  # events the destination's transformations changed, since start

    def __bool__(self) -> bool:
        return bool(self.filters) or bool(self.transformer)

    def apply(
        self, payload: bytes, event: dict[str, Any] | None = None, count: bool = True
    ) -> Outcome:
        """Filter and transform one event, given as its stored JSON (or already parsed);
        ``count=False`` for a look that is not a delivery (the trace)."""
        if event is None:
            parsed = orjson.loads(payload)
            event = parsed if isinstance(parsed, dict) else {}
        changes: tuple[str, ...] = ()
        current = event
        if self.filters:
            result = self.filters.apply(current, count)
            if isinstance(result, Dropped):
                return FilteredOut(result.reason)
            if isinstance(result, Modified):
                current, changes = result.event, result.changes
        if self.transformer:
            transformed = self.transformer.apply(current)
            if isinstance(transformed, Changed):
                current, changes = transformed.event, changes + transformed.changes
                self.transformed += count
        if current is event:
            return None
        return Shaped(orjson.dumps(current), changes)

    def stats(self) -> list[dict[str, Any]]:
        return self.filters.snapshot()
