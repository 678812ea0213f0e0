"""Importing tracking plans exported from Segment (Public API and Config API shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from headwater.errors import ConfigError
from headwater.processor.protocols import PlanEnforcer, TrackingPlanConfig
from headwater.processor.protocols.segment_import import import_segment_plan, segment_plan_yaml

FIXTURE = Path(__file__).parent / "fixtures" / "ecommerce_plan.json"


@pytest.fixture
def export() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_the_public_api_export_imports_without_deprecated_rules(export: dict[str, Any]) -> None:
    plan = import_segment_plan(export)
    assert plan.name == "ecommerce-spec"  # from the plan's slug
    assert plan.sources == []
    assert [r.label() for r in plan.rules] == [
        'TRACK "Order Completed"', 'TRACK "Order Completed" v2', 'TRACK "Product Viewed"',
        'TRACK "Product Added"', 'TRACK "Checkout Started"', 'TRACK "Cart Viewed"',
        'TRACK "Products Searched"', 'TRACK "Coupon Applied"', 'TRACK "Signed Up"',
        "IDENTIFY", "GROUP", "PAGE", "COMMON",
    ]  # fmt: skip
    assert plan.rules[0].json_schema == export["rules"][0]["jsonSchema"]
    assert plan.enforcement.on_violation == "allow"


def test_name_and_sources_can_be_given(export: dict[str, Any]) -> None:
    plan = import_segment_plan(export, name="shop", sources=["website", "ios"])
    assert (plan.name, plan.sources) == ("shop", ["website", "ios"])


@pytest.mark.parametrize(
    "wrap",
    [
        lambda e: {
            "data": {"rules": e["rules"], "pagination": {"current": "MA==", "totalEntries": 14}}
        },
        lambda e: {"rules": e["rules"]},
        lambda e: e["rules"],
        lambda e: {"data": e},
    ],
    ids=["list-rules-response", "rules", "bare-list", "data-envelope"],
)
def test_public_api_shapes(export: dict[str, Any], wrap: Any) -> None:
    plan = import_segment_plan(wrap(export), name="shop")
    assert len(plan.rules) == 13


CONFIG_API_PLAN = {
    "name": "workspaces/acme/tracking-plans/rs_16KrwVbouFLrYbDkGh4LNslkrNp",
    "display_name": "Acme Ecommerce TP",
    "rules": {
        "global": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "properties": {"context": {"type": "object", "required": ["library"],
                                              "properties": {"library": {"type": ["object"]}}},
                                  "traits": {}, "properties": {}}},
        "events": [
            {"name": "Order Completed", "description": "Who bought what", "version": 1,
             "rules": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                       "properties": {"context": {}, "traits": {}, "properties": {
                           "type": "object", "required": ["order_id", "revenue"],
                           "properties": {"order_id": {"type": ["string"]},
                                          "revenue": {"type": ["number"]}}}}}},
        ],
        "identify": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                     "properties": {"traits": {"type": "object", "required": ["name"],
                                               "properties": {"name": {"type": ["string"]}}},
                                    "properties": {}, "context": {}}},
        "group": {},
        "identify_traits": [],
        "group_traits": [],
    },
    "create_time": "2019-02-05T01:21:25Z",
    "update_time": "2019-02-05T01:21:25Z",
}  # fmt: skip


@pytest.mark.parametrize(
    "wrap",
    [lambda p: p, lambda p: {"tracking_plan": p}, lambda p: {"tracking_plans": [p]}],
    ids=["plan", "create-request", "list-of-one"],
)
def test_config_api_shapes(wrap: Any) -> None:
    plan = import_segment_plan(wrap(CONFIG_API_PLAN), sources=["website"])
    assert plan.name == "acme-ecommerce-tp"
    assert [r.label() for r in plan.rules] == ['TRACK "Order Completed"', "IDENTIFY", "COMMON"]
    verdict = PlanEnforcer(plan).apply(
        {"type": "track", "event": "Order Completed", "properties": {"order_id": 7},
         "context": {"library": {"name": "analytics-node"}}}
    )  # fmt: skip
    assert [(v.type, v.field) for v in verdict.violations] == [
        ("Required", "properties.revenue"), ("Invalid Type", "properties.order_id")]  # fmt: skip


def test_a_config_api_plan_without_a_display_name_is_named_after_its_id() -> None:
    plan = dict(CONFIG_API_PLAN, display_name="")
    assert import_segment_plan(plan).name == "rs_16krwvbouflrybdkgh4lnslkrnp"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tracking_plans": [CONFIG_API_PLAN, CONFIG_API_PLAN]}, "lists 2 tracking plans"),
        (
            {"data": {"trackingPlan": {"id": "tp_1", "name": "x"}}},
            "without its rules; export "
            "them with GET https://api.segmentapis.com/tracking-plans/<id>/rules",
        ),
        ({"events": []}, "not a Segment tracking plan export; expected a Public API export"),
        ("rules", "not a Segment tracking plan export"),
        ([{"type": "TRACK", "key": "A"}], "rules[0] is not a Segment rule"),
        ({"rules": {"events": [{"description": "x"}]}}, "rules.events[0] has no name"),
    ],
)
def test_other_shapes_are_refused(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        import_segment_plan(data, origin="plan.json")
    assert str(caught.value).startswith("plan.json: ")
    assert message in str(caught.value)


def test_an_invalid_rule_in_an_export_is_named(export: dict[str, Any]) -> None:
    export["rules"][2]["jsonSchema"]["properties"]["properties"]["properties"]["price"]["type"] = (
        "numbr"
    )
    with pytest.raises(ConfigError) as caught:
        import_segment_plan(export, origin="plan.json")
    assert str(caught.value) == (
        'plan.json: rules[2] (TRACK "Product Viewed"): jsonSchema.properties.properties.'
        "properties.price.type: 'numbr' is not a JSON Schema type; use one of array, boolean, "
        "integer, null, number, object, string"
    )


def test_the_yaml_loads_back_into_the_same_plan(export: dict[str, Any]) -> None:
    text = segment_plan_yaml(export, sources=["website"])
    assert text.startswith("# Imported from a tracking plan of Segment's Public API")
    assert "# Left out: rules[9] (TRACK Wishlist Product Added): deprecated" in text
    assert "List the sources" not in text
    [loaded] = yaml.safe_load(text)["tracking_plans"]
    assert TrackingPlanConfig.model_validate(loaded) == import_segment_plan(
        export, sources=["website"]
    )
    assert loaded["rules"][0]["key"] == "Order Completed" and "key" not in loaded["rules"][9]
    assert loaded["enforcement"] == {
        "unplanned_events": "allow", "unplanned_properties": "allow", "on_violation": "allow",
        "forward_blocked_to": None, "forward_violations_to": None,
    }  # fmt: skip


def test_the_yaml_says_what_the_config_api_export_lost() -> None:
    plan = json.loads(json.dumps(CONFIG_API_PLAN))
    plan["rules"]["identify_traits"] = [{"name": "email"}]
    text = segment_plan_yaml(plan)
    assert "# List the sources this plan checks under `sources:`." in text
    assert "# Left out: rules.identify_traits (1 trait): the Config API's trait lists" in text
