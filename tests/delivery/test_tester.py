"""Destination tests (delivery/tester.py) against the fake destination server: the request a
test sends is the one delivery would send, secrets are redacted, the vendor's answer and the
outcome are shown, dry runs send nothing, and validation endpoints are used by default."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import REDACTED, HttpClient, HttpRequest, HttpResponse
from headwater.delivery.tester import RecordingHttp, run_test, sample_event
from headwater.destinations.base import Context, Destination
from headwater.destinations.webhook import Webhook
from headwater.destinations.webhook.settings import WebhookSettings
from tests.destinations.conftest import build, outbound
from tests.fakes import FakeDestination, Reply, always

SECRET = "s3cret-signing-key-91"
TOKEN = "Bearer vendor-token-5521"


def event_of(offset: int = 1) -> dict[str, Any]:
    return outbound(offset).event


def webhook(fake: FakeDestination, http: HttpClient) -> Destination[Any]:
    settings = {"url": f"{fake.url}/hook?key={SECRET}", "shared_secret": SECRET,
                "headers": {"Authorization": TOKEN, "X-Team": "growth"}}  # fmt: skip
    return build("webhook", settings, http)


async def test_send_makes_exactly_the_request_delivery_makes(
    fake: FakeDestination, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "headwater.delivery.tester")
    event = event_of()
    await webhook(fake, http).deliver(
        [OutboundEvent(0, event["messageId"], 1, orjson.dumps(event))]
    )
    recording = RecordingHttp(http)
    test = await run_test(webhook(fake, recording), recording, event, send=True)
    delivered, tested = fake.requests
    assert (tested.method, tested.path, tested.body) == (delivered.method, delivered.path,
                                                         delivered.body)  # fmt: skip
    for name in ("Authorization", "X-Signature", "X-Team", "Content-Type"):
        assert tested.headers[name] == delivered.headers[name]
    doc = test.as_dict()
    assert doc["mode"] == "send" and doc["sent"] is True
    assert doc["outcome"] == {"result": "delivered", "status": 200, "reason": None}
    [shown] = doc["requests"]
    assert shown["request"]["headers"]["Authorization"] == REDACTED
    assert shown["request"]["headers"]["X-Team"] == REDACTED  # user headers may carry tokens
    assert shown["response"]["status"] == 200 and shown["response"]["body"] == '{"ok":true}'
    assert orjson.loads(shown["request"]["body"]) == event
    text = orjson.dumps(doc).decode()
    assert SECRET not in text and "vendor-token-5521" not in text  # the URL's key too
    assert f"key={REDACTED}" in shown["request"]["url"]
    assert "not written to the log or the delivery ledger" in doc["note"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "headwater.delivery.tester"]
    assert "destination test of dest (webhook): mode send" in line and "delivered" in line
    assert SECRET not in line and "vendor-token" not in line


async def test_a_refusal_is_shown_with_the_vendors_answer(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = always(401, body=b'{"error":"invalid api key"}')
    recording = RecordingHttp(http)
    test = (await run_test(webhook(fake, recording), recording, event_of(), send=True)).as_dict()
    assert test["outcome"]["result"] == "discard" and test["outcome"]["status"] == 401
    assert "invalid api key" in test["outcome"]["reason"]
    assert test["requests"][0]["response"]["body"] == '{"error":"invalid api key"}'
    fake.script = always(503, headers={"Retry-After": "7"})
    test = (await run_test(webhook(fake, recording), recording, event_of(), send=True)).as_dict()
    assert test["outcome"]["result"] == "retry" and test["outcome"]["retryAfterSecs"] == 7


async def test_dry_run_shows_the_request_and_sends_nothing(
    fake: FakeDestination, http: HttpClient
) -> None:
    recording = RecordingHttp(http)
    test = (await run_test(webhook(fake, recording), recording, event_of())).as_dict()
    assert fake.requests == [] and recording.sent == []
    assert test["mode"] == "dry_run" and test["sent"] is False
    assert test["outcome"]["result"] == "not_sent"
    [shown] = test["requests"]
    assert shown["response"] is None and shown["request"]["method"] == "POST"
    assert shown["request"]["headers"]["X-Signature"]  # computed, as it would be sent


async def test_http_destination_shows_each_action_and_its_payload(
    fake: FakeDestination, http: HttpClient
) -> None:
    settings = {"url": f"{fake.url}/api", "mapping": {"id": {"@path": "$.userId"}},
                "headers": {"X-Api-Key": SECRET}}  # fmt: skip
    actions = [{"name": "send", "trigger": 'type = "track"'},
               {"name": "identify", "kind": "send", "trigger": 'type = "identify"',
                "mapping": {"who": {"@path": "$.traits.email"}}}]  # fmt: skip
    from headwater.mapping.actions import ActionConfig

    recording = RecordingHttp(http)
    kind = build("http", settings, recording).__class__
    dest = kind("api", kind.settings_model.model_validate(settings),
                Context(recording, 5.0, 1, tuple(ActionConfig.model_validate(a) for a in actions)))  # fmt: skip
    test = (await run_test(dest, recording, event_of(), send=True)).as_dict()
    rows = {a["name"]: a for a in test["mapping"]["actions"]}
    assert rows["send"]["decision"] == "built" and rows["send"]["payload"] == {"id": "u1"}
    assert rows["identify"] == {"name": "identify", "kind": "send", "trigger": 'type = "identify"',
                                "matched": False, "decision": "not triggered"}  # fmt: skip
    [request] = fake.requests
    assert request.json() == {"id": "u1"} and request.headers["X-Api-Key"] == SECRET
    assert test["requests"][0]["request"]["headers"]["X-Api-Key"] == REDACTED


async def test_a_missing_required_field_is_named_and_nothing_is_sent(
    fake: FakeDestination, http: HttpClient
) -> None:
    from headwater.destinations.http import Http
    from headwater.mapping.actions import ActionSpec

    class Strict(Http):
        @classmethod
        def presets_for(cls, settings: Any) -> tuple[ActionSpec, ...]:
            return (ActionSpec("send", "all", {"email": {"@path": "$.traits.email"}},
                               required=("email",)),)  # fmt: skip

    recording = RecordingHttp(http)
    dest = Strict("strict", Strict.settings_model.model_validate({"url": f"{fake.url}/x"}),
                  Context(recording, 5.0))  # fmt: skip
    test = (await run_test(dest, recording, event_of(), send=True)).as_dict()
    [row] = test["mapping"]["actions"]
    assert row["decision"] == "unbuildable" and "email" in row["reason"]
    assert test["outcome"]["result"] == "discard" and "email" in test["outcome"]["reason"]
    assert fake.requests == []


class Validating(Webhook):
    """A webhook with a validation endpoint, as GA4's /debug/mp/collect."""

    def test_request(self, events: Sequence[OutboundEvent]) -> tuple[HttpRequest, ...]:
        real = self.encode(events)
        return (HttpRequest("POST", self.settings.url + "/debug", real.headers, real.body,
                            real.secret_headers),)  # fmt: skip

    def read_test_answer(self, response: HttpResponse) -> list[str]:
        return [m["description"] for m in orjson.loads(response.body)["validationMessages"]]


async def test_a_validation_endpoint_is_the_default_and_its_messages_are_shown(
    fake: FakeDestination, http: HttpClient
) -> None:
    answer = {"validationMessages": [{"description": f"event name is bad; key {SECRET}"}]}
    fake.script = lambda _r, _i: Reply(200, orjson.dumps(answer))
    recording = RecordingHttp(http)
    settings = WebhookSettings.model_validate({"url": f"{fake.url}/mp", "shared_secret": SECRET})
    dest = Validating("ga", settings, Context(recording, 5.0))
    test = (await run_test(dest, recording, event_of())).as_dict()
    [request] = fake.requests
    assert request.path == "/mp/debug"
    assert test["mode"] == "validate" and test["outcome"]["result"] == "validated"
    assert test["messages"] == [f"event name is bad; key {REDACTED}"]
    test = (await run_test(dest, recording, event_of(), send=True)).as_dict()
    assert fake.requests[-1].path == "/mp" and test["mode"] == "send"


def test_the_sample_is_of_a_type_the_destination_sends(http: HttpClient) -> None:
    from headwater.mapping.actions import ActionConfig

    kind = build("http", {"url": "http://127.0.0.1:9/x"}, http).__class__
    only_identify = (ActionConfig.model_validate({"name": "send", "trigger": 'type = "identify"'}),)
    dest = kind("api", kind.settings_model.model_validate({"url": "http://127.0.0.1:9/x"}),
                Context(http, 5.0, 1, only_identify))  # fmt: skip
    assert sample_event(dest)["type"] == "identify"
    assert sample_event(build("webhook", {"url": "http://127.0.0.1:9/x"}, http))["type"] == "track"
