"""The public status page on a running server: self-contained, and in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.status.page import UPTIME_DAYS
from tests.e2e.conftest import free_port

ARTIFACTS = Path(os.environ.get("HEADWATER_ARTIFACTS", "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _failing_server(make_server: Any) -> Any:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    server = make_server(
        "destinations:\n"
        f"  - {{name: hook, type: webhook, sources: [website], settings: {{url: '{dead}'}},\n"
        "     delivery: {breaker_failures: 1, breaker_probe_secs: 0.2}}\n"
        "status: {check_interval_secs: 0.2, canary_interval_secs: 1}\n"
    )
    httpx.post(f"{server.url}/v1/track", auth=("wk_e2e_website_1", ""),
               json={"userId": "u", "event": "E"})  # fmt: skip
    return server


def _wait_for_outage(url: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        html = httpx.get(f"{url}/status").text
        if 'data-status="major_outage"' in html:
            return html
        time.sleep(0.1)
    raise AssertionError("the page never showed the outage")


def test_page_is_self_contained(make_server: Any) -> None:
    server = _failing_server(make_server)
    html = _wait_for_outage(server.url)
    assert "<script" not in html, "the status page runs no script"
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
    assert external == [], f"external assets: {external}"
    assert 'id="component-destination:hook" data-status="major_outage"' in html
    assert 'id="component-tracking-api" data-status="operational"' in html
    assert "Destination hook: major outage" in html  # the open incident
    # five components and the processes group (writer, worker): 90 bars each
    assert html.count("<rect") == UPTIME_DAYS * 8


def test_page_in_a_real_browser(make_server: Any) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (CI installs it)")
    from playwright.sync_api import sync_playwright

    server = _failing_server(make_server)
    _wait_for_outage(server.url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{server.url}/status")
        assert page.title() == "default status"
        banner = page.locator("#overall")
        assert banner.inner_text() == "All Systems Operational · destination failing: hook"
        hook = page.locator('[id="component-destination:hook"]')
        assert "major outage" in hook.inner_text()
        assert hook.locator("rect").count() == UPTIME_DAYS
        assert page.locator(".incident h3").first.inner_text().startswith("Destination hook")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        browser.close()
    assert all(r.startswith(server.url) for r in requests), f"external requests: {requests}"
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
