"""Tracking plans: the e-commerce plan applied to events under each enforcement setting."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from headwater.processor.protocols import (
    PlanEnforcer,
    PlanVerdict,
    TrackingPlanConfig,
    check_tracking_plans,
)
from headwater.processor.protocols.segment_import import import_segment_plan

FIXTURE = Path(__file__).parent / "fixtures" / "ecommerce_plan.json"
BASE = import_segment_plan(json.loads(FIXTURE.read_text()), name="ecommerce", sources=["website"])


def enforcer(**enforcement: Any) -> PlanEnforcer:
    data = BASE.model_dump(by_alias=True)
    data["enforcement"] = enforcement
    return PlanEnforcer(TrackingPlanConfig.model_validate(data))


def order(**properties: Any) -> dict[str, Any]:
    """A valid Order Completed, with ``properties`` merged in (None removes one)."""
    props: dict[str, Any] = {
        "order_id": "50314b8e9bcf000000000000",
        "affiliation": "Google Store",
        "total": 27.50,
        "revenue": 25.00,
        "shipping": 3,
        "tax": 2,
        "discount": 2.5,
        "coupon": "hasbros",
        "currency": "USD",
        "products": [
            {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly",
             "price": 19, "quantity": 1, "url": "https://www.example.com/product/path"},
        ],
    }  # fmt: skip
    for key, value in properties.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    return event("track", event="Order Completed", properties=props)


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": f"msg-{kind}-1",
        "userId": "user-7",
        "context": {"library": {"name": "analytics.js", "version": "2.11.1"},
                    "app": {"version": "4.2.0"}},
        "sentAt": "2024-06-11T08:40:02.000Z",
        "timestamp": "2024-06-11T08:40:01.000Z",
        **fields,
    }  # fmt: skip


def apply(enf: PlanEnforcer, ev: dict[str, Any]) -> PlanVerdict:
    """Apply and check that the input was not changed."""
    before = copy.deepcopy(ev)
    verdict = enf.apply(ev, source="website")
    assert ev == before, "apply() changed its input"
    return verdict


ENFORCEMENTS = [
    {},
    {"unplanned_events": "block", "unplanned_properties": "omit", "on_violation": "block"},
    {"unplanned_properties": "omit", "on_violation": "omit_properties"},
    {"forward_blocked_to": "quarantine", "forward_violations_to": "audit"},
]


@pytest.mark.parametrize("settings", ENFORCEMENTS)
def test_a_valid_event_passes_unchanged_under_every_setting(settings: dict[str, Any]) -> None:
    ev = order()
    verdict = apply(enforcer(**settings), ev)
    assert verdict.passed
    assert verdict.event is ev
    assert verdict.violations == () and verdict.unplanned == ()
    assert verdict.protocols() == {} and verdict.violation_events == ()
    assert verdict.rule == 'TRACK "Order Completed"'


def test_a_missing_required_property_is_recorded_and_the_event_passes() -> None:
    verdict = apply(enforcer(), order(order_id=None))
    assert verdict.passed
    assert verdict.event["properties"] == order(order_id=None)["properties"]
    assert verdict.event["context"]["protocols"] == {
        "violations": [{"type": "Required", "field": "properties.order_id",
                        "description": "properties.order_id is required"}]
    }  # fmt: skip
    assert verdict.event["context"]["library"] == {"name": "analytics.js", "version": "2.11.1"}
    [v] = verdict.violations
    assert (v.expected, v.got, v.rule) == ("present", "missing", 'TRACK "Order Completed"')


def test_a_violation_blocks_the_event_when_the_plan_says_block() -> None:
    ev = order(order_id=None)
    verdict = apply(enforcer(on_violation="block", forward_blocked_to="quarantine"), ev)
    assert verdict.blocked == "violation" and not verdict.passed
    assert verdict.event is ev  # kept as received, for the blocked store and a later re-send
    assert verdict.forward_to == "quarantine"
    assert [v.field for v in verdict.violations] == ["properties.order_id"]


def test_a_blocked_event_is_not_forwarded_without_forward_blocked_to() -> None:
    verdict = apply(enforcer(on_violation="block"), order(revenue="25"))
    assert verdict.blocked == "violation" and verdict.forward_to is None


def test_wrong_types_are_listed_with_what_was_expected() -> None:
    verdict = apply(enforcer(), order(revenue="25.00", products=[{"product_id": "p1",
                                                                  "price": "19"}]))  # fmt: skip
    assert [(v.type, v.field, v.expected, v.got) for v in verdict.violations] == [
        ("Invalid Type", "properties.revenue", "number", "string"),
        ("Invalid Type", "properties.products.0.price", "number", "string"),
    ]
    assert verdict.event["context"]["protocols"]["violations"][0] == {
        "type": "Invalid Type", "field": "properties.revenue",
        "description": "Invalid type. Expected: number, given: string",
    }  # fmt: skip
    assert verdict.event["properties"]["revenue"] == "25.00"  # allow: kept


def test_omit_properties_removes_every_invalid_property_and_keeps_the_rest() -> None:
    ev = order(revenue="25.00", currency="usd", products=[{"product_id": "p1", "price": "19"}])
    verdict = apply(enforcer(on_violation="omit_properties"), ev)
    assert verdict.passed
    assert verdict.omitted_on_violation == ("revenue", "currency", "products")
    props = verdict.event["properties"]
    assert "revenue" not in props and "currency" not in props and "products" not in props
    assert props["order_id"] == "50314b8e9bcf000000000000" and props["tax"] == 2
    protocols = verdict.event["context"]["protocols"]
    assert protocols["omitted_on_violation"] == ["revenue", "currency", "products"]
    assert [v["field"] for v in protocols["violations"]] == [
        "properties.revenue", "properties.currency", "properties.products.0.price"]  # fmt: skip
    assert protocols["violations"][1]["type"] == "Invalid Value"
    assert "omitted" not in protocols


def test_omit_properties_cannot_fix_a_missing_property_so_the_violation_stays() -> None:
    verdict = apply(enforcer(on_violation="omit_properties"), order(order_id=None))
    assert verdict.passed and verdict.omitted_on_violation == ()
    assert verdict.event["context"]["protocols"] == {
        "violations": [{"type": "Required", "field": "properties.order_id",
                        "description": "properties.order_id is required"}]
    }  # fmt: skip


def test_unplanned_properties_are_kept_or_omitted() -> None:
    ev = order(gift_wrap=True, utm_hint="x")
    kept = apply(enforcer(), ev)
    assert kept.passed and kept.event is ev and kept.unplanned == ("gift_wrap", "utm_hint")
    omitted = apply(enforcer(unplanned_properties="omit"), ev)
    assert omitted.omitted == ("gift_wrap", "utm_hint")
    assert "gift_wrap" not in omitted.event["properties"]
    assert omitted.event["properties"]["revenue"] == 25.00
    assert omitted.event["context"]["protocols"] == {"omitted": ["gift_wrap", "utm_hint"]}


def test_unplanned_properties_are_not_violations_and_block_nothing() -> None:
    verdict = apply(enforcer(on_violation="block"), order(gift_wrap=True))
    assert verdict.passed and verdict.violations == ()


def test_an_unplanned_event_is_allowed_or_blocked() -> None:
    ev = event("track", event="Order Refunded", properties={"order_id": "1"})
    allowed = apply(enforcer(forward_violations_to="audit"), ev)
    assert allowed.passed and allowed.unplanned_event and allowed.event is ev
    assert allowed.rule is None and allowed.violation_events == ()
    blocked = apply(enforcer(unplanned_events="block", forward_blocked_to="quarantine"), ev)
    assert blocked.blocked == "unplanned_event" and blocked.forward_to == "quarantine"
    assert blocked.event is ev


def test_event_names_are_case_sensitive_as_in_segment() -> None:
    verdict = apply(enforcer(unplanned_events="block"), event("track", event="order completed"))
    assert verdict.blocked == "unplanned_event"


def test_only_track_calls_can_be_unplanned() -> None:
    enf = enforcer(unplanned_events="block")
    assert apply(enf, event("screen", name="Home")).passed  # no SCREEN rule: not checked
    alias = event("alias", previousId="anon-1")
    assert apply(enf, alias).event is alias


def test_the_common_rule_checks_every_event_even_unplanned_ones() -> None:
    ev = event("track", event="Order Refunded")
    del ev["userId"]
    verdict = apply(enforcer(), ev)
    [v] = verdict.violations
    assert (v.type, v.field, v.rule) == ("Unknown", "(root)", "COMMON")
    assert v.description == "(root) cannot be validated by any definition"
    nested = event("track", event="Order Refunded", context={"library": {"version": "1"}})
    [w] = apply(enforcer(), nested).violations
    assert (w.type, w.field) == ("Required", "context.library.name")


def test_common_violations_block_too() -> None:
    ev = order()
    del ev["userId"]
    verdict = apply(enforcer(on_violation="block"), ev)
    assert verdict.blocked == "violation" and verdict.violations[0].rule == "COMMON"


def test_violation_generated_events_are_made_for_each_violation() -> None:
    ev = order(order_id=None, revenue="25")
    verdict = apply(enforcer(forward_violations_to="audit"), ev)
    assert verdict.violations_to == "audit"
    first, second = verdict.violation_events
    assert first["type"] == "track" and first["event"] == "Violation Generated"
    assert first["userId"] == "schema-violations"
    assert first["properties"] == {
        "appVersion": "4.2.0",
        "eventMessageID": "msg-track-1",
        "eventName": "Order Completed",
        "eventSentAt": "2024-06-11T08:40:02.000Z",
        "eventTimestamp": "2024-06-11T08:40:01.000Z",
        "eventType": "track",
        "sourceID": "website",
        "sourceName": "website",
        "sourceSlug": "website",
        "trackingPlanID": "ecommerce",
        "trackingPlanName": "ecommerce",
        "violationDescription": "properties.order_id is required",
        "violationField": "properties.order_id",
        "violationType": "Required",
    }
    assert second["properties"]["violationType"] == "Invalid Type"
    assert first["messageId"] != second["messageId"]
    again = apply(enforcer(forward_violations_to="audit"), ev).violation_events
    assert [e["messageId"] for e in again] == [first["messageId"], second["messageId"]]
    assert first["context"]["app"] == {"version": "4.2.0"}
    assert first["context"]["app"] is not ev["context"]["app"]


def test_blocked_events_still_forward_their_violations() -> None:
    verdict = apply(enforcer(on_violation="block", forward_violations_to="audit"),
                    order(order_id=None))  # fmt: skip
    assert verdict.blocked == "violation" and len(verdict.violation_events) == 1


def test_no_violation_events_without_forward_violations_to() -> None:
    assert apply(enforcer(), order(order_id=None)).violation_events == ()


def test_identify_traits_are_checked_and_unplanned_traits_omitted() -> None:
    ev = event("identify", traits={"email": "peter@example.com", "plan": "gold",
                                   "favourite_colour": "green"})  # fmt: skip
    verdict = apply(enforcer(unplanned_properties="omit", on_violation="omit_properties"), ev)
    assert verdict.rule == "IDENTIFY" and verdict.passed
    assert verdict.event["traits"] == {"email": "peter@example.com"}
    assert verdict.event["context"]["protocols"] == {
        "omitted": ["favourite_colour"],
        "omitted_on_violation": ["plan"],
        "violations": [{"type": "Invalid Value", "field": "traits.plan",
                        "description": "traits.plan must be one of ['free', 'pro', 'enterprise']"}],
    }  # fmt: skip


def test_group_traits_are_checked() -> None:
    verdict = apply(enforcer(), event("group", groupId="g1", traits={"employees": -3}))
    assert [(v.type, v.field) for v in verdict.violations] == [
        ("Required", "traits.name"), ("Invalid Value", "traits.employees")]  # fmt: skip
    assert verdict.event_name == "Group"


def test_page_calls_follow_the_page_rule() -> None:
    ok = event("page", name="Pricing",
               properties={"path": "/pricing", "url": "https://shop.example.com/pricing"})  # fmt: skip
    assert apply(enforcer(), ok).violations == ()
    bad = apply(enforcer(), event("page", name="Pricing", properties={"path": "/pricing"}))
    assert [v.field for v in bad.violations] == ["properties.url"]
    assert bad.rule == "PAGE" and bad.event_name == "Pricing"


def test_event_version_picks_the_rule_version() -> None:
    v2 = order()
    v2["context"]["protocols"] = {"event_version": 2}
    verdict = apply(enforcer(), v2)
    assert verdict.rule == 'TRACK "Order Completed" v2'
    assert [v.field for v in verdict.violations] == ["properties.subtotal"]
    # the client's protocols entries are kept next to Headwater's
    assert verdict.event["context"]["protocols"]["event_version"] == 2
    unknown = order()
    unknown["context"]["protocols"] = {"event_version": 9}
    assert apply(enforcer(), unknown).rule == 'TRACK "Order Completed"'


def test_stale_protocols_entries_are_replaced() -> None:
    ev = order(order_id=None)
    ev["context"]["protocols"] = {"omitted": ["old"], "violations": [{"type": "x"}]}
    protocols = apply(enforcer(), ev).event["context"]["protocols"]
    assert "omitted" not in protocols
    assert [v["field"] for v in protocols["violations"]] == ["properties.order_id"]


def test_a_track_rule_named_page_viewed_checks_page_calls_without_a_page_rule() -> None:
    plan = TrackingPlanConfig.model_validate({"name": "web", "rules": [
        {"type": "TRACK", "key": "Page Viewed", "jsonSchema": {
            "properties": {"properties": {"required": ["title"]}}}}]})  # fmt: skip
    verdict = PlanEnforcer(plan).apply(event("page", properties={}))
    assert verdict.rule == 'TRACK "Page Viewed"' and verdict.event_name == "Page Viewed"
    assert [v.field for v in verdict.violations] == ["properties.title"]


# ---------------------------------------------------------------------- loading


def plan_with(*rules: dict[str, Any], **fields: Any) -> TrackingPlanConfig:
    return TrackingPlanConfig.model_validate({"name": "p", "rules": list(rules), **fields})


def refusal(*rules: dict[str, Any], **fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        plan_with(*rules, **fields)
    [err] = caught.value.errors()
    return str(err["msg"]).removeprefix("Value error, ")


def revenue_schema(revenue: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"properties": {"properties": {"revenue": revenue}}}}


def test_a_wrong_type_name_is_refused_naming_the_rule_and_the_path() -> None:
    fine = {"type": "TRACK", "key": "Product Viewed", "jsonSchema": {}}
    rules = [fine, fine | {"key": "A"}, fine | {"key": "B"},
             {"type": "TRACK", "key": "Order Completed",
              "jsonSchema": revenue_schema({"type": "numbr"})}]  # fmt: skip
    assert refusal(*rules) == (
        'rules[3] (TRACK "Order Completed"): jsonSchema.properties.properties.properties.'
        "revenue.type: 'numbr' is not a JSON Schema type; use one of array, boolean, integer, "
        "null, number, object, string"
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (revenue_schema({"minimum": "0"}), "revenue.minimum: must be a number, not string"),
        (revenue_schema({"pattern": "(["}), "revenue.pattern: '([' is not a valid regular"),
        ({"required": "order_id"}, "jsonSchema.required: must be a list of property names"),
        ({"anyOf": []}, "jsonSchema.anyOf: must be a non-empty list of schemas"),
        ({"properties": {"a": 5}}, "jsonSchema.properties.a: a schema must be an object"),
        (
            {"$ref": "https://example.com/s.json"},
            "jsonSchema.$ref: 'https://example.com/s.json' points outside the rule",
        ),
        ({"$ref": "#/definitions/missing"}, "names nothing in the rule's schema"),
        ({"$schema": "https://json-schema.org/draft/2020-12/schema"}, "use draft-07"),
        ({"items": [{"type": "strin"}]}, "jsonSchema.items[0].type: 'strin' is not"),
    ],
)
def test_invalid_schemas_are_refused_with_the_fault(schema: dict[str, Any], message: str) -> None:
    text = refusal({"type": "IDENTIFY", "jsonSchema": schema})
    assert text.startswith("rules[0] (IDENTIFY): ")
    assert message in text


def test_local_references_and_draft_04_schemas_load() -> None:
    plan = plan_with(
        {"type": "TRACK", "key": "A", "jsonSchema": {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "definitions": {"money": {"type": "number", "minimum": 0, "exclusiveMinimum": True}},
            "properties": {"properties": {"properties": {"total": {"$ref": "#/definitions/money"}}}},
        }},
    )  # fmt: skip
    [v] = PlanEnforcer(plan).apply(event("track", event="A", properties={"total": 0})).violations
    assert (v.type, v.field) == ("Invalid Value", "properties.total")


def test_rule_keys_are_checked() -> None:
    assert refusal({"type": "TRACK", "jsonSchema": {}}) == (
        "rules[0] (TRACK): a TRACK rule needs a key, the event name"
    )
    assert refusal({"type": "IDENTIFY", "key": "x", "jsonSchema": {}}) == (
        'rules[0] (IDENTIFY "x"): IDENTIFY rules have no key; remove it'
    )
    same = {"type": "TRACK", "key": "A", "jsonSchema": {}}
    assert refusal(same, same) == (
        'rules[1] (TRACK "A"): another rule has the same type, key and version'
    )
    assert plan_with(same, same | {"version": 2}).rules[1].label() == 'TRACK "A" v2'
    common = {"type": "COMMON", "jsonSchema": {}}
    assert "a plan has one COMMON rule" in refusal(common, common | {"version": 2})
    assert plan_with({"type": "GROUP", "key": "", "jsonSchema": {}}).rules[0].key is None


def test_forwarding_to_an_own_source_is_refused() -> None:
    text = refusal(sources=["website"], enforcement={"forward_blocked_to": "website"})
    assert text.startswith("enforcement.forward_blocked_to: 'website' is one of the plan's own")


def test_unknown_enforcement_values_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        plan_with(enforcement={"on_violation": "omit"})
    assert caught.value.errors()[0]["loc"] == ("enforcement", "on_violation")


def test_workspace_checks_name_the_field() -> None:
    sources = {"website", "backend", "audit"}
    a = plan_with(sources=["website"], enforcement={"forward_violations_to": "audit"})
    check_tracking_plans([a], sources)
    b = TrackingPlanConfig.model_validate({"name": "b", "sources": ["backend", "website"]})
    with pytest.raises(ValueError, match=r"tracking_plans\[1\]\.sources\[1\]: source 'website' "
                                         r"already follows plan 'p'"):  # fmt: skip
        check_tracking_plans([a, b], sources)
    with pytest.raises(ValueError, match=r"tracking_plans\[0\]\.sources\[0\]: no source is named"):
        check_tracking_plans([plan_with(sources=["shop"])], sources)
    with pytest.raises(ValueError, match=r"tracking_plans\[1\]\.name: 'p' is used by two"):
        check_tracking_plans([a, plan_with()], sources)
    loops = plan_with(sources=["website"], enforcement={"forward_blocked_to": "backend"})
    c = TrackingPlanConfig.model_validate({"name": "c", "sources": ["backend"]})
    with pytest.raises(ValueError, match=r"forward_blocked_to: source 'backend' follows plan 'c'"):
        check_tracking_plans([loops, c], sources)
    with pytest.raises(ValueError, match=r"forward_violations_to: no source is named 'nowhere'"):
        check_tracking_plans([plan_with(enforcement={"forward_violations_to": "nowhere"})],
                             sources)  # fmt: skip


def test_the_docs_examples_load_and_behave_as_described() -> None:
    text = (Path(__file__).parents[2] / "docs" / "tracking-plans.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    [raw] = yaml.safe_load(block)["tracking_plans"]
    plan = TrackingPlanConfig.model_validate(raw)
    check_tracking_plans([plan], {"website"})
    enf = PlanEnforcer(plan)
    ev = event("track", event="Order Completed",
               properties={"order_id": "5031", "revenue": "25", "currency": "USD"})  # fmt: skip
    [v] = enf.apply(ev).violations
    assert v.as_protocols() in json.loads(re.findall(r"```json\n(.*?)```", text, re.S)[0])[
        "context"]["protocols"]["violations"]  # fmt: skip
    quoted = re.findall(r"```\n(workspace.yaml: .*?)\n```", text, flags=re.S)[0]
    raw["rules"][0]["jsonSchema"]["properties"]["properties"]["properties"]["revenue"] = {
        "type": "numbr"}  # fmt: skip
    raw["rules"] = [*({"type": "TRACK", "key": k, "jsonSchema": {}} for k in "ABC"), *raw["rules"]]
    with pytest.raises(ValidationError) as caught:
        TrackingPlanConfig.model_validate(raw)
    message = str(caught.value.errors()[0]["msg"]).removeprefix("Value error, ")
    assert quoted == f"workspace.yaml: tracking_plans[0]: {message}"
    forwarded = json.loads(re.findall(r"```json\n(.*?)```", text, re.S)[1])
    made = enforcer(forward_violations_to="audit").apply(order(order_id=None), "website")
    assert set(forwarded["properties"]) == set(made.violation_events[0]["properties"])
