"""The ``customerio`` destination: every kind of payload in one v2 batch request, its
207 answer read per entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse
from headwater.delivery.outcomes import Attempt, Discard, Outcome
from headwater.destinations.customerio import encoder
from headwater.destinations.customerio.settings import CustomerioSettings
from headwater.destinations.mapped import Mapped, MappedDestination, Outgoing
from headwater.destinations.values import json_of
from headwater.destinations.vendors import Result, Split, deliver_split, vendor_outcome


def error_detail(body: bytes) -> str | None:
    """Customer.io's words: ``{"meta": {"error": ...}}`` (v1 style) or ``{"errors":
    [{"reason", "field", "message"}]}`` (v2); None when the answer is in neither shape."""
    data = json_of(body)
    if not isinstance(data, dict):
        return None
    meta = data.get("meta")
    if isinstance(meta, dict) and meta.get("error"):
        return f": {meta['error']}"
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return _entry_reason(errors[0])
    return None


def _entry_reason(error: dict[str, Any]) -> str:
    code = error.get("reason") or "error"
    field = f"{error['field']}" if error.get("field") else ""
    where = f" (entry {error['batch_index']})" if "batch_index" in error else ""
    message = error.get("message") or ""
    return f"{code}: {field}{where}{': ' if field and message else ''}{message}".rstrip(": ")


class Customerio(MappedDestination[CustomerioSettings]):
    """identify -> person, track -> event, page/screen -> page/screen views, group ->
    object related to the person; ``POST /api/v2/batch``."""

    type = "customerio"
    vendor = "Customer.io"
    key_settings = ("site_id", "api_key")
    settings_model = CustomerioSettings
    presets = encoder.PRESETS
    default_batch_events = 100
    max_batch_events = 1000
    default_batch_bytes = 450_000  # the batch request takes at most 500 KB

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        return encoder.encode(self.settings, items)

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        """One request: the batch takes people, events and objects alike. Its entries are
        the payloads in order, so ``events[i]`` made entry ``i``."""
        return [Outgoing(encoder.encode(self.settings, mapped), tuple(m.event for m in mapped))]

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        detail = None if isinstance(result, HttpFailure) else error_detail(result.body)
        return vendor_outcome(self.vendor, result, detail)

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        return await deliver_split(self, events, encoder.checker(self.settings), self._split)

    def _split(self, out: Outgoing, result: Result) -> Split:
        outcome = self.classify(result)
        if not isinstance(result, HttpResponse) or result.status != 207:
            return [(out, result, outcome)]
        data = json_of(result.body)
        errors = data.get("errors") if isinstance(data, dict) else None
        failed: dict[int, Outcome] = {}
        for error in errors if isinstance(errors, list) else []:
            index = error.get("batch_index") if isinstance(error, dict) else None
            if isinstance(index, int) and 0 <= index < len(out.events):
                reason = f"{self.vendor} 207 {_entry_reason(error)}"
                failed.setdefault(out.events[index].offset, Discard(reason, 207))
        good = tuple(e for e in out.events if e.offset not in failed)
        parts: Split = [(Outgoing(out.request, good), result, outcome)] if good else []
        for event in out.events:
            if event.offset in failed:
                parts.append((Outgoing(out.request, (event,)), result, failed[event.offset]))
        return parts
