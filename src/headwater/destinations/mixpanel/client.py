"""The ``mixpanel`` destination: presets, requests per action kind, Mixpanel's answers.

Answers (https://docs.mixpanel.com/reference/import-events, troubleshooting/errors):

- ``/import`` 200: delivered.
- ``/import`` 400 with ``failed_records`` (strict mode): Mixpanel imported the valid records;
  exactly the failed ones are discarded, the reason naming the field, the rest delivered.
- 400 otherwise, 401, 403: the whole request is discarded (401/403 point at the credential).
- 413: the request is cut in halves and each half sent at once, down to one record.
- 429: retried (``Retry-After`` if given, else the engine's backoff, as Mixpanel advises).
- 5xx, timeouts: retried.
- ``/engage`` and ``/groups`` (``verbose=1``) 200 with ``status: 0``: discarded with its error.
- An answer that is not Mixpanel's JSON is classified by its status with its first 200 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpFailure, HttpRequest, HttpResponse, classify, redact
from headwater.delivery.outcomes import Delivered, Discard, Outcome
from headwater.destinations.mapped import (
    Mapped,
    MappedDestination,
    Outgoing,
    Refused,
    finish_each,
    unique_events,
)
from headwater.destinations.mixpanel import encoder
from headwater.destinations.mixpanel.presets import PRESETS
from headwater.destinations.mixpanel.settings import MixpanelSettings
from headwater.destinations.values import json_object, snippet, with_reason, without_secrets

Encode = Callable[[MixpanelSettings, Sequence[Mapped]], HttpRequest]
ENCODERS: dict[str, Encode] = {"import": encoder.import_request,
                               "engage": encoder.engage_request,
                               "groups": encoder.groups_request}  # fmt: skip
RATE_LIMIT = "2 GB of JSON per minute per project"


class Mixpanel(MappedDestination[MixpanelSettings]):
    """Track, page and screen to ``/import`` (strict), identify to ``/engage`` (``$set``),
    group to ``/groups``."""

    type = "mixpanel"
    vendor = "Mixpanel"
    key_settings = ("api_secret", "service_account_secret", "project_token")
    settings_model = MixpanelSettings
    presets = PRESETS
    default_batch_events = 500
    max_batch_events = encoder.MAX_RECORDS
    default_batch_bytes = 2_000_000

    # -- building

    def map_events(self, events: Sequence[OutboundEvent]) -> tuple[list[Mapped], Refused]:
        mapped, refused = super().map_events(events)
        return finish_each(mapped, refused, "import", encoder.finish_event, self.vendor), refused

    def plan(self, mapped: Sequence[Mapped]) -> list[Outgoing]:
        groups: dict[str, list[Mapped]] = {}
        for item in mapped:
            groups.setdefault(item.kind, []).append(item)
        return [
            self._outgoing(kind, run) for kind, items in groups.items()
            for run in encoder.chunks(items)
        ]  # fmt: skip

    def _outgoing(self, kind: str, items: Sequence[Mapped]) -> Outgoing:
        request = ENCODERS[kind](self.settings, items)
        return Outgoing(request, unique_events(i.event for i in items), tuple(items))

    def smaller(self, out: Outgoing, result: HttpResponse | HttpFailure) -> list[Outgoing]:
        if not isinstance(result, HttpResponse) or result.status != 413 or len(out.mapped) < 2:
            return []
        kind, half = out.mapped[0].kind, len(out.mapped) // 2
        return [self._outgoing(kind, out.mapped[:half]), self._outgoing(kind, out.mapped[half:])]

    # -- answers

    def classify_outgoing(
        self, out: Outgoing, result: HttpResponse | HttpFailure
    ) -> tuple[Outcome, dict[int, Outcome]]:
        outcome = self.classify(result)
        if not isinstance(result, HttpResponse) or result.status != 400 or not out.mapped:
            return outcome, {}
        answer = json_object(result.body)
        failed = answer.get("failed_records") if answer is not None else None
        if not isinstance(failed, list) or not failed:
            return outcome, {}
        per_event: dict[int, Outcome] = {}
        for record in failed:
            index = record.get("index") if isinstance(record, dict) else None
            if isinstance(index, int) and 0 <= index < len(out.mapped):
                offset = out.mapped[index].event.offset
                per_event.setdefault(offset, self._failed(record, index))
        if not per_event:
            return outcome, {}
        rest = [e for e in out.events if e.offset not in per_event]
        if not rest:
            first = next(iter(per_event.values()))
            return first, {o: d for o, d in per_event.items() if d != first}
        return Delivered(400), per_event  # Mixpanel imported the valid records

    def _failed(self, record: dict[str, Any], index: int) -> Discard:
        field = record.get("field") or "?"
        message = str(record.get("message") or "").strip()
        reason = f"Mixpanel 400 failed_records: {field} (record {index})"
        reason += f": {message}" if message else ""
        return Discard(redact(reason, self.settings.secrets()), 400)

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        if isinstance(result, HttpFailure):
            return classify(result)
        return without_secrets(self._classify_answer(result), self.settings.secrets())

    def _classify_answer(self, result: HttpResponse) -> Outcome:
        status = result.status
        answer = json_object(result.body)
        base = classify(result)
        if answer is None:
            if 200 <= status < 300:
                return base
            text = (
                f"Mixpanel {status}: {snippet(result.body)}"
                if result.body
                else f"Mixpanel {status}"
            )
            return with_reason(base, text)  # fmt: skip
        error = str(answer.get("error") or "").strip()
        if 200 <= status < 300:
            if answer.get("status") in (0, "0"):  # /engage, /groups with verbose=1
                return Discard(f"Mixpanel {status}: {error or 'update refused'}", status)
            return base
        if status == 429:
            return with_reason(base, f"Mixpanel 429 rate limited ({RATE_LIMIT}): {error}")
        if status == 413:
            return Discard(f"Mixpanel 413 payload too large: {error} (a single record over"
                           " Mixpanel's limit)", 413)  # fmt: skip
        return with_reason(base, f"Mixpanel {status}: {error or snippet(result.body)}")
