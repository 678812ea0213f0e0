"""The amplitude destination against the fake Amplitude: mapping, batching, answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import REDACTED, HttpClient
from headwater.delivery.outcomes import Attempt, Delivered, Discard, EventState, Retry
from headwater.destinations.amplitude import Amplitude
from headwater.destinations.base import Context
from headwater.mapping.actions import ActionConfig
from tests.delivery.conftest import FAST, Pipeline, event, make_pipeline  # noqa: F401
from tests.destinations.conftest import outbound, outbounds
from tests.fakes.amplitude import FakeAmplitude

KEY = "amp-key-0001"


@pytest.fixture
def amp() -> Iterator[FakeAmplitude]:
    fake = FakeAmplitude(KEY)
    with fake:
        yield fake


def amplitude(
    fake: FakeAmplitude, http: HttpClient, batch: int = 100,
    actions: list[dict[str, Any]] | None = None, **settings: Any,
) -> Amplitude:  # fmt: skip
    given = {"endpoint": fake.url, "api_key": KEY, "min_id_length": 1, **settings}
    configs = tuple(ActionConfig.model_validate(a) for a in actions) if actions else None
    model = Amplitude.settings_model.model_validate(given)
    return Amplitude("amp", model, Context(http, 5.0, batch, configs))


def form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


def assert_no_key(attempt: Attempt) -> None:
    stored = orjson.dumps({"exchange": [attempt.exchange.request, attempt.exchange.response],
                           "reason": getattr(attempt.outcome, "reason", "")}).decode()  # fmt: skip
    assert KEY not in stored


FULL_CONTEXT = {
    "ip": "203.0.113.9", "locale": "en-GB", "library": {"name": "analytics-python", "version": "2"},
    "app": {"version": "3.1"}, "os": {"name": "iOS", "version": "17.2"},
    "device": {"type": "ios", "manufacturer": "Apple", "model": "iPhone15,2", "id": "dev-77"},
    "network": {"carrier": "Vodafone"},
    "location": {"country": "GB", "city": "Leeds", "latitude": 53.8, "longitude": -1.5},
}  # fmt: skip


async def test_a_track_becomes_an_event_in_segments_default_shape(
    amp: FakeAmplitude, http: HttpClient
) -> None:
    e = outbound(1, anonymousId="anon-1", context=FULL_CONTEXT,
                 properties={"revenue": 9.99, "price": 3, "quantity": 2})  # fmt: skip
    attempt = await amplitude(amp, http).deliver([e])
    assert attempt.outcome == Delivered(200)
    [request] = amp.requests
    assert request.path == "/2/httpapi"
    body = request.json()
    assert body["api_key"] == KEY and body["options"] == {"min_id_length": 1}
    assert body["events"] == [{
        "user_id": "u1", "device_id": "anon-1", "event_type": "Order Completed",
        "insert_id": e.message_id, "time": 1714557600000,
        "event_properties": {"revenue": 9.99, "price": 3, "quantity": 2},
        "app_version": "3.1", "platform": "iOS", "os_name": "iOS", "os_version": "17.2",
        "device_manufacturer": "Apple", "device_model": "iPhone15,2", "carrier": "Vodafone",
        "country": "GB", "city": "Leeds", "language": "en-GB", "price": 3, "quantity": 2,
        "revenue": 9.99, "location_lat": 53.8, "location_lng": -1.5, "ip": "203.0.113.9",
        "idfv": "dev-77", "library": "analytics-python",
    }]  # fmt: skip
    assert str(attempt.exchange.request["body"]).startswith(f'{{"api_key":"{REDACTED}"')
    assert_no_key(attempt)


async def test_page_and_screen_are_viewed_events(amp: FakeAmplitude, http: HttpClient) -> None:
    sent = [outbound(1, type="page", name="Pricing"), outbound(2, type="screen", name="Home")]
    attempt = await amplitude(amp, http).deliver(sent)
    assert attempt.outcome == Delivered(200)
    assert [e["event_type"] for e in amp.accepted] == ["Viewed Pricing", "Viewed Home"]
    assert len(amp.requests) == 1  # one kind, one request


async def test_identify_goes_to_the_identify_api(amp: FakeAmplitude, http: HttpClient) -> None:
    e = outbound(1, type="identify", anonymousId="anon-1", traits={"plan": "pro"})
    attempt = await amplitude(amp, http).deliver([e])
    assert attempt.outcome == Delivered(200)
    [request] = amp.requests
    assert request.path == "/identify"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = form(request.body)
    assert fields["api_key"] == KEY
    assert orjson.loads(fields["identification"]) == [
        {"user_id": "u1", "device_id": "anon-1", "user_properties": {"plan": "pro"}}
    ]
    assert REDACTED in str(attempt.exchange.request["body"])
    assert_no_key(attempt)


async def test_group_puts_the_user_in_the_group_then_sets_its_properties(
    amp: FakeAmplitude, http: HttpClient
) -> None:
    e = outbound(1, type="group", groupId="acme", traits={"seats": 12})
    attempt = await amplitude(amp, http).deliver([e])
    assert attempt.outcome == Delivered(200)
    assert [r.path for r in amp.requests] == ["/identify", "/groupidentify"]
    assert amp.identifies == [{"user_id": "u1", "groups": {"group": "acme"}}]
    assert amp.groups == [
        {"group_type": "group", "group_value": "acme", "group_properties": {"seats": 12}}
    ]


async def test_batch_endpoint_by_setting(amp: FakeAmplitude, http: HttpClient) -> None:
    await amplitude(amp, http, use_batch_endpoint=True).deliver(outbounds(2))
    assert [r.path for r in amp.requests] == ["/batch"]
    assert len(amp.accepted) == 2


async def test_2000_events_go_in_one_request(amp: FakeAmplitude, http: HttpClient) -> None:
    sent = outbounds(2000)
    attempt = await amplitude(amp, http, batch=2000).deliver(sent)
    assert attempt.outcome == Delivered(200)
    assert len(amp.requests) == 1
    assert [e["insert_id"] for e in amp.accepted] == [e.message_id for e in sent]


async def test_requests_stay_under_1_mb(amp: FakeAmplitude, http: HttpClient) -> None:
    sent = outbounds(12, properties={"blob": "x" * 200_000})
    attempt = await amplitude(amp, http, batch=12).deliver(sent)
    assert attempt.outcome == Delivered(200)
    assert len(amp.requests) >= 3 and all(len(r.body) <= 1_000_000 for r in amp.requests)
    assert sorted(e["insert_id"] for e in amp.accepted) == sorted(e.message_id for e in sent)


async def test_413_halves_the_request_until_it_fits(amp: FakeAmplitude, http: HttpClient) -> None:
    amp.max_bytes = 3_000  # a few events a request
    sent = outbounds(8, properties={"blob": "x" * 500})
    attempt = await amplitude(amp, http).deliver(sent)
    assert attempt.outcome == Delivered(200), attempt.outcome
    assert amp.requests[0].status == 413
    assert sorted(e["insert_id"] for e in amp.accepted) == sorted(e.message_id for e in sent)


async def test_one_event_too_large_is_discarded(amp: FakeAmplitude, http: HttpClient) -> None:
    amp.max_bytes = 3_000
    attempt = await amplitude(amp, http).deliver([outbound(1, properties={"x": "y" * 5000})])
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 413
    assert attempt.outcome.reason.startswith("Amplitude 413 payload too large")


async def test_invalid_api_key_discards_the_batch_and_never_shows_the_key(
    amp: FakeAmplitude, http: HttpClient
) -> None:
    amp.api_key = "another-key"  # the fake echoes the key it got, as an error text may
    attempt = await amplitude(amp, http).deliver(outbounds(3))
    assert isinstance(attempt.outcome, Discard) and attempt.outcome.status == 400
    assert attempt.outcome.reason == f"Amplitude 400 invalid_api_key: Invalid API key: {REDACTED}"
    assert not attempt.per_event
    assert_no_key(attempt)
    assert Amplitude.key_settings[0] == "api_key"


async def test_429_retries_after_amplitudes_30_s(amp: FakeAmplitude, http: HttpClient) -> None:
    amp.throttle = 1
    attempt = await amplitude(amp, http).deliver(outbounds(2, anonymousId="dev-1"))
    assert isinstance(attempt.outcome, Retry)
    assert (attempt.outcome.status, attempt.outcome.after_secs) == (429, 30.0)
    assert attempt.outcome.reason.startswith("Amplitude 429 rate limited (30 events/s")
    amp.throttle_daily, amp.throttle = True, 1
    attempt = await amplitude(amp, http).deliver(outbounds(1))
    assert isinstance(attempt.outcome, Retry) and "daily quota" in attempt.outcome.reason


async def test_5xx_and_unparseable_answers_by_status(fake: Any, http: HttpClient) -> None:
    from tests.fakes import always

    fake.script = always(503, body=b"<html>upstream down</html>")
    attempt = await amplitude(fake, http).deliver(outbounds(1))
    assert attempt.outcome == Retry("Amplitude 503: <html>upstream down</html>", 503, None)
    fake.script = always(400, body=b"nope")
    attempt = await amplitude(fake, http).deliver(outbounds(1))
    assert attempt.outcome == Discard("Amplitude 400: nope", 400)


async def test_refused_events_are_named_and_the_rest_to_resend(
    amp: FakeAmplitude, http: HttpClient
) -> None:
    sent = outbounds(4)
    amp.invalid[sent[2].message_id] = "time"
    attempt = await amplitude(amp, http).deliver(sent)
    assert isinstance(attempt.outcome, Retry) and attempt.outcome.status == 400
    assert attempt.per_event == {
        sent[2].offset: Discard("Amplitude 400 events_with_invalid_fields: time (event 2)", 400)
    }
    assert amp.accepted == []  # Amplitude took none of them


async def test_short_ids_are_refused_by_field(amp: FakeAmplitude, http: HttpClient) -> None:
    sent = [outbound(1, userId="abc"), outbound(2, userId="long-enough")]
    attempt = await amplitude(amp, http, min_id_length=None).deliver(sent)
    assert attempt.per_event == {
        1: Discard("Amplitude 400 events_with_invalid_id_lengths: user_id (event 0)", 400)
    }


async def test_missing_and_malformed_fields_are_discarded_per_event(
    amp: FakeAmplitude, http: HttpClient
) -> None:
    nameless = outbound(1)
    body = dict(nameless.event)
    del body["event"]
    nameless = OutboundEvent(1, nameless.message_id, 0, orjson.dumps(body))
    badtime = outbound(2, timestamp="yesterday")
    fine = outbound(3)
    attempt = await amplitude(amp, http).deliver([nameless, badtime, fine])
    assert attempt.outcome == Delivered(200)
    first, second = attempt.per_event[1], attempt.per_event[2]
    assert isinstance(first, Discard) and isinstance(second, Discard)
    assert "missing required field event_type (mapped from $.event)" in first.reason
    assert second.reason.startswith("time 'yesterday' is not an ISO-8601 time")
    assert [e["insert_id"] for e in amp.accepted] == [fine.message_id]


async def test_the_workspace_overrides_a_presets_mapping(
    amp: FakeAmplitude, http: HttpClient
) -> None:
    actions = [{"name": "log_event", "mapping": {"device_id": {"@path": "$.context.device.id"},
                                                 "event_type": {"@template": "hw {{event}}"}}}]  # fmt: skip
    e = outbound(1, anonymousId="anon-1", context={"device": {"id": "dev-9"}})
    await amplitude(amp, http, actions=actions).deliver([e])
    [got] = amp.accepted
    assert (got["device_id"], got["event_type"], got["insert_id"]) == (
        "dev-9", "hw Order Completed", e.message_id,
    )  # fmt: skip


# ------------------------------------------------------------- through the delivery engine


async def test_partial_batch_through_the_engine(make_pipeline: Any) -> None:  # noqa: F811
    amp = FakeAmplitude(KEY)
    with amp:
        dest = {"name": "amp", "type": "amplitude", "sources": ["website"],
                "settings": {"endpoint": amp.url, "api_key": KEY, "min_id_length": 1},
                "delivery": {**FAST, "batch_max_events": 10}}  # fmt: skip
        pipeline: Pipeline = await make_pipeline([dest])
        records = [event(timestamp="2024-05-01T10:00:00.000Z") for _ in range(10)]
        ids = [r.message_id for r in records]
        bad, good = [ids[3], ids[7]], [m for i, m in enumerate(ids) if i not in (3, 7)]
        amp.invalid.update({bad[0]: "time", bad[1]: "event_properties"})
        await pipeline.send(records)
        await pipeline.wait_states("amp", good, EventState.DELIVERED, within=30)
        await pipeline.wait_states("amp", bad, EventState.DISCARDED, within=30)

        assert sorted(e["insert_id"] for e in amp.accepted) == sorted(good)
        assert amp.duplicates == 0  # the rest was delivered once
        [row] = [r for r in await pipeline.ledger("amp", bad[1]) if r.state is EventState.DISCARDED]
        assert row.reason == "Amplitude 400 events_with_invalid_fields: event_properties (event 7)"


def test_the_docs_example_loads() -> None:
    import re
    from pathlib import Path

    import yaml

    from headwater.config.workspace import parse_workspace

    doc = Path(__file__).parents[2] / "docs" / "destinations" / "amplitude.md"
    [block] = re.findall(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    workspace = parse_workspace(yaml.safe_load(block), "docs")
    assert workspace.destinations[0].type == "amplitude"
