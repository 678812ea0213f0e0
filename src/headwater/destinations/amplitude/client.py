"""The ``amplitude`` destination: presets, requests per action kind, Amplitude's answers.

Answers (https://amplitude.com/docs/apis/analytics/http-v2):

- 200: delivered.
- 400 naming the API key (``invalid_api_key``, or ``missing_field: api_key``): the whole
  batch is discarded; diagnose points at ``api_key``.
- 400 with ``events_with_invalid_fields`` / ``events_with_missing_fields`` /
  ``events_with_invalid_id_lengths`` (field → indexes into ``events``) or
  ``silenced_events``: Amplitude took nothing; exactly the named events are discarded (the
  reason names the field) and the others are retried, so the engine resends only them.
- 413: the request is cut in halves and each half sent at once, down to one event; one event
  still too large is discarded.
- 429 (``throttled_devices``, ``exceeded_daily_quota_*``): retried, after ``Retry-After``
  or the 30 s Amplitude advises.
- 5xx, timeouts: retried. An answer that is not Amplitude's JSON is classified by its status
  (Segment's rules) with its first 200 bytes as the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import (
    HttpFailure,
    HttpRequest,
    HttpResponse,
    classify,
    retry_after_secs,
)
from headwater.delivery.outcomes import Discard, Outcome, Retry
from headwater.destinations.amplitude import encoder
from headwater.destinations.amplitude.presets import PRESETS
from headwater.destinations.amplitude.settings import AmplitudeSettings
from headwater.destinations.mapped import (
    Mapped,
    MappedDestination,
    Outgoing,
    Refused,
    finish_each,
    unique_events,
)
from headwater.destinations.values import json_object, snippet, with_reason, without_secrets

THROTTLE_SECS = 30.0  # Amplitude: pause a throttled device or user for about 30 s
INDEX_MAPS = (
    "events_with_invalid_fields",
    "events_with_missing_fields",
    "events_with_invalid_id_lengths",
)
Encode = Callable[[AmplitudeSettings, Sequence[Mapped]], HttpRequest]


def refused_indexes(answer: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """Index into ``events`` -> (the answer's key, the field) for each refused event."""
    refused: dict[int, tuple[str, str]] = {}
    for key in INDEX_MAPS:
        fields = answer.get(key)
        if not isinstance(fields, dict):
            continue
        for field, indexes in fields.items():
            for i in indexes if isinstance(indexes, list) else ():
                if isinstance(i, int):
                    refused.setdefault(i, (key, str(field)))
    for i in answer.get("silenced_events") or ():
        if isinstance(i, int):
            refused.setdefault(i, ("silenced_events", "device_id"))
    return refused


class Amplitude(MappedDestination[AmplitudeSettings]):
    """Track, page and screen as events (HTTP V2 or Batch API), identify to the Identify
    API, group to the Group Identify API (after putting the user in the group)."""

    type = "amplitude"
    vendor = "Amplitude"
    key_settings = ("api_key", "secret_key")
    settings_model = AmplitudeSettings
    presets = PRESETS
    default_batch_events = 500
    max_batch_events = encoder.MAX_EVENTS
    default_batch_bytes = 500_000  # of stored events: their Amplitude payloads fit in 1 MB

    # -- building

    def map_events(self, events: Sequence[OutboundEvent]) -> tuple[list[Mapped], Refused]:
        mapped, refused = super().map_events(events)
        return finish_each(mapped, refused, "log_event", encoder.finish_event, self.vendor), refused

    def _encoders(self, kind: str) -> tuple[Encode, ...]:
        if kind == "log_event":
            return (encoder.events_request,)
        if kind == "identify":
            return (encoder.identify_request,)
        return (encoder.associate_request, encoder.group_request)

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        groups: dict[str, list[Mapped]] = {}
        for item in mapped:
            groups.setdefault(item.kind, []).append(item)
        limit = encoder.max_bytes(self.settings)
        outgoing = []
        for kind, items in groups.items():
            for run in encoder.chunks(items, limit):
                for encode in self._encoders(kind):
                    outgoing.append(self._outgoing(encode, run))
        return outgoing

    def _outgoing(self, encode: Encode, items: Sequence[Mapped]) -> Outgoing:
        request = encode(self.settings, items)
        return Outgoing(request, unique_events(i.event for i in items), tuple(items))

    def smaller(self, out: Outgoing, result: HttpResponse | HttpFailure) -> list[Outgoing]:
        if not isinstance(result, HttpResponse) or result.status != 413 or len(out.mapped) < 2:
            return []
        encode = self._encoder_of(out.request)
        half = len(out.mapped) // 2
        return [
            self._outgoing(encode, out.mapped[:half]),
            self._outgoing(encode, out.mapped[half:]),
        ]

    def _encoder_of(self, request: HttpRequest) -> Encode:
        if request.url.endswith("/groupidentify"):
            return encoder.group_request
        if request.url == encoder.events_url(self.settings):
            return encoder.events_request
        body = request.body.decode("utf-8", "replace")
        return encoder.associate_request if "groups" in body else encoder.identify_request

    # -- answers

    def classify_outgoing(
        self, out: Outgoing, result: HttpResponse | HttpFailure
    ) -> tuple[Outcome, dict[int, Outcome]]:
        outcome = self.classify(result)
        if not isinstance(result, HttpResponse) or result.status != 400 or not out.mapped:
            return outcome, {}
        answer = json_object(result.body)
        refused = refused_indexes(answer) if answer is not None else {}
        if not refused or self._is_key_error(answer):
            return outcome, {}
        per_event: dict[int, Outcome] = {}
        for i, (key, field) in sorted(refused.items()):
            if 0 <= i < len(out.mapped):
                offset = out.mapped[i].event.offset
                per_event.setdefault(
                    offset, Discard(f"Amplitude 400 {key}: {field} (event {i})", 400)
                )
        rest = [e for e in out.events if e.offset not in per_event]
        if not rest:  # every event refused: the request's outcome is a discard
            first = next(iter(per_event.values()))
            return first, {o: d for o, d in per_event.items() if d != first}
        retry = Retry(
            f"Amplitude 400: {len(per_event)} of {len(out.events)} events refused (each has"
            " its reason); Amplitude took none, so the others are sent again without them",
            400,
        )
        return retry, per_event

    @staticmethod
    def _is_key_error(answer: dict[str, Any] | None) -> bool:
        if answer is None:
            return False
        error = str(answer.get("error", "")).lower()
        names_key = "api key" in error or "api_key" in error
        bad = "invalid" in error or "missing" in error
        return answer.get("missing_field") == "api_key" or (names_key and bad)

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        if isinstance(result, HttpFailure) or 200 <= result.status < 300:
            return classify(result)
        secrets = frozenset({self.settings.api_key.get_secret_value()})
        return without_secrets(self._classify_answer(result), secrets)

    def _classify_answer(self, result: HttpResponse) -> Outcome:
        status = result.status
        answer = json_object(result.body)
        base = classify(result)
        if answer is None:
            text = (
                f"Amplitude {status}: {snippet(result.body)}"
                if result.body
                else f"Amplitude {status}"
            )
            return with_reason(base, text)
        error = str(answer.get("error") or answer.get("message") or "").strip()
        if status == 400 and self._is_key_error(answer):
            return Discard(f"Amplitude 400 invalid_api_key: {error or 'Invalid API key'}", 400)
        if status == 400 and answer.get("missing_field"):
            return Discard(f"Amplitude 400 missing_field: {answer['missing_field']}: {error}", 400)
        if status == 429:
            return self._throttled(result, answer, error)
        if status == 413:
            return Discard(
                f"Amplitude 413 payload too large: {error or 'request too large'}"
                " (a single event over Amplitude's limit)",
                413,
            )
        return with_reason(base, f"Amplitude {status}: {error or snippet(result.body)}")

    def _throttled(self, result: HttpResponse, answer: dict[str, Any], error: str) -> Retry:
        headers = {k.lower(): v for k, v in result.headers.items()}
        after = retry_after_secs(headers.get("retry-after"))
        amplitude_keys = (
            "eps_threshold",
            "throttled_devices",
            "throttled_users",
            "exceeded_daily_quota_devices",
            "exceeded_daily_quota_users",
        )
        if after is None and any(k in answer for k in amplitude_keys):
            after = THROTTLE_SECS
        if answer.get("exceeded_daily_quota_devices") or answer.get("exceeded_daily_quota_users"):
            what = "daily quota of events per device or user exceeded"
        else:
            what = f"{answer.get('eps_threshold', 30)} events/s per device or user"
        return Retry(
            f"Amplitude 429 rate limited ({what}): {error or 'Too many requests'}", 429, after
        )
