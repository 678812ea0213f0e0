"""The ``slack`` destination: track events with a template, posted to an incoming webhook."""

from __future__ import annotations

import re
from collections.abc import Sequence

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse
from headwater.delivery.outcomes import Attempt, Discard, Exchange, Outcome
from headwater.destinations.mapped import Mapped, MappedDestination, Outgoing, Refused
from headwater.destinations.slack import encoder
from headwater.destinations.slack.settings import SlackSettings
from headwater.destinations.vendors import Result, deliver_split, vendor_outcome
from headwater.mapping.actions import ActionSpec

ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{1,60}$")  # Slack answers errors as a bare code


class Slack(MappedDestination[SlackSettings]):
    """One ``post_to_channel`` action per template of ``settings.templates``."""

    type = "slack"
    vendor = "Slack"
    key_settings = ("webhook_url",)
    settings_model = SlackSettings
    default_batch_events = 1
    max_batch_events = 1

    @classmethod
    def presets_for(cls, settings: SlackSettings) -> tuple[ActionSpec, ...]:
        return encoder.presets(settings)

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        return encoder.encode(self.settings, items)

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        return [Outgoing(encoder.encode(self.settings, [m]), (m.event,)) for m in mapped]

    def map_events(self, events: Sequence[OutboundEvent]) -> tuple[list[Mapped], Refused]:
        mapped, refused = super().map_events(events)
        by_offset = {e.offset: e for e in events}
        for offset, discard in list(refused.items()):
            if discard.reason.startswith("no action's trigger matches"):
                refused[offset] = Discard(self._unposted(by_offset[offset]))
        return mapped, refused

    def _unposted(self, event: OutboundEvent) -> str:
        body = event.event
        if body.get("type") != "track":
            return f"Slack posts track events only, not {body.get('type')} events: not sent"
        return (
            f"no template for event {body.get('event')!r} in settings.templates of destination"
            f" {self.name}: not sent; add one to post such events"
        )

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        detail = None
        if isinstance(result, HttpResponse):
            text = result.body.decode("utf-8", "replace").strip()
            if ERROR_CODE.match(text):
                detail = text
        return vendor_outcome(self.vendor, result, detail)

    async def deliver(self, events: Sequence[OutboundEvent]) -> Attempt:
        attempt = await deliver_split(self, events, None, self._split)

        def shown() -> Exchange:  # the webhook URL's path is the credential
            sent = dict(attempt.exchange.request)
            if "url" in sent:
                sent["url"] = encoder.shown_url(str(sent["url"]))
            return Exchange(sent, attempt.exchange.response)

        return Attempt(attempt.outcome, shown, attempt.duration_ms, attempt.per_event)

    def _split(self, out: Outgoing, result: Result) -> list[tuple[Outgoing, Result, Outcome]]:
        return [(out, result, self.classify(result))]
