"""The ``intercom`` destination: contacts and data events, one request each."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse
from headwater.delivery.outcomes import Attempt, Outcome
from headwater.destinations.intercom import encoder
from headwater.destinations.intercom.settings import IntercomSettings
from headwater.destinations.mapped import Mapped, MappedDestination, Outgoing
from headwater.destinations.values import headers_of, json_of
from headwater.destinations.vendors import Result, deliver_split, vendor_outcome


def error_detail(body: bytes) -> str | None:
    """``code: message`` of Intercom's first error (``{"type": "error.list", "errors":
    [{"code", "message"}]}``), None when the answer is not in that shape."""
    data = json_of(body)
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return None
    errors = [e for e in data["errors"] if isinstance(e, dict)]
    if not errors:
        return None
    first = errors[0]
    detail = f"{first.get('code', 'error')}: {first.get('message', '')}".rstrip(": ")
    return detail + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


class Intercom(MappedDestination[IntercomSettings]):
    """identify -> ``POST /contacts`` (on 409: search, then ``PUT /contacts/{id}``);
    track -> ``POST /events``."""

    type = "intercom"
    vendor = "Intercom"
    key_settings = ("access_token",)
    settings_model = IntercomSettings
    presets = encoder.PRESETS
    default_batch_events = 1
    max_batch_events = 1  # no batch endpoint

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        if len(items) != 1:
            raise ValueError(f"Intercom takes 1 {kind} a request, not {len(items)}")
        return encoder.encode(self.settings, items[0])

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        return [Outgoing(encoder.encode(self.settings, m), (m.event,)) for m in mapped]

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        if isinstance(result, HttpFailure):
            return vendor_outcome(self.vendor, result, None)
        detail = error_detail(result.body)
        if result.status == 429:
            limit = headers_of(result).get("x-ratelimit-limit")
            if limit:
                detail = f"{detail or 'rate_limit_exceeded'} (limit {limit} per minute)"
        return vendor_outcome(self.vendor, result, detail, _reset_after(result))

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        return await deliver_split(self, events, encoder.check, self._split, self._send)

    def _split(self, out: Outgoing, result: Result) -> list[tuple[Outgoing, Result, Outcome]]:
        return [(out, result, self.classify(result))]

    async def _send(self, out: Outgoing) -> tuple[Outgoing, Result]:
        result = await self._http(out.request)
        conflict = isinstance(result, HttpResponse) and result.status == 409
        if not conflict or not out.request.url.endswith("/contacts"):
            return out, result
        return await self._update_existing(out, json_of(out.request.body))

    async def _update_existing(
        self, out: Outgoing, payload: dict[str, Any]
    ) -> tuple[Outgoing, Result]:
        """The contact exists: find it, then update it."""
        search = encoder.search(self.settings, payload)
        found = await self._http(search)
        if not isinstance(found, HttpResponse) or found.status != 200:
            return Outgoing(search, out.events), found
        contact_id = _first_id(found.body)
        if contact_id is None:  # a conflict with a contact the search cannot see
            return Outgoing(search, out.events), HttpResponse(
                409,
                found.headers,
                b'{"type":"error.list","errors":[{"code":"conflict",'
                b'"message":"a contact conflicts but the search by its id finds none"}]}',
            )
        update = encoder.update(self.settings, contact_id, payload)
        return Outgoing(update, out.events), await self._http(update)

    async def _http(self, request: HttpRequest) -> Result:
        return await self.context.http.send(request, self.context.timeout_secs)


def _first_id(body: bytes) -> str | None:
    data = json_of(body)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list) or not data["data"]:
        return None
    first = data["data"][0]
    return str(first["id"]) if isinstance(first, dict) and "id" in first else None


def _reset_after(result: Result) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (epoch seconds) when Intercom throttles."""
    if isinstance(result, HttpFailure) or result.status != 429:
        return None
    headers = headers_of(result)
    if "retry-after" in headers:
        return None  # the standard header wins
    try:
        reset = float(headers.get("x-ratelimit-reset", ""))
    except ValueError:
        return None
    return max(0.0, reset - time.time())
