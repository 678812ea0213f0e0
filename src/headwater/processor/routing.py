"""Routing: does an event go to a destination?

An event goes to the enabled destinations of its source, unless its ``integrations`` object
says otherwise, as Segment does: a key equal to the destination's name, else one equal to its
type, decides (``false`` keeps the event away, ``true`` or an object of options lets it
through); without either, ``All`` decides, and ``All`` is true when absent. Keys are
case-sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Routed:
    """The event goes to the destination."""


@dataclass(frozen=True, slots=True)
class Filtered:
    """The event is kept away from the destination, for ``reason`` (recorded in the ledger)."""

    reason: str


@dataclass(frozen=True, slots=True)
class NotMine:
    """The event's source is not one of the destination's: nothing to record."""


ROUTED = Routed()
NOT_MINE = NotMine()
Decision = Routed | Filtered | NotMine


@dataclass(frozen=True, slots=True)
class Route:
    """The routing of one destination, decided from its configuration."""

    destination: str
    type: str
    sources: frozenset[str]
    enabled: bool = True

    def decide(self, source: str, event: dict[str, Any] | bytes) -> Decision:
        """Route an event, given parsed or as its JSON (parsed only when its integrations
        could matter)."""
        if source not in self.sources:
            return NOT_MINE
        if not self.enabled:
            return Filtered("the destination is disabled")
        if isinstance(event, bytes):
            if _no_integrations(event):
                return ROUTED
            parsed = orjson.loads(event)
            event = parsed if isinstance(parsed, dict) else {}
        return self.by_integrations(event.get("integrations"))

    def by_integrations(self, integrations: Any) -> Decision:
        if not isinstance(integrations, dict) or not integrations:
            return ROUTED
        for key in (self.destination, self.type):
            value = integrations.get(key)
            if value is not None:
                if value is False:
                    return Filtered(f"integrations.{key} is false")
                return ROUTED
        if integrations.get("All", True) is False:
            return Filtered(
                f"integrations.All is false and neither integrations.{self.destination}"
                f" nor integrations.{self.type} is true"
            )
        return ROUTED


def _no_integrations(payload: bytes) -> bool:
    """True when the JSON has no ``integrations`` key, or one and it is empty. (A nested
    ``"integrations"`` in properties makes this answer False, and the event is parsed.)"""
    count = payload.count(b'"integrations"')
    return count == 0 or (count == 1 and b'"integrations":{}' in payload)
