"""Test a destination: one event through its mapping and, on request, its real client.

What ``headwater destinations test``, ``POST /api/v1/destinations/{name}/test``, the
console's "Send test event" button and the event tester's last step call. A test runs on
a destination object of its own, built from the same configuration the delivery engine
uses (:func:`~headwater.delivery.engine.build_destination`), whose HTTP client is the
engine's, wrapped so that every request it sends and every answer it gets is kept.

Three modes:

- ``dry_run`` (the default) for a destination without a validation endpoint: the mapping
  runs and the requests it makes are shown; nothing is sent.
- ``validate`` (the default) for a destination with one (its class defines
  :meth:`~headwater.destinations.base.Destination.test_request`, e.g. GA4's
  ``/debug/mp/collect``): that request is sent instead, and the vendor's messages about the
  event are shown (:meth:`~headwater.destinations.base.Destination.read_test_answer`).
- ``send``: the destination delivers the event exactly as the delivery engine would
  (``deliver``), and the answer is classified (delivered, retry, discard with the reason).

A test event is never written to the log or the delivery ledger, so it has no trace and
does not count in Event Delivery. Requests and answers are shown through
:func:`~headwater.delivery.http.exchange` (secret headers redacted, bodies truncated), and
then every secret setting's value is replaced wherever it still appears (a key in a URL or
a body). The server logs each test at info level, without the event or any secret.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, SecretStr

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import (
    REDACTED,
    HttpClient,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    exchange,
)
from headwater.delivery.outcomes import Delivered, Discard, Filtered, Outcome, Retry
from headwater.destinations.base import Destination, HttpDestination
from headwater.destinations.mapped import MappedDestination
from headwater.mapping.actions import Unbuildable

logger = logging.getLogger("headwater.delivery.tester")

TEST_OFFSET = 0  # no log offset: the event is not in the log
NOT_STORED = (
    "test events are not written to the log or the delivery ledger: they have no trace and "
    "do not count in Event Delivery"
)
MODES = ("dry_run", "validate", "send")


class RecordingHttp(HttpClient):
    """The engine's HTTP client, keeping each request sent and the answer it got."""

    def __init__(self, inner: HttpClient) -> None:  # shares the inner client's pool
        self.inner = inner
        self.sent: list[tuple[HttpRequest, HttpResponse | HttpFailure]] = []

    async def send(self, request: HttpRequest, timeout_secs: float) -> HttpResponse | HttpFailure:
        result = await self.inner.send(request, timeout_secs)
        self.sent.append((request, result))
        return result

    async def close(self) -> None:  # the pool is the engine's to close
        return None


@dataclass(slots=True)
class DestinationTest:
    """What a test did; :meth:`as_dict` is the API's answer."""

    destination: str
    type: str
    mode: str
    event: dict[str, Any]
    mapping: dict[str, Any] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    sent: bool = False  # whether a request went to the vendor (or, send, a delivery ran)

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "mode": self.mode,
            "sent": self.sent,
            "event": self.event,
            "mapping": self.mapping,
            "requests": self.requests,
            "messages": self.messages,
            "outcome": self.outcome,
            "note": NOT_STORED,
        }


# ---------------------------------------------------------------------- sample events


def sample_events() -> list[dict[str, Any]]:
    """One example of each event type, with the fields vendors commonly require."""
    context = {
        "library": {"name": "headwater-test", "version": "1"},
        "traits": {"email": "test@headwater.invalid"},
        "page": {"url": "https://headwater.invalid/test", "title": "Headwater test"},
        "ip": "192.0.2.1",
        "locale": "en-US",
    }
    common = {"userId": "headwater-test-user", "anonymousId": "headwater-test-anonymous",
              "context": context}  # fmt: skip
    traits = {"email": "test@headwater.invalid", "name": "Headwater Test", "plan": "test"}
    return [
        {"type": "track", "event": "Headwater Test Event", **common,
         "properties": {"test": True, "revenue": 1.0, "currency": "USD"}},
        {"type": "identify", **common, "traits": traits},
        {"type": "page", "name": "Headwater Test Page", **common,
         "properties": {"url": "https://headwater.invalid/test", "title": "Headwater test"}},
        {"type": "screen", "name": "Headwater Test Screen", **common, "properties": {}},
        {"type": "group", "groupId": "headwater-test-group", **common,
         "traits": {"name": "Headwater Test Group"}},
        {"type": "alias", "previousId": "headwater-test-anonymous", **common},
    ]  # fmt: skip


def sample_event(destination: Destination[Any]) -> dict[str, Any]:
    """A sample of a type the destination sends: for a mapped destination, the first type
    (track, identify, page, screen, group, alias) one of its actions takes; else a track."""
    samples = sample_events()
    if isinstance(destination, MappedDestination):
        for sample in samples:
            if any(_matches(action, sample) for action in destination.actions):
                return sample
    return samples[0]


def _matches(action: Any, event: dict[str, Any]) -> bool:
    try:
        return bool(action.matches(event))
    except Exception:  # a trigger that cannot read the sample does not take it
        return False


def as_outbound(event: dict[str, Any]) -> OutboundEvent:
    """The (normalised) event as the delivery engine hands it to a destination."""
    message_id = event.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        message_id = f"headwater-test-{uuid.uuid4()}"
        event = {**event, "messageId": message_id}
    return OutboundEvent(TEST_OFFSET, message_id, time.time_ns() // 1_000_000, orjson.dumps(event))


# ---------------------------------------------------------------------- the mapping


def mapping_of(destination: Destination[Any], event: OutboundEvent) -> dict[str, Any] | None:
    """What a mapped destination's actions make of the event: which match, the payload
    each builds or the required field it lacks. None for destinations without actions."""
    if not isinstance(destination, MappedDestination):
        return None
    actions = []
    for action in destination.actions:
        row: dict[str, Any] = {"name": action.name, "kind": action.kind,
                               "trigger": action.trigger}  # fmt: skip
        try:
            matched = action.matches(event.event)
            built = action.build(event.event) if matched else None
        except Exception as exc:  # as the destination records it: the action failed
            matched, built = True, Unbuildable(f"action {action.name} failed: {exc!r}")
        row["matched"] = matched
        if isinstance(built, Unbuildable):
            row["decision"], row["reason"] = "unbuildable", built.reason
        elif matched:
            row["decision"], row["payload"] = "built", built
        else:
            row["decision"] = "not triggered"
        actions.append(row)
    doc: dict[str, Any] = {"actions": actions}
    if not any(a["matched"] for a in actions):
        doc["note"] = (
            "no action's trigger matches this event: the destination would not send it; add "
            "an action (destinations[].actions, docs/mapping.md) or test another event type"
        )
    return doc


def planned_requests(destination: Destination[Any], event: OutboundEvent) -> list[HttpRequest]:
    """The requests the destination would send for the event (none for one without HTTP)."""
    if isinstance(destination, MappedDestination):
        mapped, _refused = destination.map_events([event])
        return [out.request for out in destination.plan(mapped)] if mapped else []
    if isinstance(destination, HttpDestination):
        return [destination.encode([event])]
    return []


# ---------------------------------------------------------------------- running a test


def choose_mode(destination: Destination[Any], send: bool, events: Sequence[OutboundEvent]) -> str:
    if send:
        return "send"
    return "validate" if destination.test_request(events) is not None else "dry_run"


async def run_test(
    destination: Destination[Any],
    http: RecordingHttp,
    event: dict[str, Any],
    send: bool = False,
    preview_only: bool = False,
) -> DestinationTest:
    """Test ``destination`` (built on ``http``) with one normalised event, after its
    filters and transformations (the caller's to run). ``preview_only``: a dry run even
    where the vendor has a validation endpoint (the event tester's overview)."""
    outbound = as_outbound(event)
    mode = "dry_run" if preview_only else choose_mode(destination, send, [outbound])
    test = DestinationTest(destination.name, destination.type, mode, outbound.event)
    test.mapping = mapping_of(destination, outbound)
    if mode == "send":
        attempt = await destination.deliver([outbound])
        test.sent = bool(http.sent) or not isinstance(destination, HttpDestination)
        outcome = attempt.per_event.get(TEST_OFFSET, attempt.outcome)
        test.requests = [_exchange_doc(destination, r, a) for r, a in http.sent]
        test.outcome = outcome_doc(outcome)
        if not http.sent and attempt.exchange.request:  # e.g. "nothing was sent" notes
            test.requests = [{"request": scrub(destination, attempt.exchange.request),
                              "response": None, "outcome": None}]  # fmt: skip
    elif mode == "validate":
        await _validate(destination, http, outbound, test)
    else:
        _dry_run(destination, outbound, test)
    test.event = scrub(destination, test.event)
    test.mapping = scrub(destination, test.mapping)
    if not preview_only:
        logger.info(
            "destination test of %s (%s): mode %s, %s event %s, %d request(s), %s",
            destination.name, destination.type, mode, outbound.event.get("type"),
            outbound.message_id, len(test.requests), test.outcome.get("result"),
        )  # fmt: skip
    return test


async def _validate(
    destination: Destination[Any], http: RecordingHttp, event: OutboundEvent,
    test: DestinationTest,
) -> None:  # fmt: skip
    requests = destination.test_request([event]) or ()
    worst: Outcome | None = None
    for request in requests:
        result = await http.send(request, destination.context.timeout_secs)
        test.sent = True
        doc = _exchange_doc(destination, request, result)
        if isinstance(result, HttpResponse):
            messages = [scrub_text(destination, m) for m in destination.read_test_answer(result)]
            doc["messages"] = messages
            test.messages += messages
        test.requests.append(doc)
        worst = _worse(worst, _classify(destination, result))
    test.outcome = outcome_doc(worst) if worst is not None else not_sent("no request to send")
    if isinstance(worst, Delivered):
        test.outcome["result"] = "validated"
        test.outcome["detail"] = (
            "the vendor's validation endpoint took the event"
            + (f" with {len(test.messages)} message(s)" if test.messages else " without remarks")
            + "; nothing was recorded by the vendor. Use send to deliver it for real."
        )


def _dry_run(destination: Destination[Any], event: OutboundEvent, test: DestinationTest) -> None:
    try:
        requests = planned_requests(destination, event)
    except (ValueError, NotImplementedError) as exc:
        test.outcome = not_sent(f"the destination cannot encode this event: {exc}")
        return
    failure = HttpFailure("not_sent", "dry run: not sent")
    test.requests = [
        {"request": scrub(destination, exchange(r, failure).request), "response": None,
         "outcome": None}
        for r in requests
    ]  # fmt: skip
    if requests:
        test.outcome = not_sent(
            f"dry run: {len(requests)} request(s) built, not sent; send to deliver the event "
            "for real (the vendor records it)"
        )
    elif isinstance(destination, MappedDestination):
        test.outcome = not_sent("the mapping makes no request of this event (see mapping)")
    else:
        test.outcome = not_sent(
            f"a {destination.type} destination sends no HTTP request to show; send to deliver "
            "the event"
        )


def _classify(destination: Destination[Any], result: HttpResponse | HttpFailure) -> Outcome:
    if isinstance(destination, HttpDestination):
        return destination.classify(result)
    from headwater.delivery.http import classify

    return classify(result)


_SEVERITY = {Delivered: 0, Discard: 1, Retry: 2}


def _worse(a: Outcome | None, b: Outcome) -> Outcome:
    return b if a is None or _SEVERITY[type(b)] > _SEVERITY[type(a)] else a


def _exchange_doc(
    destination: Destination[Any], request: HttpRequest, result: HttpResponse | HttpFailure
) -> dict[str, Any]:
    ex = exchange(request, result)
    return {
        "request": scrub(destination, ex.request),
        "response": scrub(destination, ex.response),
        "outcome": outcome_doc(_classify(destination, result)),
    }


def outcome_doc(outcome: Outcome) -> dict[str, Any]:
    """An outcome as the API shows it: ``result`` delivered, retry, discard or filtered."""
    if isinstance(outcome, Filtered):
        return {"result": "filtered", "status": None, "reason": outcome.reason}
    if isinstance(outcome, Delivered):
        return {"result": "delivered", "status": outcome.status, "reason": None}
    if isinstance(outcome, Retry):
        return {"result": "retry", "status": outcome.status, "reason": outcome.reason,
                "retryAfterSecs": outcome.after_secs}  # fmt: skip
    return {"result": "discard", "status": outcome.status, "reason": outcome.reason}


def not_sent(reason: str) -> dict[str, Any]:
    return {"result": "not_sent", "status": None, "reason": reason}


# ---------------------------------------------------------------------- secrets


def secret_values(destination: Destination[Any]) -> list[str]:
    """The values of the destination's secret settings (longest first), to hide."""
    found: list[str] = []

    def walk(model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
            elif isinstance(value, BaseModel):
                walk(value)

    walk(destination.settings)
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def scrub_text(destination: Destination[Any], text: str) -> str:
    for secret in secret_values(destination):
        text = text.replace(secret, REDACTED)
    return text


def scrub(destination: Destination[Any], value: Any) -> Any:
    """``value`` with every secret setting's value replaced by ``[redacted]``."""
    secrets = secret_values(destination)
    if not secrets:
        return value

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            for secret in secrets:
                item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, dict):
            return {clean(k): clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    return clean(value)
