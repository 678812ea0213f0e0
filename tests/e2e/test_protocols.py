"""Tracking plans, destination filters and transformations through a real ``headwater serve``.

- A real plan (Segment's e-commerce export, 13 rules once imported) on source ``website``,
  enforced three ways in turn (the plan replaced through ``PUT /api/v1/tracking-plans``):
  what lands in the log, what the 200 answer lists as blocked, what the violations view
  counts and samples, the trace of a blocked event, ``Violation Generated`` events on a
  second source, and blocked events re-sent (``headwater plans resend-blocked``) once the
  plan is fixed, then delivered.
- Filters: ~400 varied events through 4 filters (DROP, SAMPLE, DROP_PROPERTIES,
  ALLOW_PROPERTIES) and 2 destination transformations to a fake webhook: what arrives is
  exactly what the filters allow, the rest is ``filtered`` with the filter's reason, the
  delivery report counts them, the preview endpoint and ``headwater filters test`` agree
  with what was delivered; source transformations show in the stored event and its trace.
- Blocked events survive kill -9; a retried request forwards its violations once; the trace
  of a delivered event names the filters and transformations that changed it.

The expectations are written out by hand from docs/tracking-plans.md and docs/fql.md, not
computed with Headwater's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from headwater.processor.protocols.segment_import import import_segment_plan
from tests.e2e.conftest import ADMIN, ADMIN_TOKEN, WRITE_KEY, Server
from tests.e2e.test_delivery import webhook_yaml
from tests.fakes import FakeDestination

FIXTURE = Path(__file__).parents[1] / "processor" / "fixtures" / "ecommerce_plan.json"
NO_CANARY = "status: {canary_enabled: false}\n"  # the log and the fake hold only our events
STAMP = """\
transformations:
  - name: stamp-build
    source: website
    set_properties: {context.app.build: '"42"'}
"""  # runs after the plan, on what it lets through (also when re-sent)

Finding = tuple[str, str, str, str]  # violation type, field, expected, got


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def fake() -> Iterator[FakeDestination]:
    """A webhook receiver answering 200; requested before ``make_server``, so it stops after
    the servers (a server still delivering to a stopped fake leaves sockets behind)."""
    with FakeDestination() as destination:
        yield destination


def post_batch(server: Server, events: list[dict[str, Any]], key: str = WRITE_KEY) -> Any:
    response = httpx.post(
        f"{server.url}/v1/batch", json={"batch": events}, auth=(key, ""), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def admin_call(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", headers=ADMIN, timeout=30, **kwargs)
    assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def cli(server: Server | None, *args: str) -> subprocess.CompletedProcess[str]:
    """``headwater ARGS`` against ``server`` (HEADWATER_URL, the admin token), wide output."""
    env = {**os.environ, "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "250"}
    if server is not None:
        env["HEADWATER_URL"] = server.url
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def stored(server: Server) -> dict[str, tuple[str, dict[str, Any]]]:
    """messageId -> (source, event) of every event in the log."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for source, payload in server.rows():
        event = orjson.loads(payload)
        assert event["messageId"] not in out, f"stored twice: {event['messageId']}"
        out[event["messageId"]] = (source, event)
    return out


def traces(server: Server, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The trace of each event (one connection: a new client per request costs ~40 ms)."""
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=10) as client:
        return {m: client.get(f"/api/v1/events/{m}").json() for m in message_ids}


def violation_counts(server: Server) -> Counter[tuple[str, str, str]]:
    """(event, violation type, field) -> count, from the violations view of ``website``."""
    body = server.api("/api/v1/sources/website/violations", window="1d").json()
    counts: Counter[tuple[str, str, str]] = Counter()
    for event in body["events"]:
        assert event["total"] == sum(event["by_type"].values()), event
        for f in event["fields"]:
            counts[(event["event"], f["violation_type"], f["field"])] += f["count"]
    return counts


# ---------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """One event sent in every phase, and what the fixture plan finds in it (by hand)."""

    key: str
    event: dict[str, Any]
    violations: list[Finding] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)  # property or trait keys
    unplanned_event: bool = False

    @property
    def name(self) -> str:
        kind = self.event["type"]
        return self.event["event"] if kind == "track" else kind.capitalize()

    @property
    def section(self) -> str:
        return "traits" if self.event["type"] in ("identify", "group") else "properties"

    def with_id(self, phase: str) -> dict[str, Any]:
        return {**self.event, "userId": "u-1", "messageId": f"{phase}-{self.key}"}

    def findings(self) -> list[tuple[str, str, str]]:
        """What the violations view counts for this event: (event, type, field)."""
        out = [(self.name, v[0], v[1]) for v in self.violations]
        out += [(self.name, "Unplanned Property", f"{self.section}.{k}") for k in self.unplanned]
        if self.unplanned_event:
            out.append((self.name, "Unplanned Event", "event"))
        return out


def order(**properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "properties": properties}


def track(name: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "properties": properties}


PRODUCT = {"product_id": "p1", "price": 30.5, "quantity": 1}
CASES = [
    Case("ok-order", order(order_id="o1", revenue=30.5, currency="EUR", products=[PRODUCT])),
    Case("ok-search", track("Products Searched", query="shoes")),
    Case("ok-identify", {"type": "identify", "traits": {"email": "a@example.com", "plan": "pro"}}),
    Case("ok-page", {"type": "page", "name": "Home",
                     "properties": {"path": "/", "url": "https://shop.example.com/"}}),
    Case("missing-order", order(order_id="o2", products=[{"product_id": "p2"}]),
         [("Required", "properties.revenue", "present", "missing"),
          ("Required", "properties.currency", "present", "missing")]),
    Case("missing-cart", track("Product Added", product_id="p3"),
         [("Required", "properties.cart_id", "present", "missing")]),
    Case("type-order", order(order_id="o3", revenue="30.50", currency="EUR",
                             products=[{"product_id": "p4", "quantity": 0}]),
         [("Invalid Type", "properties.revenue", "number", "string"),
          ("Invalid Value", "properties.products.0.quantity", "minimum", "0")]),
    Case("type-viewed", track("Product Viewed", product_id="p5", sku="s5", price="cheap"),
         [("Invalid Type", "properties.price", "number", "string")]),
    Case("enum-identify", {"type": "identify", "traits": {"email": "b@example.com",
                                                          "plan": "platinum"}},
         [("Invalid Value", "traits.plan", "enum", '"platinum"')]),
    Case("unplanned-props", track("Products Searched", query="boots", sort="price", debug=True),
         unplanned=["sort", "debug"]),
    Case("unplanned-event", track("Wishlist Shared", wishlist_id="w1"), unplanned_event=True),
    # deprecated in the export, so `plans import` leaves its rule out: unplanned as well
    Case("deprecated-event", track("Wishlist Product Added", product_id="p6"),
         unplanned_event=True),
    Case("mixed", track("Product Viewed", product_id="p7", price="free", gift_wrap=True),
         [("Invalid Type", "properties.price", "number", "string")], unplanned=["gift_wrap"]),
    Case("v2-order", {**order(order_id="o4", revenue=10, currency="USD", products=[PRODUCT]),
                      "context": {"protocols": {"event_version": 2}}},
         [("Required", "properties.subtotal", "present", "missing")]),
]  # fmt: skip
BY_KEY = {c.key: c for c in CASES}


@dataclass(frozen=True)
class Enforcement:
    unplanned_events: str = "allow"
    unplanned_properties: str = "allow"
    on_violation: str = "allow"
    forward_violations_to: str | None = None


def expected_outcome(case: Case, rules: Enforcement) -> tuple[str | None, dict[str, Any]]:
    """(block code or None, the event as the log should store it) — docs/tracking-plans.md."""
    sent = case.with_id("x")
    if case.unplanned_event and rules.unplanned_events == "block":
        return "unplanned_event", sent
    if case.violations and rules.on_violation == "block":
        return "violation", sent
    omitted = case.unplanned if rules.unplanned_properties == "omit" else []
    invalid: list[str] = []
    if rules.on_violation == "omit_properties":
        for kind, path, _, _ in case.violations:
            key = path.split(".")[1]
            if kind != "Required" and key not in invalid and key not in omitted:
                invalid.append(key)
    protocols: dict[str, Any] = {}
    if omitted:
        protocols["omitted"] = omitted
    if invalid:
        protocols["omitted_on_violation"] = invalid
    if case.violations:
        protocols["violations"] = [(kind, path) for kind, path, _, _ in case.violations]
    section = dict(sent[case.section])
    for key in [*omitted, *invalid]:
        del section[key]
    return None, {**sent, case.section: section, "protocols": protocols}


def check_stored(case: Case, got: dict[str, Any], want: dict[str, Any], phase: str) -> None:
    where = f"{phase}/{case.key}"
    assert got[case.section] == want[case.section], f"{where}: {case.section} differ"
    for key in ("type", "event", "userId", "traits", "properties"):
        if key in want and key != case.section:
            assert got.get(key) == want[key], f"{where}: {key} changed"
    protocols = dict(got.get("context", {}).get("protocols", {}))
    version = case.event.get("context", {}).get("protocols", {}).get("event_version")
    assert protocols.pop("event_version", None) == version, f"{where}: event_version lost"
    expected = want["protocols"]
    entries = protocols.pop("violations", [])
    assert sorted((v["type"], v["field"]) for v in entries) == sorted(
        expected.pop("violations", [])
    ), where
    for entry in entries:
        kind, path = entry["type"], entry["field"]
        if kind == "Required":
            assert entry["description"] == f"{path} is required", entry
        if kind == "Invalid Type":
            assert entry["description"] == "Invalid type. Expected: number, given: string", entry
    for key in ("omitted", "omitted_on_violation"):
        assert sorted(protocols.pop(key, [])) == sorted(expected.pop(key, [])), f"{where}: {key}"
    assert not protocols and not expected, f"{where}: context.protocols {protocols} {expected}"


def run_phase(server: Server, phase: str, rules: Enforcement) -> dict[str, Any]:
    """Send the corpus once under ``rules``; check the log, the answer and the counts."""
    before_counts = violation_counts(server)
    before_log = set(stored(server))
    answer = post_batch(server, [c.with_id(phase) for c in CASES])
    log = stored(server)
    new = {m: log[m] for m in set(log) - before_log}

    blocked = {}
    for case in CASES:
        mid = f"{phase}-{case.key}"
        code, want = expected_outcome(case, rules)
        if code is not None:
            blocked[mid] = code
            assert mid not in new, f"{phase}: blocked {case.key} is in the log"
            continue
        assert mid in new, f"{phase}: {case.key} should be in the log"
        source, got = new.pop(mid)
        assert source == "website"
        check_stored(case, got, want, phase)
        assert got["context"]["app"] == {"build": "42"}, f"{phase}/{case.key}: not transformed"

    # the 200 answer lists exactly the blocked events, by their index in the batch
    listed = answer.get("blocked", [])
    assert {b["messageId"]: b["code"] for b in listed} == blocked, answer
    for item in listed:
        assert CASES[item["index"]].key == item["messageId"].removeprefix(f"{phase}-")
        assert "ecommerce" in item["message"], item
        if item["code"] == "unplanned_event":
            assert BY_KEY[item["messageId"].removeprefix(f"{phase}-")].name in item["message"]
    if not blocked:
        assert answer == {"success": True}, answer
    else:
        assert answer["accepted"] == len(log) - len(before_log)

    # Violation Generated events, one per violation, to forward_violations_to
    forwarded = {m: e for m, (s, e) in new.items() if s == "backend"}
    assert len(forwarded) == len(new), f"{phase}: unexpected events {set(new) - set(forwarded)}"
    if rules.forward_violations_to is None:
        assert not forwarded, f"{phase}: violations forwarded without forward_violations_to"
    else:
        check_forwarded(phase, forwarded)

    # the violations view: each finding counted once, whatever the enforcement
    delta = violation_counts(server)
    delta.subtract(before_counts)
    expected = Counter(f for case in CASES for f in case.findings())
    assert +delta == expected, f"{phase}: counts differ: {(+delta) - expected} / {expected - delta}"
    return {"blocked": blocked, "answer": answer}


def check_forwarded(phase: str, forwarded: dict[str, dict[str, Any]]) -> None:
    """One ``Violation Generated`` track call per violation, in Segment's format."""
    expected = Counter(
        (f"{phase}-{case.key}", case.name, case.event["type"], kind, path)
        for case in CASES
        for kind, path, _, _ in case.violations
    )
    got: Counter[tuple[str, str, str, str, str]] = Counter()
    for mid, event in forwarded.items():
        assert mid.startswith("sch-"), mid
        assert event["type"] == "track" and event["event"] == "Violation Generated"
        assert event["userId"] == "schema-violations"
        props = event["properties"]
        assert props["sourceName"] == "website" and props["trackingPlanID"] == "ecommerce"
        assert props["violationDescription"], props
        assert event["receivedAt"], "a forwarded event is normalised like any other"
        got[(props["eventMessageID"], props["eventName"], props["eventType"],
             props["violationType"], props["violationField"])] += 1  # fmt: skip
    assert got == expected, f"{phase}: {got - expected} / {expected - got}"


# ---------------------------------------------------------------------- plans


def test_tracking_plan_enforced_three_ways_then_fixed_and_resent(
    fake: FakeDestination, make_server: Any
) -> None:
    plan = import_segment_plan(
        json.loads(FIXTURE.read_text()), name="ecommerce", sources=["website"]
    )
    assert len(plan.rules) >= 12, "the fixture should give a plan of a dozen rules"
    plan_doc = plan.model_dump(mode="json", by_alias=True)
    server = make_server(
        yaml.safe_dump({"tracking_plans": [plan_doc]}, sort_keys=False)
        + webhook_yaml(fake.url)
        + STAMP
        + NO_CANARY
    )
    listed = admin_call(server, "GET", "/api/v1/tracking-plans")["trackingPlans"]
    assert [(p["name"], p["sources"], p["origin"]) for p in listed] == [
        ("ecommerce", ["website"], "workspace")
    ]

    # A: the defaults — everything passes, violations ride along on the event
    run_phase(server, "a", Enforcement())
    counts = violation_counts(server)
    view = server.api("/api/v1/sources/website/violations", window="1d").json()
    assert view["plan"] == "ecommerce" and view["blockedKept"] == 0
    assert view["total"] == sum(counts.values())
    check_samples(view, "a")

    # B: unplanned events blocked, unplanned properties and invalid values omitted
    b = Enforcement("block", "omit", "omit_properties")
    put_enforcement(server, plan_doc, b)
    run_phase(server, "b", b)

    # C: violations blocked and forwarded to `backend` as Violation Generated events
    c = Enforcement("allow", "allow", "block", "backend")
    put_enforcement(server, plan_doc, c)
    phase_c = run_phase(server, "c", c)
    blocked_ids = sorted(phase_c["blocked"])
    check_blocked_trace(server, "c-type-order")
    view = server.api("/api/v1/sources/website/violations", window="1d").json()
    assert view["blockedKept"] == len(blocked_ids) + 2  # and phase B's two unplanned events
    check_samples(view, "c")

    # everything stored for `website` is delivered; nothing blocked is
    website = {m for m, (s, _) in stored(server).items() if s == "website"}
    fake.wait_for(lambda f: website <= {e["messageId"] for e in f.events()})
    assert not set(blocked_ids) & {e["messageId"] for e in fake.events()}

    # fix the plan for four of phase C's seven blocked events, then re-send them all
    fixed = fixed_plan(plan_doc, c)
    answer = admin_call(server, "PUT", "/api/v1/tracking-plans/ecommerce", json=fixed)
    assert answer["origin"] == "api" and answer["rules"] == len(plan.rules)
    check_cli_views(server, view["total"])
    # phase B's unplanned events pass now too: this plan allows unplanned events
    now_pass = ["c-missing-cart", "c-type-viewed", "c-enum-identify", "c-mixed",
                "b-unplanned-event", "b-deprecated-event"]  # fmt: skip
    still = ["c-missing-order", "c-type-order", "c-v2-order"]
    assert sorted(now_pass + still) == sorted([*blocked_ids, "b-unplanned-event",
                                               "b-deprecated-event"])  # fmt: skip
    resend_and_deliver(server, fake, now_pass, still)

    # the plan written through the API outlives a restart, and wins over the workspace's
    server.stop()
    server.start()
    answer = admin_call(server, "GET", "/api/v1/tracking-plans/ecommerce")
    assert answer["origin"] == "api" and answer["plan"]["rules"] == fixed["rules"]
    assert answer["enforcement"] == {**answer["enforcement"], **fixed["enforcement"]}
    post_batch(server, [BY_KEY["type-viewed"].with_id("d")])
    assert "d-type-viewed" in stored(server), "the fixed plan applies after the restart"


def check_cli_views(server: Server, violations: int) -> None:
    """`headwater plans list` and `plans violations` show what the API holds."""
    listing = cli(server, "plans", "list")
    assert listing.returncode == 0, listing.stderr
    assert "ecommerce" in listing.stdout and "(api)" in listing.stdout, listing.stdout
    assert "violations: block" in listing.stdout, listing.stdout
    report = cli(server, "plans", "violations", "--source", "website")
    assert report.returncode == 0, report.stderr
    assert f"{violations} violations since 1d (plan ecommerce)" in report.stdout
    assert "properties.price" in report.stdout, report.stdout
    assert "expected number, got string" in report.stdout, report.stdout


def resend_and_deliver(
    server: Server, fake: FakeDestination, now_pass: list[str], still: list[str]
) -> None:
    """`headwater plans resend-blocked`: the events the plan now lets through are stored as
    they arrived (then transformed), traced from the log and delivered; the rest stay."""
    before = stored(server)
    resend = cli(server, "plans", "resend-blocked", "--source", "website", "--since", "1d")
    assert resend.returncode == 0, resend.stderr
    summary = f"{len(now_pass)} re-sent, {len(still)} still blocked, 0 refused"
    assert summary in resend.stdout, resend.stdout
    after = stored(server)
    assert set(after) - set(before) == set(now_pass), "re-sent ≠ the events the fix lets pass"
    resent_traces = traces(server, now_pass)
    for mid in now_pass:
        source, event = after[mid]
        case = BY_KEY[mid.split("-", 1)[1]]
        assert source == "website"
        assert event[case.section] == case.event[case.section], "re-sent events are as sent"
        assert "protocols" not in event["context"] and event["context"]["app"] == {"build": "42"}
        assert resent_traces[mid]["offset"] is not None, "traced from the log now"
    for mid, trace in traces(server, still).items():
        assert trace["offset"] is None and trace["stages"][-1]["decision"] == "blocked", mid
    fake.wait_for(lambda f: set(now_pass) <= {e["messageId"] for e in f.events()})
    delivered = Counter(e["messageId"] for e in fake.events())
    assert all(delivered[m] == 1 for m in now_pass), delivered
    assert not set(still) & set(delivered)
    view = server.api("/api/v1/sources/website/violations", window="1d").json()
    assert view["blockedKept"] == len(still)
    # a second re-send finds nothing new to pass
    again = admin_call(server, "POST", "/api/v1/sources/website/blocked/resend",
                       params={"since": "1d"})  # fmt: skip
    assert (again["resent"], again["stillBlocked"]) == (0, len(still)), again


def put_enforcement(server: Server, plan_doc: dict[str, Any], rules: Enforcement) -> None:
    body = {**plan_doc, "enforcement": rules.__dict__}
    answer = admin_call(server, "PUT", "/api/v1/tracking-plans/ecommerce", json=body)
    assert answer["enforcement"]["on_violation"] == rules.on_violation, answer


def fixed_plan(plan_doc: dict[str, Any], rules: Enforcement) -> dict[str, Any]:
    """The plan with the fixes a team would make after reading the violations: prices may be
    strings, a cart id is optional, and `platinum` is a plan."""
    doc = json.loads(json.dumps(plan_doc))
    for rule in doc["rules"]:
        section = rule["jsonSchema"].get("properties", {})
        if rule.get("key") == "Product Viewed":
            section["properties"]["properties"]["price"]["type"] = ["number", "string"]
        if rule.get("key") == "Product Added":
            section["properties"]["required"].remove("cart_id")
        if rule["type"] == "IDENTIFY":
            section["traits"]["properties"]["plan"]["enum"].append("platinum")
    return {**doc, "enforcement": rules.__dict__}


def check_samples(view: dict[str, Any], phase: str) -> None:
    """The latest sample of each field is from this phase and says what was expected."""
    fields = {(e["event"], f["violation_type"], f["field"]): f for e in view["events"]
              for f in e["fields"]}  # fmt: skip
    for case in CASES:
        for kind, path, expected, got in case.violations:
            sample = fields[(case.name, kind, path)]["samples"][0]
            assert (sample["violation_type"], sample["field"]) == (kind, path)
            if kind == "Invalid Value":  # e.g. expected 'minimum 1', got '0'
                assert expected in sample["expected"] and got in sample["got"], sample
            else:
                assert (sample["expected"], sample["got"]) == (expected, got), sample
            assert sample["message_id"].startswith(f"{phase}-"), sample
        for key in case.unplanned:
            sample = fields[(case.name, "Unplanned Property", f"{case.section}.{key}")]
            assert sample["samples"][0]["got"] == key
    unplanned = fields[("Wishlist Shared", "Unplanned Event", "event")]["samples"][0]
    assert unplanned["got"] == "Wishlist Shared"


def check_blocked_trace(server: Server, message_id: str) -> None:
    response = server.api(f"/api/v1/events/{message_id}")
    assert response.status_code == 200, response.text
    trace = response.json()
    assert trace["messageId"] == message_id and trace["source"] == "website"
    assert trace["offset"] is None and trace["destinations"] == []
    assert trace["event"]["properties"]["revenue"] == "30.50", "the event as it arrived"
    [plan_stage] = [s for s in trace["stages"] if s["stage"] == "tracking plan"]
    assert plan_stage["decision"] == "blocked" and plan_stage["plan"] == "ecommerce"
    assert "resend-blocked" in plan_stage["detail"], plan_stage
    got = {(v["type"], v["field"], v["expected"], v["got"]) for v in plan_stage["violations"]}
    assert ("Invalid Type", "properties.revenue", "number", "string") in got, got
    assert {(t, f) for t, f, _, _ in got} == {
        ("Invalid Type", "properties.revenue"),
        ("Invalid Value", "properties.products.0.quantity"),
    }


TINY_PLAN = """\
tracking_plans:
  - name: tiny
    sources: [website]
    rules:
      - type: TRACK
        key: Signed Up
        jsonSchema: {properties: {properties: {properties: {email: {type: string}},
                                               required: [email, plan]}}}
      - type: TRACK
        key: Product Added
        jsonSchema: {properties: {properties: {required: [cart_id]}}}
    enforcement: {on_violation: block, forward_violations_to: backend}
"""


def signed_up(message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "userId": "u", "messageId": message_id,
            "properties": {"email": 7}}  # fmt: skip


def test_blocked_event_kept_through_kill_9_and_retries_forward_once(make_server: Any) -> None:
    """docs: a blocked event is on disk before the answer; a retried event forwards the same
    Violation Generated ids, so the log keeps one of each."""
    server = make_server(TINY_PLAN + NO_CANARY)
    first = post_batch(server, [signed_up("retry-1")])
    second = post_batch(server, [signed_up("retry-1")])  # the SDK missed the answer: retry
    for answer in (first, second):
        assert [b["code"] for b in answer["blocked"]] == ["violation"], answer
    assert second.get("duplicates") == 2, second
    server.kill()
    server.start()
    rows = stored(server)
    assert {s for s, _ in rows.values()} == {"backend"}
    fields = sorted(e["properties"]["violationField"] for _, e in rows.values())
    assert fields == ["properties.email", "properties.plan"], "one event per violation"
    trace = server.api("/api/v1/events/retry-1").json()
    assert trace["stages"][-1]["decision"] == "blocked", trace


def test_resend_reaches_blocked_events_after_500_still_blocked(make_server: Any) -> None:
    """Re-sending reads the blocked events a page (500) at a time: the events after a full
    page that stays blocked are re-checked too (d27b0dd fixed a loop that stopped there)."""
    server = make_server(TINY_PLAN + NO_CANARY)
    post_batch(server, [signed_up(f"s{n}") for n in range(501)])
    added = [{"type": "track", "event": "Product Added", "userId": "u", "messageId": f"p{n}",
              "properties": {}} for n in range(10)]  # fmt: skip
    assert len(post_batch(server, added)["blocked"]) == 10
    plan = admin_call(server, "GET", "/api/v1/tracking-plans/tiny")["plan"]
    plan["rules"][1]["jsonSchema"] = {}  # Product Added: cart_id is optional after all
    admin_call(server, "PUT", "/api/v1/tracking-plans/tiny", json=plan)
    answer = admin_call(server, "POST", "/api/v1/sources/website/blocked/resend",
                        params={"since": "1d"})  # fmt: skip
    assert (answer["resent"], answer["stillBlocked"]) == (10, 501), answer


# ---------------------------------------------------------------------- filters

FILTERS = """\
    filters:
      - name: Debug events
        if: type = "track" and match(event, "Debug *")
        actions: [{type: DROP}]
      - name: Half the users
        if: all
        actions: [{type: SAMPLE, percent: 0.5, path: userId}]
      - name: No PII
        if: all
        actions:
          - type: DROP_PROPERTIES
            fields: {properties: [email, products.price], context: [ip]}
      - name: Identify keeps little
        if: type = "identify"
        actions:
          - type: ALLOW_PROPERTIES
            fields: {traits: [plan, email]}
transformations:
  - name: fix-order
    source: website
    if: event = "order_completed"
    rename_event: Order Completed
    rename_properties: {properties.revenue: total}
  - name: debug-taps
    source: website
    if: event = "debug_tap"
    rename_event: Debug Tap
  - name: tag-tracks
    destination: hook
    if: type = "track"
    set_properties: {properties.via: '"hook"'}
  - name: hash-email
    destination: hook
    if: traits.email != null
    hash_properties: [traits.email]
"""
DEBUG_DROP = 'filter 1 ("Debug events"): DROP where type = "track" and match(event, "Debug *")'
SAMPLED_OUT = 'filter 2 ("Half the users"): SAMPLE 50% on userId (all events): not sampled'
BY_MESSAGE_ID = " (userId is null or absent: sampled by messageId)"
USERS = [f"user-{n}" for n in range(60)]


def varied_events(round_: int, count: int) -> list[dict[str, Any]]:
    """``count`` events of 8 shapes; each user of USERS gets several shapes, a few events
    are anonymous (the sample then hashes the messageId)."""
    events = []
    for n in range(count):
        user = USERS[n % len(USERS)]
        shape = (n // len(USERS) + n + round_) % 8
        mid = f"r{round_}-{n}"
        base: dict[str, Any] = {"userId": user, "messageId": mid}
        if n % 37 == 5:
            base = {"anonymousId": f"anon-{n}", "messageId": mid}
        if shape == 0:
            event = {
                "type": "track",
                "event": "Order Completed",
                "properties": {
                    "order_id": f"o{n}",
                    "revenue": n,
                    "email": f"{user}@example.com",
                    "products": [{"product_id": "p1", "price": 3.5, "name": "Sock"}],
                },
            }
        elif shape == 1:
            event = {"type": "track", "event": "Debug Click", "properties": {"button": "b"}}
        elif shape == 2:  # renamed by the source transformation fix-order
            event = {
                "type": "track",
                "event": "order_completed",
                "properties": {"order_id": f"o{n}", "revenue": n * 2},
            }
        elif shape == 3:
            event = {
                "type": "identify",
                "traits": {"email": f"{user}@Example.com", "plan": "pro", "phone": "555-0100"},
            }
        elif shape == 4:
            event = {
                "type": "page",
                "name": "Home",
                "properties": {"path": "/", "email": "x@example.com"},
            }
        elif shape == 5:  # renamed to "Debug Tap" at the source, then dropped by filter 1
            event = {"type": "track", "event": "debug_tap", "properties": {"x": n}}
        elif shape == 6:  # lower case: match() is case-sensitive, so this one is kept
            event = {
                "type": "track",
                "event": "debug click",
                "properties": {"x": n},
                "context": {"locale": "de-DE"},
            }
        else:
            event = {"type": "identify", "traits": {"name": "Ann"}}
        events.append(base | event)
    return events


def expected_delivery(event: dict[str, Any]) -> dict[str, Any]:
    """What the hook should receive for a stored event the filters let through, by hand:
    DROP_PROPERTIES, then ALLOW_PROPERTIES, then the destination's transformations."""
    out = json.loads(json.dumps(event))
    props = out.get("properties")
    if isinstance(props, dict):
        props.pop("email", None)
        for product in props.get("products", []):
            product.pop("price", None)
    out.get("context", {}).pop("ip", None)
    if out["type"] == "identify":
        out["traits"] = {k: v for k, v in out["traits"].items() if k in ("plan", "email")}
    if out["type"] == "track":
        out["properties"]["via"] = "hook"
    email = out.get("traits", {}).get("email")
    if email is not None:
        out["traits"]["email"] = hashlib.sha256(email.encode()).hexdigest()
    return out


def is_debug(event: dict[str, Any]) -> bool:
    """``type = "track" and match(event, "Debug *")``, on the event as stored."""
    return event["type"] == "track" and event["event"].startswith("Debug ")


def settle(server: Server, fake: FakeDestination, total: int) -> dict[str, dict[str, Any]]:
    """Wait until the hook has an outcome for ``total`` events; the events delivered."""

    def done() -> bool:
        report = server.api("/api/v1/destinations/hook/delivery", window="1h").json()
        return report["counts"]["filtered"] + len(fake.events()) >= total

    wait_until(f"{total} events delivered or filtered", done)
    events = fake.events()
    delivered = {e["messageId"]: e for e in events}
    assert len(events) == len(delivered), "an event was delivered twice"
    return delivered


def users_sampled_in(
    log: dict[str, dict[str, Any]], delivered: dict[str, dict[str, Any]]
) -> dict[str, bool]:
    """Which users the 50% sample lets through, read off the deliveries: each user's
    events (but debug ones) are all in or all out, and about half the users are in."""
    seen: dict[str, set[bool]] = {}
    for mid, event in log.items():
        user = event.get("userId")
        if user is not None and not is_debug(event):
            seen.setdefault(user, set()).add(mid in delivered)
    split = sorted(u for u, sides in seen.items() if len(sides) > 1)
    assert not split, f"users with some events delivered and some not: {split[:5]}"
    user_in = {u: sides.pop() for u, sides in seen.items()}
    share = sum(user_in.values()) / len(user_in)
    assert len(user_in) == len(USERS) and 0.3 <= share <= 0.7, f"{share:.0%} of users in"
    return user_in


def allowed_reasons(event: dict[str, Any], user_in: dict[str, bool]) -> set[str | None]:
    """The outcomes the filters allow for a stored event: None (delivered) or the reason it
    is filtered. SAMPLE actions run before DROPs, so a sampled-out user's debug event is
    filtered by the sample."""
    user = event.get("userId")
    if user is None:  # sampled by messageId: in or out, we cannot say which
        return {SAMPLED_OUT + BY_MESSAGE_ID, DEBUG_DROP if is_debug(event) else None}
    if not user_in[user]:
        return {SAMPLED_OUT}
    return {DEBUG_DROP if is_debug(event) else None}


def test_filters_deliver_exactly_what_they_allow(
    fake: FakeDestination, make_server: Any, tmp_path: Path
) -> None:
    server = make_server(webhook_yaml(fake.url, batch_max_events=50) + FILTERS + NO_CANARY)
    first = varied_events(1, 300)
    for i in range(0, len(first), 100):
        post_batch(server, first[i : i + 100])
    log = {m: e for m, (_, e) in stored(server).items()}
    assert set(log) == {e["messageId"] for e in first}

    # the source transformations: in the stored event (and below, in its trace)
    renamed = log["r1-1"]  # shape 2
    assert renamed["event"] == "Order Completed"
    assert renamed["properties"] == {"order_id": "o1", "total": 2}
    assert log["r1-4"]["event"] == "Debug Tap"  # shape 5

    delivered = settle(server, fake, len(log))
    user_in = users_sampled_in(log, delivered)
    counted = filter_stats(server)  # before any trace is read (see the last test)
    trace = server.api("/api/v1/events/r1-1").json()
    details = [s["detail"] for s in trace["stages"] if s["stage"] == "transformation"]
    assert details == [
        'renamed event "order_completed" → "Order Completed" (transformation "fix-order")',
        'renamed properties.revenue → properties.total (transformation "fix-order")',
    ], trace["stages"]
    reasons = check_outcomes(server, log, delivered, user_in)

    # the per-filter counters (GET /api/v1/destinations/hook) and the delivery report agree
    identifies = sum(1 for m in delivered if log[m]["type"] == "identify")
    assert counted[1]["dropped"] == reasons[DEBUG_DROP], counted
    assert counted[2]["matched"] == len(log), "filter 2's condition is `all`"
    assert counted[2]["sampled_out"] == reasons[SAMPLED_OUT] + reasons[SAMPLED_OUT + BY_MESSAGE_ID]
    assert counted[3]["modified"] == len(delivered), "every event had context.ip"
    assert counted[4]["modified"] == counted[4]["matched"] == identifies, counted
    report = server.api("/api/v1/destinations/hook/delivery", window="1h").json()
    assert report["counts"]["filtered"] == sum(reasons.values())
    assert report["counts"]["delivered"] == len(delivered)
    assert {r["reason"]: r["events"] for r in report["filteredReasons"]} == dict(reasons)

    # SAMPLE is deterministic: the same users, other events, the same decision
    second = varied_events(2, 120)
    post_batch(server, second[:60])
    post_batch(server, second[60:])
    log = {m: e for m, (_, e) in stored(server).items()}
    delivered = settle(server, fake, len(log))
    for event in second:
        mid, user = event["messageId"], event.get("userId")
        if user is not None:
            want = user_in[user] and not is_debug(log[mid])
            assert (mid in delivered) == want, f"{user} changed sides: {mid}"

    check_preview_and_cli(server, tmp_path, log, delivered, user_in)


def check_outcomes(
    server: Server,
    log: dict[str, dict[str, Any]],
    delivered: dict[str, dict[str, Any]],
    user_in: dict[str, bool],
) -> Counter[str]:
    """Each event is delivered exactly as the filters shape it, or filtered with a reason
    they allow; the counts of the reasons."""
    reasons: Counter[str] = Counter()
    for mid, trace in traces(server, list(log)).items():
        event = log[mid]
        [state] = trace["destinations"]
        allowed = allowed_reasons(event, user_in)
        if mid in delivered:
            assert None in allowed, f"{mid} should not have been delivered: {allowed}"
            assert delivered[mid] == expected_delivery(event), mid
            assert state["state"] == "delivered", state
            shaped = state["filters"]  # the trace shows what the destination gets
            assert (shaped["decision"], shaped["event"]) == ("modified", delivered[mid]), mid
        else:
            assert state["state"] == "filtered" and state["terminal"], state
            assert state["reason"] in allowed, f"{mid}: {state['reason']} not in {allowed}"
            assert state["filters"]["detail"] == state["reason"], state
            reasons[state["reason"]] += 1
    assert reasons[DEBUG_DROP] and reasons[SAMPLED_OUT], reasons
    return reasons


def check_preview_and_cli(
    server: Server,
    tmp_path: Path,
    log: dict[str, dict[str, Any]],
    delivered: dict[str, dict[str, Any]],
    user_in: dict[str, bool],
) -> None:
    """The preview endpoint and `headwater filters test` say what happened to events."""
    samples = pick_samples(log, delivered, user_in)
    for mid in samples:
        event = log[mid]
        preview = admin_call(server, "POST", "/api/v1/destinations/hook/filters/preview",
                             json={"event": event})  # fmt: skip
        path = tmp_path / f"{mid}.json"
        path.write_text(json.dumps(event))
        run = cli(None, "filters", "test", "--destination", "hook", "--event", str(path),
                  "--config", str(server.config))  # fmt: skip
        assert run.returncode == 0, run.stderr
        if mid in delivered:
            assert preview["decision"] == "modified", preview
            assert preview["event"] == delivered[mid]
            assert "MODIFIED; the destination gets:" in run.stdout, run.stdout
            assert json.loads(run.stdout[run.stdout.index("\n{") :]) == delivered[mid]
        else:
            reason = server.api(f"/api/v1/events/{mid}").json()["destinations"][0]["reason"]
            assert (preview["decision"], preview["reason"]) == ("dropped", reason), preview
            assert f"DROPPED: {reason}" in run.stdout, run.stdout
    # a proposed filter, tried without changing the workspace
    proposed = admin_call(
        server, "POST", "/api/v1/destinations/hook/filters/preview",
        json={"event": log[samples[0]], "filters": [
            {"name": "Orders out", "if": 'event = "Order Completed"',
             "actions": [{"type": "DROP"}]}]},
    )  # fmt: skip
    assert proposed["decision"] == "dropped", proposed
    assert proposed["reason"] == 'filter 1 ("Orders out"): DROP where event = "Order Completed"'


def filter_stats(server: Server) -> dict[int, dict[str, Any]]:
    """What each filter of the hook has done since the server started, by filter number."""
    doc = admin_call(server, "GET", "/api/v1/destinations/hook")
    return {entry["filter"]: entry for entry in doc["filterStats"]}


def pick_samples(
    log: dict[str, dict[str, Any]], delivered: dict[str, Any], user_in: dict[str, bool]
) -> list[str]:
    """A delivered order, a delivered identify, a dropped debug event, a sampled-out one."""

    def first(check: Callable[[str, dict[str, Any]], bool]) -> str:
        return next(m for m, e in log.items() if check(m, e))

    def kept(e: dict[str, Any]) -> bool:
        return bool(e.get("userId")) and user_in[e["userId"]]

    return [
        first(lambda m, e: m in delivered and e.get("event") == "Order Completed"),
        first(lambda m, e: m in delivered and e["type"] == "identify" and "email" in e["traits"]),
        first(lambda m, e: kept(e) and is_debug(e)),
        first(lambda m, e: bool(e.get("userId")) and not kept(e)),
    ]


def test_trace_names_what_changed_a_delivered_event(
    fake: FakeDestination, make_server: Any
) -> None:
    """docs/fql.md: "An event the filters changed is delivered changed; its trace lists the
    filters that did it", and each transformation's change "is written to the event's
    trace"."""
    server = make_server(
        webhook_yaml(fake.url) + "    filters:\n"
        "      - name: No PII\n        if: all\n"
        "        actions: [{type: DROP_PROPERTIES, fields: {properties: [email]}}]\n"
        "transformations:\n"
        "  - name: tag-tracks\n    destination: hook\n"
        "    set_properties: {properties.via: '\"hook\"'}\n" + NO_CANARY
    )
    event = {"type": "track", "event": "Signed Up", "userId": "u", "messageId": "changed-1",
             "properties": {"email": "a@example.com", "plan": "pro"}}  # fmt: skip
    post_batch(server, [event])
    fake.wait_for(lambda f: len(f.events()) == 1)
    assert fake.events()[0]["properties"] == {"plan": "pro", "via": "hook"}
    trace = server.api("/api/v1/events/changed-1").json()
    [state] = trace["destinations"]
    assert state["state"] == "delivered"
    history = [{k: v for k, v in row.items() if k != "exchange"} for row in state["history"]]
    told = "\n".join(strings([trace["stages"], {**state, "history": history}]))
    assert 'filter 1 ("No PII"): DROP_PROPERTIES properties.email' in told, told
    assert 'set properties.via = "hook" (transformation "tag-tracks")' in told, told


def strings(value: Any) -> list[str]:
    """Every string in a JSON value (the trace's wording, wherever it puts it)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def test_reading_a_trace_does_not_count_as_filtering(
    fake: FakeDestination, make_server: Any
) -> None:
    server = make_server(webhook_yaml(fake.url) + FILTERS + NO_CANARY)
    post_batch(server, varied_events(3, 16))
    settle(server, fake, 16)
    before = filter_stats(server)
    traces(server, [f"r3-{n}" for n in range(16)])
    assert filter_stats(server) == before, "filterStats count events, not trace views"
