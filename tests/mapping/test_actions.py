"""Actions: presets, triggers, the workspace's overrides, additions and disables, and the
payloads of a mapped destination (per-event discards for what cannot be built)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
import pytest
import yaml

from headwater.config import parse_workspace
from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpClient, HttpRequest
from headwater.delivery.outcomes import Delivered, Discard, Filtered, Retry
from headwater.destinations.base import Context, DestinationSettings
from headwater.destinations.mapped import Mapped, MappedDestination
from headwater.errors import ConfigError, MappingError
from headwater.mapping.actions import (
    ActionConfig,
    ActionSpec,
    Unbuildable,
    compile_actions,
    types_only,
)
from tests.destinations.conftest import outbound
from tests.fakes import FakeDestination, Reply

PRESETS = (
    ActionSpec("log_event", 'type = "track"',
               {"user_id": {"@path": "$.userId"}, "device_id": {"@path": "$.anonymousId"},
                "event_type": {"@path": "$.event"}},
               required=("user_id|device_id", "event_type")),
    ActionSpec("log_page", 'type = "page"',
               {"user_id": {"@path": "$.userId"}, "event_type": {"@template": "Viewed {{name}}"}},
               required=("user_id|device_id", "event_type"), kind="log_event"),
    ActionSpec("identify_user", 'type = "identify"',
               {"user_id": {"@path": "$.userId"}, "user_properties": {"@path": "$.traits"}},
               required=("user_id",)),
    ActionSpec("alias", 'type = "alias"', {"from": {"@path": "$.previousId"}}, enabled=False),
)  # fmt: skip


def configs(text: str) -> list[ActionConfig]:
    return [ActionConfig.model_validate(item) for item in yaml.safe_load(text)]


def names(actions: Sequence[Any]) -> list[str]:
    return [a.name for a in actions]


def test_without_actions_the_enabled_presets_run() -> None:
    actions = compile_actions(PRESETS, None, "destinations[0]")
    assert names(actions) == ["log_event", "log_page", "identify_user"]
    [log_event] = [a for a in actions if a.name == "log_event"]
    track = {"type": "track", "event": "Signed Up", "userId": "u1"}
    assert log_event.matches(track) and not log_event.matches({"type": "page"})
    assert log_event.build(track) == {"user_id": "u1", "event_type": "Signed Up"}


def test_override_trigger_and_one_mapping_field_keeps_the_others() -> None:
    actions = compile_actions(PRESETS, configs("""
        - name: log_event
          trigger: 'type = "track" and event != "Debug"'
          mapping: {event_type: {"@template": "web {{event}}"}}
    """), "destinations[0]")  # fmt: skip
    [log_event] = [a for a in actions if a.name == "log_event"]
    assert not log_event.matches({"type": "track", "event": "Debug"})
    event = {"type": "track", "event": "Signed Up", "userId": "u1"}
    assert log_event.build(event) == {"user_id": "u1", "event_type": "web Signed Up"}


def test_add_a_new_action_of_a_preset_kind_and_disable_and_enable_presets() -> None:
    actions = compile_actions(PRESETS, configs("""
        - name: vip_purchase
          kind: log_event
          trigger: 'type = "track" and event = "Order Completed"'
          mapping: {event_type: "VIP purchase", revenue: {"@path": "$.properties.revenue"}}
        - name: identify_user
          enabled: false
        - name: alias
          enabled: true
    """), "destinations[0]")  # fmt: skip
    assert names(actions) == ["log_event", "log_page", "alias", "vip_purchase"]
    vip = actions[-1]
    assert vip.kind == "log_event"
    event = {"type": "track", "event": "Order Completed", "anonymousId": "a1",
             "properties": {"revenue": 5}}  # fmt: skip
    assert vip.matches(event)
    # the kind's fields are inherited (device_id), the action's own added or replaced
    assert vip.build(event) == {"device_id": "a1", "event_type": "VIP purchase", "revenue": 5}


def test_inherit_mapping_false_makes_the_mapping_the_whole_payload() -> None:
    [_, _, identify] = compile_actions(PRESETS, configs("""
        - name: identify_user
          inherit_mapping: false
          mapping: {user_id: {"@path": "$.traits.email"}}
    """), "d")  # fmt: skip
    assert identify.build({"type": "identify", "traits": {"email": "e"}}) == {"user_id": "e"}


def test_a_missing_required_field_names_it_and_where_it_was_mapped_from() -> None:
    [log_event, *_] = compile_actions(PRESETS, None, "d")
    result = log_event.build({"type": "track", "event": "X"})
    assert isinstance(result, Unbuildable)
    assert result.reason == (
        "missing required field user_id or device_id (mapped from $.userId / $.anonymousId)"
        " for action log_event"
    )
    assert log_event.build({"type": "track", "event": None, "userId": "u"}) == Unbuildable(
        "missing required field event_type (mapped from $.event) for action log_event",
        ("event_type",),
    )


@pytest.mark.parametrize(
    ("text", "place", "words"),
    [
        ("- {name: log_event, trigger: 'type = '}", "actions[0].trigger", "expected a value"),
        ("- {name: log_event, mapping: {user_id: {'@pth': x}}}", "actions[0].mapping.user_id.@pth",
         "unknown directive"),
        ("- {name: new_one, trigger: 'type = \"track\"'}", "actions[0].kind", "say which kind"),
        ("- {name: new_one, kind: nope, trigger: 'type = \"track\"'}", "actions[0].kind",
         "unknown action kind 'nope'; the kinds are alias, identify_user, log_event"),
        ("- {name: new_one, kind: log_event}", "actions[0].trigger", "needs a trigger"),
        ("- {name: log_page, kind: identify_user}", "actions[0].kind", "log_event preset"),
        ("- {name: log_event}\n- {name: log_event}", "actions[1].name", "used by two actions"),
        ("- {name: identify_user, inherit_mapping: false, mapping: {x: 1}}",
         "actions[0].mapping.user_id", "needs user_id"),
        ("- {name: log_event, inherit_mapping: false, mapping: {'@path': '$.'}}",
         "actions[0].mapping", "an object of fields"),
    ],
)  # fmt: skip
def test_errors_name_the_place(text: str, place: str, words: str) -> None:
    with pytest.raises(MappingError) as caught:
        compile_actions(PRESETS, configs(text), "destinations[3]")
    assert caught.value.where == f"destinations[3].{place}"
    assert words in caught.value.message


# -- from the workspace file


def workspace(actions: str, settings: str = "{url: 'http://127.0.0.1:9/x'}") -> str:
    return f"""
sources: [{{name: web}}]
destinations:
  - name: api
    type: http
    sources: [web]
    settings: {settings}
    actions:
{actions}
"""


def load(text: str) -> Any:
    return parse_workspace(yaml.safe_load(text), "ws.yaml")


def test_the_workspace_accepts_actions_for_a_mapped_destination() -> None:
    ws = load(workspace("""
      - name: send
        trigger: 'type = "track"'
      - name: identify
        kind: send
        trigger: 'type = "identify"'
        mapping: {id: {"@path": "$.userId"}}
"""))  # fmt: skip
    assert [a.name for a in ws.destinations[0].actions] == ["send", "identify"]


@pytest.mark.parametrize(
    ("actions", "settings", "message"),
    [
        ("      - {name: send, trigger: 'type == 1'}", None,
         "ws.yaml: destinations[0].actions[0].trigger: column 6:"),
        ("      - {name: x, kind: send, trigger: all, mapping: {a: {'@path': 'b['}}}", None,
         "ws.yaml: destinations[0].actions[0].mapping.a.@path: 'b[': '[' at position 2"),
        ("      - {name: send, trigers: all}", None,
         "ws.yaml: destinations[0].actions[0].trigers: unknown field"),
        ("      []", "{url: 'http://127.0.0.1:9/x', mapping: {id: {'@if': {exists: 1}}, x: {'@no': 1}}}",
         "ws.yaml: destinations[0].settings.mapping.x.@no: unknown directive @no"),
    ],
)  # fmt: skip
def test_workspace_errors_stop_loading_with_the_place(
    actions: str, settings: str | None, message: str
) -> None:
    text = workspace(actions) if settings is None else workspace(actions, settings)
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_actions_on_a_destination_that_does_not_map_are_refused() -> None:
    text = workspace("      - {name: send}").replace("type: http", "type: webhook")
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert "destinations[0].actions: a webhook destination has no actions" in str(caught.value)


# -- a mapped destination's batches


class VendorSettings(DestinationSettings):
    url: str


class Vendor(MappedDestination[VendorSettings]):
    """A vendor with two endpoints, one per kind, taking arrays of payloads."""

    type = "vendor"
    settings_model = VendorSettings
    max_batch_events = 100
    presets: ClassVar[tuple[ActionSpec, ...]] = PRESETS

    def encode_group(self, kind: str, items: Sequence[Mapped]) -> HttpRequest:
        body = orjson.dumps([{"offset": i.event.offset, **i.payload} for i in items])
        return HttpRequest("POST", f"{self.settings.url}/{kind}", {}, body)


def vendor(fake: FakeDestination, http: HttpClient, actions: str | None = None) -> Vendor:
    context = Context(http, 5.0, 100, None if actions is None else tuple(configs(actions)))
    return Vendor("amp", VendorSettings(url=fake.url), context)


async def test_a_batch_goes_as_one_request_per_action_kind_and_unbuildable_events_are_discarded(
    fake: FakeDestination, http: HttpClient
) -> None:
    events = [
        outbound(1, type="track", event="A"),
        outbound(2, type="identify", traits={"plan": "pro"}),
        outbound(3, type="track", event="B", userId=None),  # neither user_id nor device_id
        outbound(4, type="page", name="Home"),
        outbound(5, type="alias", previousId="p"),  # the alias preset is off
    ]
    attempt = await vendor(fake, http).deliver(events)
    assert [r.path for r in fake.requests] == ["/log_event", "/identify_user"]
    log_events, identifies = (r.json() for r in fake.requests)
    assert [(e["offset"], e["event_type"]) for e in log_events] == [(1, "A"), (4, "Viewed Home")]
    assert identifies == [{"offset": 2, "user_id": "u1", "user_properties": {"plan": "pro"}}]
    assert attempt.outcome == Delivered(200)
    assert set(attempt.per_event) == {3, 5}
    assert attempt.per_event[3] == Discard(
        "missing required field user_id or device_id (mapped from $.userId / $.anonymousId)"
        " for action log_event"
    )
    unsubscribed = attempt.per_event[5]
    assert isinstance(unsubscribed, Filtered)  # not subscribed is not a failure
    assert unsubscribed.reason.startswith("no action's trigger matches (type=alias, event=")


async def test_each_event_takes_the_outcome_of_its_request(
    fake: FakeDestination, http: HttpClient
) -> None:
    fake.script = lambda r, _i: Reply(503 if r.path == "/identify_user" else 200)
    events = [outbound(1), outbound(2), outbound(3, type="identify")]
    attempt = await vendor(fake, http).deliver(events)
    assert attempt.outcome == Delivered(200)  # the largest request's
    assert list(attempt.per_event) == [3]
    assert isinstance(attempt.per_event[3], Retry)
    assert attempt.exchange.request["url"] == f"{fake.url}/identify_user"  # the failure is kept


async def test_a_batch_with_nothing_to_send_sends_nothing_and_is_discarded(
    fake: FakeDestination, http: HttpClient
) -> None:
    events = [outbound(1, userId=None), outbound(2, userId=None)]
    attempt = await vendor(fake, http).deliver(events)
    assert fake.requests == []
    assert isinstance(attempt.outcome, Discard)
    assert "missing required field user_id or device_id" in attempt.outcome.reason
    assert set(attempt.per_event) == {1, 2}


async def test_an_event_matching_two_actions_is_sent_by_both(
    fake: FakeDestination, http: HttpClient
) -> None:
    destination = vendor(fake, http, """
        - name: copy
          kind: identify_user
          trigger: 'type = "track"'
    """)  # fmt: skip
    attempt = await destination.deliver([outbound(1, event="A")])
    assert [r.path for r in fake.requests] == ["/log_event", "/identify_user"]
    assert attempt.outcome == Delivered(200) and not attempt.per_event


@pytest.mark.parametrize(
    ("trigger", "types"),
    [
        ('type = "track"', {"track"}),
        (' type="page" or type = "screen" ', {"page", "screen"}),
        ('type = "track" and event = "Order Completed"', None),
        ('type = "track" or event = "x"', None),
        ('event = "track"', None),
        ('type != "track"', None),
    ],
)
def test_triggers_that_only_name_types_are_decided_by_type(trigger: str, types: Any) -> None:
    assert types_only(trigger) == (None if types is None else frozenset(types))


def test_picking_actions_by_type_matches_what_evaluating_every_trigger_picks() -> None:
    """The dispatch by type is only a shortcut: for any event, the same actions in the same
    order as evaluating each trigger (including triggers it cannot decide, odd types, and
    events that are not objects)."""
    text = """
    - {name: vip, kind: log_event, trigger: 'type = "track" and properties.vip = true',
       mapping: {id: {"@path": "$.messageId"}}}
    - {name: views, kind: log_event, trigger: 'type = "page" or type = "screen"',
       mapping: {id: {"@path": "$.messageId"}}}
    - {name: odd, kind: log_event, trigger: 'event = "track"', mapping: {id: {"@path": "$.messageId"}}}
    """
    destination = Vendor("amp", VendorSettings(url="http://127.0.0.1:9"),
                         Context(None, 5.0, 100, tuple(configs(text))))  # type: ignore[arg-type]  # fmt: skip
    bodies: list[Any] = [
        {"type": "track", "properties": {"vip": True}}, {"type": "track", "event": "track"},
        {"type": "page"}, {"type": "screen", "event": "track"}, {"type": "identify"},
        {"type": 7, "event": "track"}, {"event": "track"}, {"type": "TRACK"}, [1, 2], "x",
    ]  # fmt: skip
    bodies = [{"userId": "u1", "event": "E", **b} if isinstance(b, dict) else b for b in bodies]
    events = [OutboundEvent(i, f"m{i}", 0, orjson.dumps(b)) for i, b in enumerate(bodies)]
    mapped, refused = destination.map_events(events)
    got = [(m.event.offset, m.action.name) for m in mapped]
    matching = [(e, a) for e in events for a in destination.actions if a.matches(e.event)]
    want = [(e.offset, a.name) for e, a in matching if type(a.build(e.event)) is not Unbuildable]
    assert got == want and {"vip", "views", "odd"} <= {name for _, name in got}
    unmatched = {e.offset for e in events} - {e.offset for e, _ in matching}
    assert {o for o, r in refused.items() if isinstance(r, Filtered)} == unmatched
