"""The ``ga4`` destination: track and page events to GA4's Measurement Protocol.

GA4 answers 204 to every request, valid or not, and drops silently what it does not take;
so each event is checked against GA4's documented limits (:mod:`.rules`) before it is
sent, and one that would be dropped is discarded with the rule and the field. "Test
connection" sends the same requests to ``/debug/mp/collect`` (:meth:`Ga4.test_request`,
:meth:`Ga4.read_test_answer`, :meth:`Ga4.validate`) and shows GA4's validation messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse, classify
from headwater.delivery.outcomes import Delivered, Discard, Outcome, Retry
from headwater.destinations.ga4 import encoder, rules
from headwater.destinations.ga4.presets import PRESETS
from headwater.destinations.ga4.settings import Ga4Settings
from headwater.destinations.mapped import (
    Mapped,
    MappedDestination,
    Outgoing,
    Refused,
    json_body,
    unique_events,
)

VENDOR = "GA4"


class Ga4(MappedDestination[Ga4Settings]):
    """Google Analytics 4 (Measurement Protocol, web streams)."""

    type = "ga4"
    vendor = VENDOR
    key_settings = ("api_secret", "measurement_id")
    settings_model = Ga4Settings
    presets = PRESETS
    default_batch_events = 25
    max_batch_events = 25  # GA4 takes 25 a request; events of several users: several requests

    def map_events(self, events: Sequence[OutboundEvent]) -> tuple[list[Mapped], Refused]:
        """The mapped payloads that GA4 would keep; the others discarded with the rule."""
        mapped, refused = super().map_events(events)
        kept: list[Mapped] = []
        for item in mapped:
            problem = self.problem(item)
            if problem is None:
                kept.append(item)
            else:
                refused.setdefault(item.event.offset, Discard(problem))
        return kept, refused

    @staticmethod
    def problem(item: Mapped) -> str | None:
        """Why GA4 would drop this payload, or None."""
        event = encoder.to_event(item.payload)
        found = rules.check_event(event.checked())
        if found is not None:
            return found.reason()
        size = len(json_body(encoder.request_body([event])))
        if size > rules.MAX_BODY_BYTES:
            return rules.Problem(
                "VALUE_OUT_OF_BOUNDS", "params", f"the event alone is {size:,} bytes;"
                f" GA4 takes requests under {rules.MAX_BODY_BYTES:,}",
            ).reason()  # fmt: skip
        return None

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        return self._plan(mapped, debug=False)

    def _plan(self, mapped: Sequence[Mapped], debug: bool) -> list[Outgoing]:
        items = [(m, encoder.to_event(m.payload)) for m in mapped]
        return [
            Outgoing(encoder.encode(self.settings, [e for _m, e in group], debug),
                     unique_events(m.event for m, _e in group))
            for group in encoder.groups(items)
        ]  # fmt: skip

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        """GA4 answers 2xx to what it receives; other answers by Segment's rules."""
        outcome = classify(result)
        if isinstance(result, HttpFailure) or isinstance(outcome, Delivered):
            return outcome
        text = result.body[:200].decode("utf-8", "replace").strip()
        reason = f"{VENDOR} {result.status}: {text}" if text else f"{VENDOR} {result.status}"
        if isinstance(outcome, Retry):
            return Retry(reason, outcome.status, outcome.after_secs)
        if isinstance(outcome, Discard) and 300 <= result.status < 400:
            return outcome
        return Discard(reason, result.status)

    # -- "test connection": GA4's validation server

    def test_request(self, events: Sequence[OutboundEvent]) -> tuple[HttpRequest, ...]:
        """The requests that would carry ``events``, to ``/debug/mp/collect`` instead (GA4
        validates them and records nothing). Events Headwater itself refuses are left out:
        :meth:`validate` reports them."""
        mapped, _refused = self.map_events(events)
        return tuple(out.request for out in self._plan(mapped, debug=True))

    @staticmethod
    def read_test_answer(result: HttpResponse | HttpFailure) -> list[str]:
        """GA4's validation messages in a debug answer, one line each
        (``events[0].name: ... (NAME_INVALID)``); empty: GA4 found nothing wrong."""
        if isinstance(result, HttpFailure):
            return [f"{VENDOR} debug endpoint unreachable: {result.kind}: {result.message}"]
        try:
            data = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            data = None
        if result.status != 200 or not isinstance(data, dict):
            text = result.body[:200].decode("utf-8", "replace").strip()
            return [f"{VENDOR} {result.status}: {text or 'no validation messages'}"]
        messages = data.get("validationMessages") or []
        lines = []
        for m in messages if isinstance(messages, list) else []:
            if isinstance(m, dict):
                where = m.get("fieldPath") or "(request)"
                lines.append(f"{where}: {m.get('description', '')} ({m.get('validationCode')})")
        return lines

    async def validate(self, events: Sequence[OutboundEvent]) -> list[str]:
        """What is wrong with ``events`` for GA4: Headwater's own checks (events it would not
        send), then GA4's validation server's messages for the others."""
        mapped, refused = self.map_events(events)
        lines = [f"event at offset {offset}: {d.reason}" for offset, d in refused.items()]
        for out in self._plan(mapped, debug=True):
            result = await self.context.http.send(out.request, self.context.timeout_secs)
            lines.extend(self.read_test_answer(result))
        return lines
