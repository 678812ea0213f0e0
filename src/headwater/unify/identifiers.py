"""An event's identifiers, as Segment extracts them, normalised and checked.

Where each type comes from (Segment's defaults, docs/unify.md):

| type | from |
|---|---|
| ``user_id`` | ``userId`` (an alias call: ``userId`` and ``previousId``'s type guessed as below) |
| ``anonymous_id`` | ``anonymousId`` |
| ``email`` | ``context.traits.email``, ``traits.email``, ``properties.email`` |
| ``android.id`` / ``ios.id`` / ``device_id`` | ``context.device.id`` by ``context.device.type`` |
| ``android.idfa`` / ``ios.idfa`` / ``advertising_id`` | ``context.device.advertisingId`` (1) |
| ``ga_client_id`` | ``context.integrations["Google Analytics"].clientId`` (2) |
| custom | the rule's FQL ``path``; and ``context.externalIds`` entries of collection ``users`` |

(1) not when ``context.device.adTrackingEnabled`` is false. (2) also ``context.ga_client_id``.

Normalisation: values are strings (numbers are written in decimal), trimmed; emails are
lower-cased. A value that is blocked (an exact value, case-insensitive, or a pattern) is
never an identifier; one longer than the cap is refused, not truncated (two long values
sharing a prefix must not link two people). Both are reported, so they can be counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headwater.processor.fql import compile_value
from headwater.unify.config import IdentityConfig

Identifier = tuple[str, str]  # (type, value)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A value that did not become an identifier, and why (``blocked`` or ``too_long``)."""

    type: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class Extracted:
    """The identifiers of one event, in the space's priority order, and what was skipped."""

    identifiers: list[Identifier]
    skipped: list[Skipped]


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _builtin(event: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every candidate (type, raw value) of the built-in types; written out flat because it
    runs for every event a space reads."""
    found: list[tuple[str, Any]] = []
    value = event.get("userId")
    if value is not None:
        found.append(("user_id", value))
    value = event.get("anonymousId")
    if value is not None:
        found.append(("anonymous_id", value))
    context = event.get("context")
    if not isinstance(context, dict):
        context = {}
    email = None
    for holder in (context.get("traits"), event.get("traits"), event.get("properties")):
        if isinstance(holder, dict) and holder.get("email"):
            email = holder["email"]
            break
    if email is not None:
        found.append(("email", email))
    ga = (
        _get(context, "integrations", "Google Analytics", "clientId")
        or _get(event, "integrations", "Google Analytics", "clientId")
        or context.get("ga_client_id")
    )
    if ga:
        found.append(("ga_client_id", ga))
    device = context.get("device")
    if isinstance(device, dict):
        kind = str(device.get("type") or "").lower()
        prefix = kind if kind in ("android", "ios") else None
        if device.get("id"):
            found.append((f"{prefix}.id" if prefix else "device_id", device["id"]))
        ad_id = device.get("advertisingId")
        if ad_id and device.get("adTrackingEnabled") is not False:
            found.append((f"{prefix}.idfa" if prefix else "advertising_id", ad_id))
    if event.get("type") == "alias":
        found.append(("user_id", event.get("previousId")))
    for item in context.get("externalIds") or ():
        if isinstance(item, dict) and item.get("collection", "users") == "users":
            found.append((str(item.get("type") or "").lower(), item.get("id")))
    return found


class Extractor:
    """Compiled once per space: ``extract(event)`` is called for every event it reads."""

    def __init__(self, identity: IdentityConfig) -> None:
        self.priority = {rule.type: i for i, rule in enumerate(identity.identifiers)}
        self.limits = {rule.type: rule.limit for rule in identity.identifiers}
        self._custom: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
            (rule.type, compile_value(rule.path))
            for rule in identity.identifiers
            if rule.path is not None
        ]
        self._blocked = {v.strip().lower() for v in identity.blocked_values}
        self._patterns = [re.compile(p) for p in identity.blocked_patterns]
        self.max_chars = identity.max_value_chars

    def normalise(self, id_type: str, raw: Any) -> str | None:
        """The value as the graph keys it (None when it is not a usable text)."""
        value = raw.strip() or None if raw.__class__ is str else _text(raw)
        if value is None:
            return None
        return value.lower() if id_type == "email" else value

    def blocked(self, value: str) -> bool:
        return value.lower() in self._blocked or any(p.fullmatch(value) for p in self._patterns)

    def extract(self, event: dict[str, Any]) -> Extracted:
        found = _builtin(event)
        for id_type, expr in self._custom:
            found.append((id_type, expr(event)))
        identifiers: list[Identifier] = []
        skipped: list[Skipped] = []
        seen: set[Identifier] = set()
        for id_type, raw in found:
            if id_type not in self.priority:
                continue
            value = self.normalise(id_type, raw)
            if value is None or (id_type, value) in seen:
                continue
            seen.add((id_type, value))
            if self.blocked(value):
                skipped.append(Skipped(id_type, value[:80], "blocked"))
            elif len(value) > self.max_chars:
                skipped.append(Skipped(id_type, value[:80] + "…", "too_long"))
            else:
                identifiers.append((id_type, value))
        identifiers.sort(key=lambda i: self.priority[i[0]])
        return Extracted(identifiers, skipped)

    def parse(self, text: str) -> Identifier:
        """``user_id:u-42`` as the Profile API names a profile; ValueError names the types."""
        id_type, sep, value = text.partition(":")
        if not sep or not value:
            raise ValueError(
                f"{text!r} names no profile; write <type>:<value> (e.g. user_id:u-42) or a "
                "segment_id (use_...)"
            )
        if id_type not in self.priority:
            raise ValueError(
                f"unknown identifier type {id_type!r}; the valid ones are "
                f"{', '.join(['segment_id', *self.priority])}"
            )
        normalised = self.normalise(id_type, value)
        if normalised is None:
            raise ValueError(f"{text!r} has an empty value")
        return id_type, normalised
