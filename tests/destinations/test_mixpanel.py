"""The mixpanel destination against the fake Mixpanel: mapping, batching, answers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from headwater.delivery.http import REDACTED, HttpClient
from headwater.delivery.outcomes import Attempt, Delivered, Discard, EventState, Retry
from headwater.destinations.base import Context
from headwater.destinations.mixpanel import Mixpanel
from headwater.destinations.mixpanel.encoder import insert_id
from headwater.mapping.actions import ActionConfig
from tests.delivery.conftest import FAST, Pipeline, event, make_pipeline  # noqa: F401
from tests.destinations.conftest import outbound, outbounds
from tests.fakes.mixpanel import FakeMixpanel

TOKEN, SECRET = "mp-token-0001", "mp-secret-0002"
UUID = "7a28c178-2a33-446d-96d5-e9eb9369c7fd"


@pytest.fixture
def mp() -> Iterator[FakeMixpanel]:
    fake = FakeMixpanel(TOKEN, SECRET, service_account=("sa.user", "sa-secret-3", "42"))
    with fake:
        yield fake


def mixpanel(
    fake: FakeMixpanel, http: HttpClient, batch: int = 100,
    actions: list[dict[str, Any]] | None = None, **settings: Any,
) -> Mixpanel:  # fmt: skip
    given = {"endpoint": fake.url, "project_token": TOKEN, "api_secret": SECRET, **settings}
    configs = tuple(ActionConfig.model_validate(a) for a in actions) if actions else None
    model = Mixpanel.settings_model.model_validate(given)
    return Mixpanel("mp", model, Context(http, 5.0, batch, configs))


def assert_no_secret(attempt: Attempt) -> None:
    stored = orjson.dumps({"exchange": [attempt.exchange.request, attempt.exchange.response],
                           "reason": getattr(attempt.outcome, "reason", "")}).decode()  # fmt: skip
    for secret in (TOKEN, SECRET, base64.b64encode(f"{SECRET}:".encode()).decode()):
        assert secret not in stored


async def test_a_track_is_imported_in_strict_mode(mp: FakeMixpanel, http: HttpClient) -> None:
    e = outbound(1, messageId=UUID, anonymousId="anon-1",
                 context={"ip": "203.0.113.9", "library": {"name": "analytics-python",
                          "version": "2.3"}, "page": {"url": "https://x.example/p"}},
                 properties={"revenue": 9.99, "distinct_id": "spoofed"})  # fmt: skip
    attempt = await mixpanel(mp, http).deliver([e])
    assert attempt.outcome == Delivered(200)
    [request] = mp.requests
    assert (request.path, request.query) == ("/import", {"strict": "1"})
    assert (
        request.headers["Authorization"] == "Basic " + base64.b64encode(b"mp-secret-0002:").decode()
    )
    assert request.json() == [{"event": "Order Completed", "properties": {
        "revenue": 9.99, "distinct_id": "u1", "$insert_id": UUID, "time": 1714557600000,
        "ip": "203.0.113.9", "$device_id": "anon-1", "$user_id": "u1",
        "$current_url": "https://x.example/p", "mp_lib": "Headwater: analytics-python",
        "$lib_version": "2.3", "$source": "headwater",
    }}]  # fmt: skip
    assert attempt.exchange.request["headers"]["Authorization"] == REDACTED  # type: ignore[index]
    assert_no_secret(attempt)


def test_insert_ids_that_mixpanel_would_refuse_are_derived_stably() -> None:
    assert insert_id(UUID) == UUID
    long = "ajs-next-1714557600000-0123456789abcdef0123"
    assert insert_id(long) == insert_id(long) and len(insert_id(long)) == 32
    assert insert_id("a b") != "a b" and insert_id(long) != insert_id(long + "x")


async def test_a_long_message_id_keeps_the_original_as_message_id(
    mp: FakeMixpanel, http: HttpClient
) -> None:
    e = outbound(1)  # msg-<uuid>: 40 characters
    await mixpanel(mp, http).deliver([e])
    [record] = mp.records
    assert record["properties"]["$insert_id"] == insert_id(e.message_id)
    assert record["properties"]["message_id"] == e.message_id


async def test_page_identify_and_group(mp: FakeMixpanel, http: HttpClient) -> None:
    sent = [outbound(1, type="page", name="Pricing"),
            outbound(2, type="identify", traits={"email": "a@x.example", "firstName": "Ada", "plan": "pro"}),
            outbound(3, type="group", groupId="acme", traits={"seats": 3})]  # fmt: skip
    attempt = await mixpanel(mp, http).deliver(sent)
    assert attempt.outcome == Delivered(200) and not attempt.per_event
    assert [r.path for r in mp.requests] == ["/import", "/engage", "/groups"]
    assert mp.records[0]["event"] == "Viewed Pricing"
    assert mp.profiles == [{"$token": TOKEN, "$distinct_id": "u1", "$ip": "0",
                            "$set": {"$email": "a@x.example", "$first_name": "Ada", "plan": "pro"}}]  # fmt: skip
    assert mp.group_profiles == [{"$token": TOKEN, "$group_key": "$group_id",
                                  "$group_id": "acme", "$set": {"seats": 3}}]  # fmt: skip
    assert_no_secret(attempt)


async def test_service_account_auth(mp: FakeMixpanel, http: HttpClient) -> None:
    dest = mixpanel(mp, http, api_secret=None, service_account_username="sa.user",
                    service_account_secret="sa-secret-3", project_id="42")  # fmt: skip
    attempt = await dest.deliver(outbounds(1))
    assert attempt.outcome == Delivered(200)
    assert mp.requests[0].query == {"strict": "1", "project_id": "42"}


def test_a_service_account_needs_its_secret_and_project() -> None:
    with pytest.raises(ValueError, match="set service_account_secret"):
        Mixpanel.settings_model.model_validate(
            {"project_token": TOKEN, "service_account_username": "sa.user"})  # fmt: skip
    with pytest.raises(ValueError, match="needs project_id"):
        Mixpanel.settings_model.model_validate({"project_token": TOKEN,
            "service_account_username": "sa.user", "service_account_secret": "s"})  # fmt: skip


async def test_2000_records_a_request(mp: FakeMixpanel, http: HttpClient) -> None:
    attempt = await mixpanel(mp, http, batch=2000).deliver(outbounds(2000))
    assert attempt.outcome == Delivered(200) and len(mp.requests) == 1
    assert len(mp.records) == 2000


async def test_bad_credential_discards_the_batch(mp: FakeMixpanel, http: HttpClient) -> None:
    mp.reject_key = True
    attempt = await mixpanel(mp, http).deliver(outbounds(2))
    assert attempt.outcome == Discard("Mixpanel 401: Invalid API secret", 401)
    assert_no_secret(attempt)


async def test_429_and_5xx_retry(mp: FakeMixpanel, http: HttpClient, fake: Any) -> None:
    mp.throttle = 1
    attempt = await mixpanel(mp, http).deliver(outbounds(1))
    assert isinstance(attempt.outcome, Retry) and attempt.outcome.status == 429
    assert attempt.outcome.reason.startswith("Mixpanel 429 rate limited (2 GB of JSON per minute")
    from tests.fakes import always

    fake.script = always(429, headers={"Retry-After": "12"}, body=b"{}")
    attempt = await mixpanel(fake, http).deliver(outbounds(1))
    assert isinstance(attempt.outcome, Retry) and attempt.outcome.after_secs == 12.0
    fake.script = always(502, body=b"bad gateway")
    attempt = await mixpanel(fake, http).deliver(outbounds(1))
    assert attempt.outcome == Retry("Mixpanel 502: bad gateway", 502, None)


async def test_413_halves_the_request(mp: FakeMixpanel, http: HttpClient) -> None:
    mp.max_bytes = 4_000
    sent = outbounds(8, properties={"blob": "x" * 500})
    attempt = await mixpanel(mp, http).deliver(sent)
    assert attempt.outcome == Delivered(200)
    assert mp.requests[0].status == 413 and len(mp.records) == 8


async def test_failed_records_are_discarded_and_the_rest_delivered(
    mp: FakeMixpanel, http: HttpClient
) -> None:
    sent = outbounds(3)
    mp.invalid[insert_id(sent[1].message_id)] = "properties.plan"
    attempt = await mixpanel(mp, http).deliver(sent)
    assert attempt.outcome == Delivered(400)
    assert attempt.per_event == {sent[1].offset: Discard(
        "Mixpanel 400 failed_records: properties.plan (record 1): 'properties.plan' is invalid", 400)}  # fmt: skip
    assert len(mp.records) == 2


async def test_missing_fields_and_bad_times_are_discarded_per_event(
    mp: FakeMixpanel, http: HttpClient
) -> None:
    attempt = await mixpanel(mp, http).deliver([outbound(1, timestamp="soon"), outbound(2)])
    bad = attempt.per_event[1]
    assert isinstance(bad, Discard) and bad.reason.startswith("time 'soon' is not an ISO-8601")
    actions = [{"name": "track_event", "mapping": {"distinct_id": {"@path": "$.traits.nope"}}}]
    attempt = await mixpanel(mp, http, actions=actions).deliver([outbound(3)])
    assert isinstance(attempt.outcome, Discard)
    assert (
        "missing required field distinct_id (mapped from $.traits.nope)" in attempt.outcome.reason
    )


async def test_the_workspace_overrides_a_mapping(mp: FakeMixpanel, http: HttpClient) -> None:
    actions = [{"name": "track_event", "mapping": {"plan": {"@path": "$.context.plan"}}}]
    await mixpanel(mp, http, actions=actions).deliver([outbound(1, context={"plan": "pro"})])
    assert mp.records[0]["properties"]["plan"] == "pro"


async def test_partial_batch_through_the_engine(make_pipeline: Any) -> None:  # noqa: F811
    mp = FakeMixpanel(TOKEN, SECRET)
    with mp:
        dest = {"name": "mp", "type": "mixpanel", "sources": ["website"],
                "settings": {"endpoint": mp.url, "project_token": TOKEN, "api_secret": SECRET},
                "delivery": {**FAST, "batch_max_events": 10}}  # fmt: skip
        pipeline: Pipeline = await make_pipeline([dest])
        records = [event(timestamp="2024-05-01T10:00:00.000Z") for _ in range(10)]
        ids = [r.message_id for r in records]
        bad, good = [ids[2], ids[5]], [m for i, m in enumerate(ids) if i not in (2, 5)]
        mp.invalid.update({bad[0]: "properties.time", bad[1]: "properties.plan"})
        await pipeline.send(records)
        await pipeline.wait_states("mp", good, EventState.DELIVERED, within=30)
        await pipeline.wait_states("mp", bad, EventState.DISCARDED, within=30)
        taken = [r["properties"]["$insert_id"] for r in mp.records]
        assert sorted(taken) == sorted(good)  # each once: nothing was sent again
        [row] = [r for r in await pipeline.ledger("mp", bad[0]) if r.state is EventState.DISCARDED]
        assert row.reason is not None
        assert row.reason.startswith("Mixpanel 400 failed_records: properties.time (record")


def test_the_docs_example_loads() -> None:
    import re
    from pathlib import Path

    import yaml

    from headwater.config.workspace import parse_workspace

    doc = Path(__file__).parents[2] / "docs" / "destinations" / "mixpanel.md"
    [block] = re.findall(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    workspace = parse_workspace(yaml.safe_load(block), "docs")
    assert workspace.destinations[0].type == "mixpanel"
