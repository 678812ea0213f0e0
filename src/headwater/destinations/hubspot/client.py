"""The ``hubspot`` destination: contacts upserted by email and custom behavioral events,
batched, with HubSpot's multi-status answers read per event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse
from headwater.delivery.outcomes import Attempt, Discard, Outcome, Retry
from headwater.destinations.hubspot import encoder
from headwater.destinations.hubspot.settings import HubspotSettings
from headwater.destinations.mapped import Mapped, MappedDestination, Outgoing
from headwater.destinations.values import headers_of, json_of
from headwater.destinations.vendors import Result, Split, deliver_split, vendor_outcome


@dataclass(frozen=True, slots=True)
class Keyed(Outgoing):
    """A request and, for each of its events, how HubSpot's errors name its input: the
    contact's email (lower-case) or the event's index among the inputs."""

    keys: tuple[str, ...] = ()


def error_detail(body: bytes) -> str | None:
    """``CATEGORY: message`` of HubSpot's error body (``{status: "error", message,
    correlationId, category}``), None when the answer is not in that shape."""
    data = json_of(body)
    if not isinstance(data, dict) or "message" not in data:
        return None
    return f"{data.get('category') or 'error'}: {data['message']}"


class Hubspot(MappedDestination[HubspotSettings]):
    """identify -> ``upsert_contact``; track -> ``send_custom_behavioral_event``."""

    type = "hubspot"
    vendor = "HubSpot"
    key_settings = ("access_token",)
    settings_model = HubspotSettings
    presets = encoder.PRESETS
    default_batch_events = 100
    max_batch_events = 100  # contacts: 100 inputs a batch request

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        return self._keyed(kind, items).request

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        groups: dict[str, list[Mapped]] = {}
        for item in mapped:
            groups.setdefault(item.kind, []).append(item)
        return [self._keyed(kind, items) for kind, items in groups.items()]

    def _keyed(self, kind: str, items: Sequence[Mapped]) -> Keyed:
        events = tuple(i.event for i in items)
        if kind == encoder.CONTACT:
            request, _ = encoder.contacts(self.settings, items)
            keys = tuple(str(i.payload["email"]).strip().lower() for i in items)
            return Keyed(request, events, keys=keys)
        request = encoder.events(self.settings, items)
        return Keyed(request, events, keys=tuple(str(n) for n in range(len(items))))

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        if isinstance(result, HttpFailure):
            return vendor_outcome(self.vendor, result, None)
        detail = error_detail(result.body)
        if result.status != 429:
            return vendor_outcome(self.vendor, result, detail)
        headers = headers_of(result)
        limit, window = headers.get("x-hubspot-ratelimit-max"), _secs(headers)
        if limit and window:
            detail = f"{detail or 'RATE_LIMITS: rate limited'} (limit {limit} per {window:g} s)"
        if headers.get("x-hubspot-ratelimit-daily-remaining") == "0":
            daily = headers.get("x-hubspot-ratelimit-daily")
            detail = f"{detail or 'RATE_LIMITS'} (daily limit {daily} reached)"
        after = None if "retry-after" in headers else window
        return vendor_outcome(self.vendor, result, detail, after)

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        return await deliver_split(self, events, encoder.checker(self.settings), self._split)

    def _split(self, out: Outgoing, result: Result) -> Split:
        outcome = self.classify(result)
        if (
            not isinstance(result, HttpResponse)
            or result.status != 207
            or not isinstance(out, Keyed)
        ):
            return [(out, result, outcome)]
        failed = _item_errors(result.body)
        parts: Split = []
        good = [e for e, k in zip(out.events, out.keys, strict=True) if k not in failed]
        if good:
            parts.append((Outgoing(out.request, tuple(good)), result, outcome))
        for event, key in zip(out.events, out.keys, strict=True):
            if key in failed:
                parts.append((Outgoing(out.request, (event,)), result, failed[key]))
        return parts


def _secs(headers: dict[str, str]) -> float | None:
    try:
        return float(headers.get("x-hubspot-ratelimit-interval-milliseconds", "")) / 1000
    except ValueError:
        return None


def _item_errors(body: bytes) -> dict[str, Outcome]:
    """The inputs a 207 names as failed: ``errors[].context.ids`` (emails) or
    ``errors[].context.index`` (positions), each with its outcome."""
    data = json_of(body)
    errors = data.get("errors") if isinstance(data, dict) else None
    failed: dict[str, Outcome] = {}
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict) or not isinstance(error.get("context"), dict):
            continue
        context: dict[str, Any] = error["context"]
        category = error.get("category") or "error"
        reason = f"HubSpot 207 {category}: {error.get('message', '')}"
        outcome: Outcome = Retry(reason, 429) if category == "RATE_LIMITS" else Discard(reason, 207)
        for key in [*context.get("ids", []), *context.get("index", [])]:
            failed.setdefault(str(key).strip().lower(), outcome)
    return failed
