"""The console in a real browser (Debian's chromium via Playwright) against a real server:
sign in, watch an event arrive live in the Debugger, open a destination's error sample,
trace the event, find the broken credentials in Diagnose, see a tracking plan's
violations, and send a pasted event through the Event tester. Screenshots of each step go to
test-artifacts/console-*.png."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, OTHER_KEY, WRITE_KEY, Server
from tests.fakes import FakeDestination, always

ARTIFACTS = Path(os.environ.get("HEADWATER_ARTIFACTS", "test-artifacts"))
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 10_000


@pytest.fixture
def destinations() -> Iterator[tuple[FakeDestination, FakeDestination]]:
    refusing = always(401, body=b'{"error":"invalid api key"}')
    with FakeDestination(refusing) as rejecting, FakeDestination(always(200)) as accepting:
        yield rejecting, accepting


def _server(make_server: Any, rejecting: FakeDestination, accepting: FakeDestination) -> Server:
    server: Server = make_server(
        "destinations:\n"
        f"  - {{name: crm, type: webhook, sources: [website], settings: {{url: '{rejecting.url}/hook'}}}}\n"
        f"  - {{name: warehouse, type: webhook, sources: [website], settings: {{url: '{accepting.url}/hook'}}}}\n"
        "status: {canary_enabled: false}\n"
        "tracking_plans:\n"
        "  - name: orders\n"
        "    sources: [backend]\n"
        "    enforcement: {on_violation: block}\n"
        "    rules:\n"
        "      - {type: TRACK, key: Order Completed, jsonSchema: {type: object, properties: "
        "{properties: {type: object, properties: {revenue: {type: number}}, "
        "required: [revenue]}}}}\n"
    )
    return server


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def _wait_until(check: Any, what: str, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_console_in_a_real_browser(make_server: Any, destinations: Any) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    rejecting, accepting = destinations
    server = _server(make_server, rejecting, accepting)
    message_id = f"e2e-{uuid.uuid4()}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        requests: list[str] = []
        problems: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        failed: list[tuple[int, str, str]] = []
        page.on("response", lambda r: failed.append((r.status, r.request.method, r.url))
                if r.status >= 400 else None)  # fmt: skip
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text else None)  # fmt: skip
        page.on("pageerror", lambda e: problems.append(str(e)))

        # sign in: the console sends a stranger to the login page, and back after
        page.goto(f"{server.url}/")
        expect(page).to_have_url(f"{server.url}/console/login?next=%2Fconsole%2F")
        expect(page.get_by_label("Token", exact=True)).to_be_focused()  # autofocus
        page.get_by_label("Token", exact=True).fill("not-the-token-at-all")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("That is not a valid token")
        _shot(page, "1-login-refused")
        page.get_by_label("Token", exact=True).fill(ADMIN_TOKEN)
        page.get_by_label("Token", exact=True).press("Enter")
        expect(page).to_have_url(f"{server.url}/console/")
        expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
        page.keyboard.press("Tab")  # keyboard users first meet the skip link
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        _shot(page, "2-overview")

        # the Debugger: an event sent now appears without a reload
        page.get_by_role("link", name="Sources", exact=True).click()
        page.get_by_role("link", name="website", exact=True).click()
        status = page.locator("#debugger-status")
        expect(status).to_have_attribute("data-state", "live")
        page.evaluate("window.__notReloaded = true")
        response = httpx.post(
            f"{server.url}/v1/track", auth=(WRITE_KEY, ""), timeout=10,
            json={"userId": "u-7", "event": "Order Completed", "messageId": message_id,
                  "properties": {"total": 42, "note": "<b>not bold</b>"}},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        entry = page.locator(f'#debugger-entries li[data-message-id="{message_id}"]')
        expect(entry).to_be_visible()
        assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
        expect(page.locator("#debugger-entries li").first).to_have_attribute(
            "data-message-id", message_id
        )
        refused = httpx.post(f"{server.url}/v1/track", auth=("wk_unknown_key", ""), timeout=10,
                             json={"userId": "u-7", "event": "Lost"})  # fmt: skip
        assert refused.status_code == 401
        rejected = page.locator('#debugger-entries li[data-kind="rejected"]').first
        expect(rejected).to_contain_text("401 invalid_write_key")
        expect(rejected).to_contain_text("is not known to this Headwater")
        entry.locator("summary").first.click()
        pretty = entry.locator("pre.json").first
        expect(pretty).to_contain_text('"total": 42')
        expect(pretty).to_contain_text("<b>not bold</b>")  # shown as text, not markup
        assert entry.locator("b").count() == 0
        entry.get_by_text("Raw JSON").click()
        expect(entry.locator("details.raw pre")).to_contain_text(f'"messageId":"{message_id}"')
        _shot(page, "3-debugger-live")

        # Event Delivery of the destination that answers 401: its error and sample
        _wait_until(lambda: rejecting.requests, "the 401 destination to be called")
        _wait_until(
            lambda: server.api("/api/v1/destinations/crm/delivery").json()["errors"],
            "the 401 to be recorded",
        )
        page.get_by_role("link", name="Destinations", exact=True).click()
        page.get_by_role("link", name="crm", exact=True).click()
        expect(page.locator("svg.delivery-chart")).to_have_attribute(
            "aria-labelledby", "chart-title chart-desc"
        )
        assert page.locator("svg.delivery-chart rect.bar-failed").count() >= 1
        row = page.locator("tr.error-row").first
        expect(row).to_contain_text("401")
        expect(row).to_contain_text("invalid api key")
        sample = page.locator("details.sample").first
        sample.locator("summary").click()
        for pane in ("You sent", "Request to destination", "Response from destination"):
            expect(sample.get_by_role("heading", name=pane)).to_be_visible()
        expect(sample.locator(".status-code")).to_have_text("401")
        expect(sample.locator('section[aria-label="You sent"] pre')).to_contain_text(message_id)
        expect(sample.locator('section[aria-label="Request to destination"]')).to_contain_text(
            f"{rejecting.url}/hook"
        )
        _shot(page, "4-destination-error-sample")

        # Trace, from the Trace page's search form
        page.get_by_role("link", name="Trace", exact=True).click()
        page.get_by_label("messageId").fill(message_id)
        page.get_by_label("messageId").press("Enter")
        expect(page.locator('[data-destination="crm"]')).to_have_attribute(
            "data-state", "discarded"
        )
        _wait_until(
            lambda: any(
                d["destination"] == "warehouse" and d["state"] == "delivered"
                for d in server.api(f"/api/v1/events/{message_id}").json()["destinations"]
            ),
            "the ledger to record the delivery to warehouse",
        )
        page.reload()
        expect(page.locator('[data-destination="warehouse"]')).to_have_attribute(
            "data-state", "delivered"
        )
        crm = page.locator('[data-destination="crm"]')
        crm.locator("details.sample summary").first.click()
        expect(crm.locator(".status-code").first).to_have_text("401")
        _shot(page, "5-trace")

        # Diagnose names the cause and links the sample to its trace
        page.get_by_role("link", name="Diagnose", exact=True).click()
        finding = page.locator("li.finding", has_text="credentials invalid")
        expect(finding).to_have_attribute("data-severity", "critical")
        expect(finding).to_contain_text("crm")
        finding.locator("summary").click()
        expect(finding.get_by_role("link", name=message_id)).to_be_visible()
        _shot(page, "6-diagnose")

        # a tracking plan's violations: the blocked event's sample, and the re-send form
        blocked_id = f"{message_id}-blocked"
        blocked = httpx.post(f"{server.url}/v1/track", auth=(OTHER_KEY, ""), timeout=10,
                             json={"userId": "u-7", "event": "Order Completed",
                                   "messageId": blocked_id, "properties": {"revenue": "lots"}})  # fmt: skip
        assert blocked.status_code == 200, blocked.text
        page.get_by_role("link", name="Plans", exact=True).click()
        page.get_by_role("link", name="orders", exact=True).click()
        expect(page.locator('tr[data-field="revenue"]')).to_contain_text("number")
        page.get_by_role("link", name="backend", exact=True).click()
        event_row = page.locator('tr.event-row[data-event="Order Completed"]')
        expect(event_row.locator('[data-count="total"]')).to_have_text("1")
        expect(page.locator('[data-count="blocked"]')).to_have_text("1")
        page.locator("details.sample summary").first.click()
        field = page.locator('tr.field-row[data-field="properties.revenue"]')
        expect(field.locator("td.got")).to_have_text("string")
        expect(field.get_by_role("link", name=blocked_id)).to_be_visible()
        _shot(page, "7-violations")
        page.get_by_role("button", name="Re-send blocked events").click()
        expect(page.locator('[data-count="stillBlocked"]')).to_have_text("1")  # plan unchanged

        # the Event tester: a pasted event, stage by stage, then sent to one destination
        page.get_by_role("link", name="Event tester", exact=True).click()
        page.get_by_label("Source").select_option("website")
        tested_id = f"{message_id}-tested"
        pasted = {"type": "track", "event": "Tested", "userId": "u-7", "messageId": tested_id}
        page.get_by_label("Event (JSON)").fill(json.dumps(pasted))
        page.get_by_role("button", name="Test the event").click()
        expect(page.locator('tr[data-stage="tracking plan"]')).to_contain_text("none")
        warehouse = page.locator('section[data-destination="warehouse"]')
        expect(warehouse).to_have_attribute("data-reaches", "yes")
        expect(warehouse.locator('section[aria-label="Request 1 to destination"]')).to_contain_text(
            f"{accepting.url}/hook"
        )
        before = len(accepting.requests)
        warehouse.get_by_role("button", name="Send to warehouse for real").click()
        expect(page.locator("#tester-sent .test-result")).to_have_attribute(
            "data-result", "delivered"
        )
        expect(page.locator("#tester-sent .status-code")).to_have_text("200")
        assert [r.json()["messageId"] for r in accepting.requests[before:]] == [tested_id]
        _shot(page, "8-event-tester")

        # sign out: back at the login page, and the console is closed again
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        page.goto(f"{server.url}/console/sources")
        expect(page).to_have_url(f"{server.url}/console/login?next=%2Fconsole%2Fsources")
        browser.close()

    assert problems == [], f"errors in the browser console (CSP, script): {problems}"
    assert failed == [(401, "POST", f"{server.url}/console/login")], failed  # the wrong token
    assert all(r.startswith(server.url) for r in requests), f"external requests: {requests}"
    shots = ("2-overview", "3-debugger-live", "4-destination-error-sample", "5-trace",
             "7-violations", "8-event-tester")  # fmt: skip
    for step in shots:
        assert (ARTIFACTS / f"console-{step}.png").stat().st_size > 10_000
