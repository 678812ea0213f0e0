"""The rules every destination follows, run against every type in the registry.

A new destination is covered as soon as it is in ``headwater.destinations.TYPES``; the one
thing it must add here is an entry in ``CASES``: settings that point it at the fake
destination server and set every secret it can hold (so the suite can check they are never
stored), and, if it does not speak HTTP, how to read what it received.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import importlib.util
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpClient
from headwater.delivery.outcomes import Attempt, Delivered, Discard, Outcome, Retry
from headwater.destinations import TYPES
from headwater.destinations.base import Destination, DestinationSettings, HttpDestination
from headwater.destinations.devsink import Devsink
from headwater.destinations.hubspot.encoder import dedupe_uuid
from headwater.destinations.mapped import MappedDestination
from tests.destinations.conftest import build, outbounds
from tests.fakes import FakeDestination, Reply, Script, always, free_port
from tests.fakes.amplitude import FakeAmplitude
from tests.fakes.mixpanel import FakeMixpanel

Received = Callable[[Destination[Any], FakeDestination], list[dict[str, Any]]]


def _vendor_received(destination: Destination[Any], fake: FakeDestination) -> list[dict[str, Any]]:
    """What a vendor fake took, read back from the requests (vendors reshape events)."""
    if isinstance(fake, FakeAmplitude | FakeMixpanel):
        return fake.as_segment()
    vendor: FakeAmplitude | FakeMixpanel
    vendor = FakeAmplitude() if destination.type == "amplitude" else FakeMixpanel()
    with vendor:
        for i, request in enumerate(fake.requests):  # the generic fake took them: the
            vendor.answer(request, i)  # vendor's fake reads them as the vendor would
        return vendor.as_segment()


def _devsink_received(
    destination: Destination[Any], _fake: FakeDestination
) -> list[dict[str, Any]]:
    assert isinstance(destination, Devsink)
    return [entry["event"] for entry in reversed(destination.recent())]


@dataclass(frozen=True)
class Case:
    settings: Callable[[str], dict[str, Any]]
    """The fake's base URL -> valid settings pointing at it, with every secret set."""
    secrets: tuple[str, ...] = ()
    """Values that must never be stored: not in an Exchange, not in an outcome's reason."""
    received: Received | None = None
    """The events the destination delivered, oldest first; default: what the fake got."""
    key_of: Callable[[str], str] = str
    """The vendor's dedupe key made of a messageId (what ``received`` reports as messageId)."""
    event_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Fields set on every event the suite sends, so that the type's presets take them
    (``type`` and ``event`` for actions that trigger on tracks, an e-mail address, ...)."""


CASES: dict[str, Case] = {
    "webhook": Case(
        lambda url: {"url": f"{url}/hook", "shared_secret": "whsec-s3cret-0001",
                     "headers": {"Authorization": "Bearer tok-0002", "X-Team-Token": "tok-0003"}},
        secrets=("whsec-s3cret-0001", "tok-0002", "tok-0003"),
    ),
    "segment": Case(
        lambda url: {"url": url, "write_key": "wk-s3cret-0004"}, secrets=("wk-s3cret-0004",)
    ),
    "devsink": Case(lambda _url: {"keep": 100_000}, received=_devsink_received),
    "amplitude": Case(
        lambda url: {"endpoint": url, "api_key": "amp-key-0001", "secret_key": "amp-sk-0007",
                     "min_id_length": 1},
        secrets=("amp-key-0001", "amp-sk-0007"), received=_vendor_received,
    ),
    "mixpanel": Case(
        lambda url: {"endpoint": url, "project_token": "mp-token-0001",
                     "api_secret": "mp-secret-0002"},
        secrets=("mp-token-0001", "mp-secret-0002"), received=_vendor_received,
    ),
    "http": Case(
        lambda url: {"url": f"{url}/api", "batch": True, "shared_secret": "hsec-s3cret-0005",
                     "headers": {"Authorization": "Bearer tok-0006"}},
        secrets=("hsec-s3cret-0005", "tok-0006"),
    ),
}  # fmt: skip


def _vendor_received(
    unpack: Callable[[Any], list[dict[str, Any]]],
) -> Received:
    """What a vendor's requests carried, as messageId and properties."""
    return lambda _destination, fake: [e for r in fake.requests for e in unpack(r.json())]


def _customerio(body: Any) -> list[dict[str, Any]]:
    return [{"messageId": e["id"], "properties": e["attributes"]} for e in body["batch"]]


def _hubspot(body: Any) -> list[dict[str, Any]]:
    return [{"messageId": e["uuid"], "properties": e["properties"]} for e in body["inputs"]]


def _intercom(body: Any) -> list[dict[str, Any]]:
    metadata = dict(body["metadata"])
    message_id = metadata.pop("message_id")
    metadata.pop("price", None)
    return [{"messageId": message_id, "properties": metadata}]


def _slack(body: Any) -> list[dict[str, Any]]:
    message_id, _, properties = body["text"].partition(" ")
    return [{"messageId": message_id, "properties": orjson.loads(properties)}]


TRACK = {"type": "track", "event": "Order Completed", "userId": "u1",
         "timestamp": "2024-05-01T10:00:00.000Z"}  # fmt: skip

CASES.update({
    "customerio": Case(
        lambda url: {"site_id": "site-1", "api_key": "cio-s3cret-0007", "endpoint": url},
        secrets=("cio-s3cret-0007",), received=_vendor_received(_customerio), event_fields=TRACK,
    ),
    "hubspot": Case(
        lambda url: {"access_token": "hs-s3cret-0008", "endpoint": url, "hub_id": 42},
        secrets=("hs-s3cret-0008",), received=_vendor_received(_hubspot), key_of=dedupe_uuid,
        event_fields={**TRACK, "context": {"traits": {"email": "a@example.com"}}},
    ),
    "intercom": Case(
        lambda url: {"access_token": "ic-s3cret-0009", "endpoint": url},
        secrets=("ic-s3cret-0009",), received=_vendor_received(_intercom), event_fields=TRACK,
    ),
    "slack": Case(
        lambda url: {"webhook_url": f"{url}/services/T1/B1/slack-s3cret-0010",
                     "templates": {"Order Completed": "{{messageId}} {{properties}}"}},
        secrets=("slack-s3cret-0010",), received=_vendor_received(_slack), event_fields=TRACK,
    ),
})  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ga4_received(_d: Destination[Any], fake: FakeDestination) -> list[dict[str, Any]]:
    """GA4 events back as {messageId, properties}: the message_id param, the other params."""
    out = []
    for request in fake.requests:
        for event in request.json()["events"]:
            params = dict(event["params"])
            message_id = params.pop("message_id")
            params.pop("engagement_time_msec")
            out.append({"messageId": message_id, "properties": params})
    return out


def _braze_received(_d: Destination[Any], fake: FakeDestination) -> list[dict[str, Any]]:
    out = []
    for request in fake.requests:
        for event in request.json().get("events", []):
            properties = dict(event["properties"])
            out.append({"messageId": properties.pop("message_id"), "properties": properties})
    return out


TRACK_ANONYMOUS = {"type": "track", "event": "Video Played", "anonymousId": "anon-1"}
CASES["ga4"] = Case(
    lambda url: {"endpoint": url, "measurement_id": "G-TEST1234", "api_secret": "ga4-s3cret-0007"},
    secrets=("ga4-s3cret-0007",), received=_ga4_received,
    event_fields={**TRACK_ANONYMOUS, "timestamp": _now()},
)  # fmt: skip
CASES["braze"] = Case(
    lambda url: {"endpoint": url, "api_key": "braze-s3cret-0008"},
    secrets=("braze-s3cret-0008",), received=_braze_received,
    event_fields={**TRACK_ANONYMOUS, "userId": "u1", "timestamp": _now()},
)  # fmt: skip

# A ``function`` destination sends nothing itself: the user's handler decides each outcome
# (tests/functions/ prove how its errors become outcomes), so there is no vendor to fake.
NOT_HTTP = frozenset({"function"})
ALL_TYPES = sorted(set(TYPES) - NOT_HTTP)


@pytest.fixture(params=ALL_TYPES)
def type_(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def case(type_: str) -> Case:
    if type_ not in CASES:
        pytest.fail(
            f"destination type {type_!r} is registered in headwater.destinations.TYPES but has "
            f"no entry in CASES in {__file__}: add settings that point it at the fake server"
        )
    return CASES[type_]


def received(
    case: Case, destination: Destination[Any], fake: FakeDestination
) -> list[dict[str, Any]]:
    if case.received is not None:
        return case.received(destination, fake)
    return fake.events(status=None)


def secret_forms(secret: str) -> set[str]:
    """A secret and the encodings it could be stored in (HTTP Basic user name or password)."""
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    forms |= {base64.b64encode(f"{secret}:".encode()).decode()}
    return forms


def assert_no_secrets(case: Case, attempt: Attempt) -> None:
    stored = json.dumps(
        {"request": attempt.exchange.request, "response": attempt.exchange.response,
         "reason": getattr(attempt.outcome, "reason", "")}, default=str,
    )  # fmt: skip
    for secret in case.secrets:
        for form in secret_forms(secret):
            assert form not in stored, f"secret {secret!r} stored as {form!r}: {stored}"


def small(offset: int, track: bool = False, **fields: Any) -> OutboundEvent:
    """An event small enough for the largest batch to stay within the batch byte limit;
    ``track``: a whole track (with a user and a time), which mapped destinations need;
    ``fields`` are added last (a case's ``event_fields``)."""
    message_id = f"m{offset}"
    body: dict[str, Any] = {"messageId": message_id, "properties": {"n": offset}}
    if track:
        body |= {"type": "track", "event": "E", "userId": "u1",
                 "timestamp": "2024-05-01T10:00:00.000Z"}  # fmt: skip
    body |= fields
    return OutboundEvent(offset, message_id, 0, orjson.dumps(body))


# -- the registry and the settings model


def test_every_registered_type_has_a_compliance_case() -> None:
    missing = sorted(set(TYPES) - NOT_HTTP - set(CASES))
    assert not missing, f"add an entry to CASES in {__file__} for: {', '.join(missing)}"
    assert not set(CASES) - set(TYPES), "CASES names a type that is not registered"


def test_type_matches_the_registry_key_and_folder(type_: str) -> None:
    kind = TYPES[type_]
    assert kind.type == type_
    assert re.fullmatch(r"[a-z][a-z0-9_]*", type_), "types are lower-case identifiers"
    # DESIGN.md "Destination anatomy": a folder per destination with the same file names
    folder = importlib.util.find_spec(f"headwater.destinations.{type_}")
    assert folder is not None, f"put the {type_} destination in src/headwater/destinations/{type_}/"
    for part in ("settings", "encoder", "client"):
        module = f"headwater.destinations.{type_}.{part}"
        assert importlib.util.find_spec(module) is not None, f"{module} is missing"
    assert kind.__module__ == f"headwater.destinations.{type_}.client"


def test_batch_limits_are_consistent(type_: str) -> None:
    kind = TYPES[type_]
    assert 1 <= kind.default_batch_events <= kind.max_batch_events
    assert kind.default_batch_bytes > 0


def test_settings_model_forbids_unknown_fields(type_: str, case: Case) -> None:
    model = TYPES[type_].settings_model
    assert issubclass(model, DestinationSettings)
    valid = case.settings("http://127.0.0.1:9")
    model.model_validate(valid)
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**valid, "no_such_setting": 1})
    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]


def test_secret_settings_are_typed_as_secret(type_: str) -> None:
    model = TYPES[type_].settings_model
    for name, field in model.model_fields.items():
        if re.search(r"secret|key|token|password", name):
            kinds = {field.annotation, *typing.get_args(field.annotation)}
            assert SecretStr in kinds, f"{type_}.settings.{name} holds a secret: type it SecretStr"


def test_every_setting_has_a_docstring(type_: str) -> None:
    """The docstrings under the fields are the settings' documentation (DESIGN.md)."""
    model = TYPES[type_].settings_model
    [cls] = ast.parse(inspect.getsource(model)).body
    assert isinstance(cls, ast.ClassDef)
    documented = {
        node.target.id
        for node, after in zip(cls.body, [*cls.body[1:], None], strict=True)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
    }  # fmt: skip
    undocumented = set(model.model_fields) - documented
    assert not undocumented, f"{type_} settings without a docstring: {sorted(undocumented)}"


# -- delivering


async def test_messages_arrive_with_their_message_id(
    type_: str, case: Case, fake: FakeDestination, http: HttpClient
) -> None:
    destination = build(type_, case.settings(fake.url), http)
    sent = outbounds(3, **case.event_fields)
    for event in sent:
        attempt = await destination.deliver([event])
        assert isinstance(attempt.outcome, Delivered), attempt.outcome
        assert attempt.duration_ms >= 0
        assert_no_secrets(case, attempt)
    got = received(case, destination, fake)
    assert [e["messageId"] for e in got] == [case.key_of(e.message_id) for e in sent]
    await destination.close()


@pytest.mark.parametrize("size", ["default", "max"])
async def test_a_full_batch_arrives_complete_in_one_request(
    type_: str, case: Case, fake: FakeDestination, http: HttpClient, size: str
) -> None:
    kind = TYPES[type_]
    batch = kind.default_batch_events if size == "default" else kind.max_batch_events
    destination = build(type_, case.settings(fake.url), http, batch_events=batch)
    track = issubclass(kind, MappedDestination)
    sent = [small(i, track, **case.event_fields) for i in range(batch)]
    assert sum(len(e.payload) for e in sent) <= kind.default_batch_bytes  # as the engine cuts
    attempt = await destination.deliver(sent)
    assert isinstance(attempt.outcome, Delivered), attempt.outcome
    if issubclass(kind, HttpDestination):
        assert len(fake.requests) == 1
    got = received(case, destination, fake)
    assert [e["messageId"] for e in got] == [case.key_of(e.message_id) for e in sent]
    assert [e["properties"] for e in got] == [e.event["properties"] for e in sent]


@dataclass(frozen=True)
class Answer:
    """How the destination answers, and the outcome an HTTP destination must make of it."""

    script: Script
    outcome: type[Outcome]
    status: int | None = None
    after_secs: float | None = None
    refused: bool = False  # nothing listens at the destination's URL
    timeout_secs: float = 30.0  # the client's; only the timeout case waits less than the reply


ANSWERS: dict[str, Answer] = {
    "200": Answer(always(200), Delivered, 200),
    "202": Answer(always(202, body=b""), Delivered, 202),
    "204": Answer(always(204, body=b""), Delivered, 204),
    "500": Answer(always(500, body=b'{"error":"boom"}'), Retry, 500),
    "502 empty": Answer(always(502, body=b""), Retry, 502),
    "503 Retry-After": Answer(always(503, headers={"Retry-After": "7"}), Retry, 503, 7.0),
    "408": Answer(always(408), Retry, 408),
    "429 Retry-After": Answer(always(429, headers={"Retry-After": "3"}), Retry, 429, 3.0),
    "429 Retry-After date": Answer(
        always(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), Retry, 429, 0.0
    ),
    "429 Retry-After inf": Answer(always(429, headers={"Retry-After": "inf"}), Retry, 429, None),
    "429 Retry-After nonsense": Answer(always(429, headers={"Retry-After": "soon"}), Retry, 429),
    "400": Answer(always(400, body=b'{"error":"bad event"}'), Discard, 400),
    "401": Answer(always(401, body=b'{"error":"bad write key"}'), Discard, 401),
    "403": Answer(always(403), Discard, 403),
    "404": Answer(always(404), Discard, 404),
    "413": Answer(always(413), Discard, 413),
    "422": Answer(always(422), Discard, 422),
    "301": Answer(always(301, headers={"Location": "https://elsewhere/"}), Discard, 301),
    "timeout": Answer(lambda _r, _i: Reply(200, delay_secs=2.0), Retry, timeout_secs=0.2),
    "connection refused": Answer(always(200), Retry, refused=True),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_answers_become_outcomes_and_never_exceptions(
    type_: str, case: Case, fake: FakeDestination, http: HttpClient, answer: str
) -> None:
    expected = ANSWERS[answer]
    fake.script = expected.script
    url = f"http://127.0.0.1:{free_port()}" if expected.refused else fake.url
    destination = build(type_, case.settings(url), http, batch_events=2,
                        timeout_secs=expected.timeout_secs)  # fmt: skip
    sent = outbounds(2, **case.event_fields)

    attempt = await destination.deliver(sent)  # must not raise, whatever the answer

    assert_no_secrets(case, attempt)
    outcome = attempt.outcome
    if not issubclass(TYPES[type_], HttpDestination):  # nothing that can fail: always delivered
        assert isinstance(outcome, Delivered)
        assert [e["messageId"] for e in received(case, destination, fake)] == [
            e.message_id for e in sent
        ]
        return
    assert isinstance(outcome, expected.outcome), outcome
    assert outcome.status == expected.status
    if isinstance(outcome, Retry):
        if expected.after_secs is not None:
            assert outcome.after_secs == pytest.approx(expected.after_secs)
        else:
            assert outcome.after_secs is None
    if isinstance(outcome, Retry | Discard):
        assert outcome.reason  # the ledger shows why
    # what went over the wire is kept, for the trace and diagnosis
    request = attempt.exchange.request
    assert request["method"] and str(request["url"]).startswith(url)
    assert request["body"] and isinstance(request["headers"], dict)
    response = attempt.exchange.response
    if expected.status is not None:
        assert response["status"] == expected.status
    else:
        assert response["error"] in ("timeout", "connect")
