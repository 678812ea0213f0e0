"""The ``braze`` destination: ``/users/track`` with attributes, events and purchases.

Braze answers 201 ``{"message": "success"}``; objects it refuses come back in the same
answer as ``errors: [{type, input_array, index}]`` while the others are kept, so each
refused object's event is discarded with Braze's words and the rest are delivered. A 400
whose errors name every object refuses them all; 401/403 mean the key; 429 is retried
after ``Retry-After`` or ``X-RateLimit-Reset``; 5xx retried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpResponse, classify, retry_after_secs
from headwater.delivery.outcomes import Attempt, Delivered, Discard, Outcome, Retry
from headwater.destinations.braze import encoder
from headwater.destinations.braze.presets import PRESETS
from headwater.destinations.braze.settings import BrazeSettings
from headwater.destinations.mapped import (
    Mapped,
    MappedDestination,
    Outgoing,
    Refused,
    Sent,
    _combine,
    _nothing_to_send,
)

VENDOR = "Braze"


class Braze(MappedDestination[BrazeSettings]):
    """Braze (REST API, ``/users/track``)."""

    type = "braze"
    vendor = VENDOR
    key_settings = ("api_key", "endpoint")
    settings_model = BrazeSettings
    presets = PRESETS
    default_batch_events = 75
    max_batch_events = 75

    def map_events(self, events: Sequence[OutboundEvent]) -> tuple[list[Mapped], Refused]:
        """The payloads Braze can take; the others discarded naming the field."""
        mapped, refused = super().map_events(events)
        kept = []
        for item in mapped:
            try:
                encoder.objects(item, self.settings.app_id)
            except encoder.Unsendable as exc:
                refused.setdefault(item.event.offset, Discard(f"{VENDOR} would refuse: {exc}"))
            else:
                kept.append(item)
        return kept, refused

    def packs(self, mapped: Sequence[Mapped]) -> list[encoder.Packed]:
        built = [(m, *encoder.objects(m, self.settings.app_id)) for m in mapped]
        return encoder.pack(built)

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        return [Outgoing(encoder.encode(self.settings, p), p.events()) for p in self.packs(mapped)]

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        mapped, refused = self.map_events(events)
        if not mapped:
            return _nothing_to_send(events, refused)
        per_event: Refused = dict(refused)
        results: list[Sent] = []
        started = time.perf_counter()
        for packed in self.packs(mapped):
            request = encoder.encode(self.settings, packed)
            result = await self.context.http.send(request, self.context.timeout_secs)
            outcome = self.classify(result)
            if not isinstance(outcome, Retry) and isinstance(result, HttpResponse):
                for offset, discard in refused_objects(packed, result).items():
                    per_event.setdefault(offset, discard)
            results.append(Sent(Outgoing(request, packed.events()), result, outcome, {}))
        duration_ms = (time.perf_counter() - started) * 1000
        return _combine(events, per_event, results, duration_ms)

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        base = classify(result)
        if isinstance(result, HttpFailure) or isinstance(base, Delivered):
            return base
        status = result.status
        data = _json(result.body)
        message = data.get("message") if isinstance(data, dict) else None
        detail = str(message) if message else _snippet(result.body)
        if status == 429:
            return _throttled(result, detail)
        reason = f"{VENDOR} {status}: {detail}" if detail else f"{VENDOR} {status}"
        if status in (401, 403):
            reason += " — check api_key (its users.track permission) and endpoint (your instance)"
        if isinstance(base, Retry):
            return Retry(reason, status, base.after_secs)
        if 300 <= status < 400:
            return base
        return Discard(reason, status)


def refused_objects(packed: encoder.Packed, result: HttpResponse) -> dict[int, Discard]:
    """The events whose objects Braze names in ``errors``, with Braze's reason."""
    data = _json(result.body)
    errors = data.get("errors") if isinstance(data, dict) else None
    out: dict[int, Discard] = {}
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        array, index = error.get("input_array"), error.get("index")
        owners = packed.owners.get(array) if isinstance(array, str) else None
        if owners is None or not isinstance(index, int) or not 0 <= index < len(owners):
            continue
        what = error.get("type") or "invalid object"
        reason = f"{VENDOR} {result.status} invalid object: {what} ({array}[{index}])"
        out.setdefault(owners[index].offset, Discard(reason, result.status))
    return out


def _throttled(result: HttpResponse, detail: str) -> Retry:
    headers = {k.lower(): v for k, v in result.headers.items()}
    after = retry_after_secs(headers.get("retry-after"))
    reset = _number(headers.get("x-ratelimit-reset"))
    if after is None and reset is not None:
        after = max(0.0, reset - time.time())
    limit = headers.get("x-ratelimit-limit")
    window = f"{limit} requests per window" if limit else "limit not given"
    when = f", resets in {after:.0f} s" if after is not None else ""
    reason = f"{VENDOR} 429 rate limited ({window}{when})"
    return Retry(f"{reason}: {detail}" if detail else reason, 429, after)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _snippet(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    return text + ("…" if len(body) > 200 else "")
