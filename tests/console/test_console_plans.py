"""The console's Violations, Tracking plans and filter-preview pages in-process: the real
Headwater app with a tracking plan that blocks on violation and a devsink destination with
filters, driven over ASGI with httpx."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.console.processing import action_text, rule_view
from headwater.processor.filters import FilterConfig
from headwater.state.admin_token import load_admin_token
from tests.console.test_console import KEY, TOKEN, _form_csrf, login

ADMIN = {"authorization": f"Bearer {TOKEN}"}
EVIL = "<script>alert(1)</script>"
VIOLATIONS = "/console/sources/website/violations"
RESEND = "/console/sources/website/blocked/resend"
PREVIEW = "/console/destinations/sink/filters/preview"


def order_rule(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "TRACK",
        "key": "Order Completed",
        "jsonSchema": {
            "type": "object",
            "properties": {
                "properties": {"type": "object", "properties": properties, "required": required}
            },
        },
    }


STRICT = order_rule(
    {
        "order_id": {"type": "string", "description": "the shop's order number"},
        "revenue": {"type": "number"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "products": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}},
                      "required": ["sku"]},
        },
    },
    ["order_id", "revenue"],
)  # fmt: skip
IDENTIFY = {
    "type": "IDENTIFY",
    "jsonSchema": {
        "type": "object",
        "properties": {"traits": {"type": "object", "properties": {
            "plan": {"type": "string", "enum": ["free", "pro"]}}}},
    },
}  # fmt: skip
PLAN = {
    "name": "shop",
    "sources": ["website"],
    "rules": [STRICT, IDENTIFY],
    "enforcement": {"on_violation": "block"},
}
FILTERS = [
    {"name": "Debug events", "if": 'match(event, "Debug *")', "actions": [{"type": "DROP"}]},
    {"name": "No emails", "if": "all",
     "actions": [{"type": "DROP_PROPERTIES", "fields": {"properties": ["email"]}}]},
    {"if": 'type = "page"', "enabled": False,
     "actions": [{"type": "SAMPLE", "percent": 0.1, "path": "userId"}]},
]  # fmt: skip


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    workspace = parse_workspace(
        {
            "sources": [{"name": "website", "write_key": KEY}, {"name": "backend"}],
            "destinations": [{"name": "sink", "type": "devsink", "sources": ["website"],
                              "filters": FILTERS}],
            "tracking_plans": [PLAN],
            "log": {"durability": "os"},
            "status": {"canary_enabled": False},
        }
    )  # fmt: skip
    data_dir = tmp_path / "data"
    token = load_admin_token(data_dir, {"HEADWATER_ADMIN_TOKEN": TOKEN})
    app = Headwater(workspace, data_dir, admin_token=token)
    await app.start()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as c:
        try:
            yield c
        finally:
            await app.stop()


async def track(client: httpx.AsyncClient, message_id: str, event: str, **props: Any) -> None:
    body = {"userId": "u1", "event": event, "messageId": message_id, "properties": props}
    response = await client.post("/v1/track", json=body, auth=(KEY, ""))
    assert response.status_code == 200, response.text


async def send_orders(client: httpx.AsyncClient) -> None:
    await track(client, "m-ok", "Order Completed", order_id="1", revenue=10, currency="USD")
    await track(client, "m-bad-1", "Order Completed", order_id="2", revenue="12")
    await track(client, "m-bad-2", "Order Completed", order_id="3", revenue="13", currency=EVIL)
    await track(client, "m-bad-3", "Order Completed", revenue=14)
    await track(client, "m-unplanned", EVIL)  # allowed, counted as an Unplanned Event


def row(page: str, attribute: str, value: str) -> str:
    """The HTML of the table row with ``attribute="value"`` (its ``</tr>`` on a line of its
    own, after the rows of any table inside it)."""
    where = f'{attribute}="{re.escape(html.escape(value))}"'
    match = re.search(rf"<tr[^>]*{where}.*?\n\s*</tr>", page, re.S)
    assert match, f"no row with {attribute}={value!r}"
    return match.group(0)


def count(page: str, name: str) -> int:
    match = re.search(rf'data-count="{name}">([\d,]+)<', page)
    assert match, f"no data-count={name}"
    return int(match.group(1).replace(",", ""))


# ---------------------------------------------------------------------- violations


async def test_violations_by_event_and_field_with_samples(client: httpx.AsyncClient) -> None:
    await send_orders(client)
    await login(client)
    response = await client.get(VIOLATIONS, params={"window": "24h"})
    assert response.status_code == 200
    page = response.text
    assert 'aria-current="true">24h</a>' in page
    assert '<a href="/console/plans/shop">shop</a>' in page
    assert "on violation: <strong>block</strong>" in page
    assert count(page, "violations") == 5  # 4 in Order Completed, 1 unplanned event
    assert count(page, "blocked") == 3

    order = row(page, "data-event", "Order Completed")
    assert 'data-count="total">4<' in order
    assert 'data-type="Invalid Type">2<' in order
    assert 'data-type="Required">1<' in order
    assert 'data-type="Invalid Value">1<' in order
    assert 'data-type="Unplanned Event">0<' in order
    assert 'data-type="Unplanned Event">1<' in row(page, "data-event", EVIL)

    revenue = row(page, "data-field", "properties.revenue")
    assert '<td class="num">2</td>' in revenue
    assert '<td class="expected">number</td><td class="got"><code>string</code>' in revenue
    for message_id in ("m-bad-1", "m-bad-2"):
        assert f'href="/console/trace?id={message_id}"' in revenue
    assert "Invalid type. Expected: number, given: string" in revenue
    required = row(page, "data-field", "properties.order_id")
    assert '<td class="expected">present</td><td class="got"><code>missing</code>' in required
    currency = row(page, "data-field", "properties.currency")
    assert "pattern" in currency and html.escape(EVIL) in currency
    assert "<script>alert" not in page, "event content is text, never markup"

    source = (await client.get("/console/sources/website")).text
    assert count(source, "violations") == 5 and count(source, "blocked") == 3
    assert f'href="{VIOLATIONS}?window=24h"' in source
    trace = await client.get("/console/trace", params={"id": "m-bad-1"})
    assert trace.status_code == 200, "a blocked event's sample links to its trace"


async def test_source_without_a_plan(client: httpx.AsyncClient) -> None:
    await login(client)
    page = (await client.get("/console/sources/backend/violations")).text
    assert "none: this source's events are not checked" in page
    assert count(page, "violations") == 0
    assert re.search(r"<button[^>]*disabled>Re-send blocked events", page)
    assert (await client.get("/console/sources/nope/violations")).status_code == 404
    assert (await client.get(f"{VIOLATIONS}?window=1y")).status_code == 400


async def test_resend_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    await send_orders(client)
    signed_out = await client.post(RESEND, data={})
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == (
        "/console/login?next=%2Fconsole%2Fsources%2Fwebsite%2Fviolations"
    )
    await login(client)
    for data in ({}, {"csrf_token": "guess"}):
        refused = await client.post(RESEND, data=data)
        assert refused.status_code == 403
        assert "CSRF token" in refused.text
    assert count((await client.get(VIOLATIONS)).text, "blocked") == 3, "nothing was re-sent"


async def test_resend_rechecks_blocked_events_against_the_current_plan(
    client: httpx.AsyncClient,
) -> None:
    await send_orders(client)
    await login(client)
    page = (await client.get(VIOLATIONS)).text
    assert "against the plan <strong>as it is now</strong>" in page
    csrf = _form_csrf(page)
    assert f'action="{RESEND}?window=1h"' in page

    unchanged = await client.post(f"{RESEND}?window=1h", data={"csrf_token": csrf})
    assert unchanged.status_code == 200
    assert count(unchanged.text, "resent") == 0
    assert count(unchanged.text, "stillBlocked") == 3

    # the fix: revenue may be a string, order_id is optional; the currency pattern stays
    fixed = order_rule({"revenue": {"type": ["number", "string"]},
                        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}, ["revenue"])  # fmt: skip
    put = await client.put("/api/v1/tracking-plans/shop", headers=ADMIN,
                           json={**PLAN, "rules": [fixed]})  # fmt: skip
    assert put.status_code == 200, put.text

    response = await client.post(f"{RESEND}?window=1h", data={"csrf_token": csrf})
    assert response.status_code == 200
    result = response.text
    assert count(result, "resent") == 2
    assert count(result, "stillBlocked") == 1  # m-bad-2: its currency is still wrong
    assert count(result, "refused") == 0 and count(result, "alreadyInLog") == 0
    assert count(result, "blocked") == 1
    assert "(written through the API)" in result
    for message_id in ("m-bad-1", "m-bad-3"):
        event = (await client.get(f"/api/v1/events/{message_id}", headers=ADMIN)).json()
        assert event["offset"] is not None, f"{message_id} is in the log now"
    still = (await client.get("/api/v1/events/m-bad-2", headers=ADMIN)).json()
    assert still["offset"] is None
    assert "<script>alert" not in result


# ---------------------------------------------------------------------- plans


async def test_plans_list_and_rules(client: httpx.AsyncClient) -> None:
    await login(client)
    plans = await client.get("/console/plans")
    assert plans.status_code == 200
    assert '<a href="/console/plans" aria-current="page">Plans</a>' in plans.text
    shop = row(plans.text, "data-plan", "shop")
    assert '<a href="/console/sources/website/violations">website</a>' in shop
    assert '<td class="num">2</td>' in shop and "<td>workspace</td>" in shop
    assert "on violation: <strong>block</strong>" in shop

    plan = await client.get("/console/plans/shop")
    assert plan.status_code == 200
    page = plan.text
    assert 'data-rule-type="TRACK" data-rule-key="Order Completed"' in page
    assert "Required: <code>order_id</code>, <code>revenue</code>." in page
    revenue = row(page, "data-field", "revenue")
    assert '<td class="ftype">number</td>' in revenue and "<td>required</td>" in revenue
    assert "pattern ^[A-Z]{3}$" in row(page, "data-field", "currency")
    assert "the shop&#39;s order number" in row(page, "data-field", "order_id")
    assert '<td class="ftype">array of object</td>' in row(page, "data-field", "products")
    assert "<td>required</td>" in row(page, "data-field", "products[].sku")
    assert "one of &#34;free&#34;, &#34;pro&#34;" in row(page, "data-field", "plan")

    missing = await client.get("/console/plans/nope")
    assert missing.status_code == 404
    assert "no tracking plan is named &#39;nope&#39;; the plans are: shop" in missing.text


def test_rule_view_reads_the_schema() -> None:
    view = rule_view({"type": "GROUP", "jsonSchema": {"properties": {"traits": {
        "properties": {"size": {"type": ["integer", "null"], "minimum": 1}},
        "anyOf": [{"required": ["size"]}]}}}})  # fmt: skip
    assert view.section == "traits"
    [size] = view.fields
    assert (size.path, size.type, size.required) == ("size", "integer or null", False)
    assert size.constraints == "minimum 1"
    assert view.notes == ["anyOf: see the JSON Schema"]
    common = rule_view({"type": "COMMON", "jsonSchema": {"required": ["userId"]}})
    assert common.section is None and common.required == ["userId"] and common.fields == []


# ---------------------------------------------------------------------- filter preview


async def preview(client: httpx.AsyncClient, text: str, csrf: str | None = None) -> httpx.Response:
    if csrf is None:
        csrf = _form_csrf((await client.get("/console/destinations/sink")).text)
    return await client.post(PREVIEW, data={"csrf_token": csrf, "event": text})


async def test_destination_lists_its_filters(client: httpx.AsyncClient) -> None:
    await login(client)
    page = (await client.get("/console/destinations/sink")).text
    first = row(page, "data-filter", "1")
    assert "<td>Debug events</td>" in first
    assert "<code>match(event, &#34;Debug *&#34;)</code>" in first and "<code>DROP</code>" in first
    assert "<code>DROP_PROPERTIES properties.email</code>" in row(page, "data-filter", "2")
    third = row(page, "data-filter", "3")
    assert "<code>SAMPLE 10% by userId</code>" in third and "<td>disabled</td>" in third
    assert '<label for="preview-event">' in page
    assert '"event": "Order Completed"' in html.unescape(page), "an example to start from"


async def test_filter_preview_drops_modifies_and_explains_bad_json(
    client: httpx.AsyncClient,
) -> None:
    await login(client)
    dropped = await preview(client, '{"type": "track", "event": "Debug click"}')
    assert dropped.status_code == 200
    assert 'data-decision="dropped"' in dropped.text
    assert "filter 1 (&#34;Debug events&#34;)" in dropped.text

    event = {"type": "track", "event": "Signed Up",
             "properties": {"email": "a@example.com", "plan": EVIL}}  # fmt: skip
    modified = await preview(client, orjson.dumps(event).decode())
    assert modified.status_code == 200
    result = modified.text
    assert 'data-decision="modified"' in result
    shown = re.search(r'aria-label="The event as the destination would get it">(.*?)</pre>',
                      result, re.S)  # fmt: skip
    assert shown
    assert orjson.loads(html.unescape(shown.group(1)))["properties"] == {"plan": EVIL}
    assert "<script>alert" not in result and html.escape(EVIL) in result
    assert 'data-filter="2"' in result

    for text, message in [
        ('{"type": "track",', "The sample is not valid JSON"),
        ("", "The sample must be one event as a JSON object"),
        ("[1, 2]", "The sample must be one event as a JSON object"),
    ]:
        bad = await preview(client, text)
        assert bad.status_code == 400, text
        assert 'role="alert" id="preview-error"' in bad.text and message in bad.text
        kept = re.search(r"<textarea[^>]*>(.*?)</textarea>", bad.text, re.S)
        assert kept and html.unescape(kept.group(1)) == text, "the form keeps what was sent"
        assert "data-decision" not in bad.text


async def test_filter_preview_needs_the_csrf_token_and_a_small_body(
    client: httpx.AsyncClient,
) -> None:
    await login(client)
    refused = await client.post(PREVIEW, data={"event": '{"type": "track"}'})
    assert refused.status_code == 403
    huge = await preview(client, '{"type": "track", "event": "' + "x" * 70_000 + '"}')
    assert huge.status_code == 413
    assert "larger than 64 KiB" in huge.text


def test_action_text() -> None:
    [drop, trim, sample] = [FilterConfig.model_validate(f) for f in FILTERS]
    assert [action_text(a) for a in drop.actions] == ["DROP"]
    assert [action_text(a) for a in trim.actions] == ["DROP_PROPERTIES properties.email"]
    assert [action_text(a) for a in sample.actions] == ["SAMPLE 10% by userId"]
