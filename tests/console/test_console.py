"""The console in-process: the real Headwater app, a real log, fake destinations (one that
refuses with 401, one that accepts), driven over ASGI with httpx."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.console.app import safe_next
from headwater.console.charts import delivery_chart, nice_max
from headwater.console.sessions import LOGIN_FAILURES_PER_MINUTE
from headwater.state.admin_token import load_admin_token
from tests.fakes import FakeDestination, always

TOKEN = "hwa_console_test_token_0123456789"
KEY = "wk_console_site_1"
PAGES = [
    "/console/",
    "/console/sources",
    "/console/sources/website",
    "/console/destinations",
    "/console/destinations/rejecting",
    "/console/trace?id=m-1",
    "/console/diagnose?window=24h",
]


@dataclass
class Console:
    app: Headwater
    client: httpx.AsyncClient
    rejecting: FakeDestination
    accepting: FakeDestination

    async def track(self, message_id: str, **fields: Any) -> None:
        body = {"userId": "u1", "event": "Order Completed", "messageId": message_id, **fields}
        response = await self.client.post("/v1/track", json=body, auth=(KEY, ""))
        assert response.status_code == 200, response.text

    async def delivered(self, message_id: str) -> None:
        """Wait until both destinations have an outcome for ``message_id``."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            trace = await self.app.observer.trace(message_id)
            if all(d["state"] in ("delivered", "discarded") for d in trace["destinations"]):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{message_id} was not delivered in 10 s: {trace['destinations']}")


@pytest.fixture
def fakes() -> Iterator[tuple[FakeDestination, FakeDestination]]:
    refusing = always(401, body=b'{"error":"invalid api key"}')
    with FakeDestination(refusing) as rejecting, FakeDestination(always(200)) as accepting:
        yield rejecting, accepting


async def _start(data_dir: Path, fakes: Any, base_url: str, **extra: Any) -> AsyncIterator[Console]:
    rejecting, accepting = fakes
    workspace = parse_workspace(
        {
            "sources": [{"name": "website", "write_key": KEY}],
            "destinations": [
                {"name": "rejecting", "type": "webhook", "sources": ["website"],
                 "settings": {"url": f"{rejecting.url}/hook",
                              "headers": {"Authorization": "Bearer dest-secret"}}},
                {"name": "accepting", "type": "webhook", "sources": ["website"],
                 "settings": {"url": f"{accepting.url}/hook"}},
            ],
            "log": {"durability": "os"},
            "status": {"canary_enabled": False},
            **extra,
        }
    )  # fmt: skip
    token = load_admin_token(data_dir, {"HEADWATER_ADMIN_TOKEN": TOKEN})
    app = Headwater(workspace, data_dir, admin_token=token)
    await app.start()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    client = httpx.AsyncClient(transport=transport, base_url=base_url)
    try:
        yield Console(app, client, rejecting, accepting)
    finally:
        await client.aclose()
        await app.stop()


@pytest.fixture
async def console(tmp_path: Path, fakes: Any) -> AsyncIterator[Console]:
    async for c in _start(tmp_path / "data", fakes, "http://hw.test"):
        yield c


@pytest.fixture
async def https_console(tmp_path: Path, fakes: Any) -> AsyncIterator[Console]:
    async for c in _start(tmp_path / "data", fakes, "https://hw.test"):
        yield c


@pytest.fixture
async def proxied_console(tmp_path: Path, fakes: Any) -> AsyncIterator[Console]:
    """Behind a TLS-terminating proxy at 127.0.0.1 (the test client's address)."""
    gateway = {"trusted_proxies": ["127.0.0.1/32"]}
    async for c in _start(tmp_path / "proxied", fakes, "http://hw.test", gateway=gateway):
        yield c


def _form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no form with a csrf_token"
    return match.group(1)


async def login(
    client: httpx.AsyncClient, token: str = TOKEN, next_: str = "", **headers: str
) -> httpx.Response:
    page = await client.get("/console/login", params={"next": next_} if next_ else None)
    assert page.status_code == 200
    data = {"csrf_token": _form_csrf(page.text), "token": token, "next": next_ or "/console/"}
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return await client.post("/console/login", data=data, headers=sent)


def _set_cookies(response: httpx.Response, name: str) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]


# ---------------------------------------------------------------------- signing in and out


async def test_root_redirects_to_the_console(console: Console) -> None:
    response = await console.client.get("/")
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"] == "/console/"


async def test_signed_out_pages_redirect_to_login(console: Console) -> None:
    for path in PAGES:
        response = await console.client.get(path)
        assert response.status_code == 303, path
        location = urlsplit(response.headers["location"])
        assert location.path == "/console/login"
        assert parse_qs(location.query)["next"] == [path]
        assert "website" not in response.text


async def test_right_token_sets_a_strict_httponly_session_cookie(console: Console) -> None:
    response = await login(console.client, next_="/console/destinations")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/destinations"
    [cookie] = _set_cookies(response, "hw_session")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    page = await console.client.get("/console/destinations")
    assert page.status_code == 200
    assert "rejecting" in page.text


async def test_session_cookie_is_secure_over_https(https_console: Console) -> None:
    response = await login(https_console.client)
    assert response.status_code == 303
    [cookie] = _set_cookies(response, "hw_session")
    assert "secure" in [a.strip().lower() for a in cookie.split(";")]


async def test_forwarded_https_is_believed_only_from_trusted_proxies(
    console: Console, proxied_console: Console
) -> None:
    untrusted = await login(console.client, x_forwarded_proto="https")
    [cookie] = _set_cookies(untrusted, "hw_session")
    assert "secure" not in [a.strip().lower() for a in cookie.split(";")]
    trusted = await login(proxied_console.client, x_forwarded_proto="https")
    [cookie] = _set_cookies(trusted, "hw_session")
    assert "secure" in [a.strip().lower() for a in cookie.split(";")]


async def test_wrong_token_is_401_with_the_form_and_no_cookie(console: Console) -> None:
    response = await login(console.client, token="hwa_not_the_token_at_all")
    assert response.status_code == 401
    assert _set_cookies(response, "hw_session") == []
    assert "That is not a valid token" in response.text
    assert 'type="password"' in response.text
    assert (await console.client.get("/console/")).status_code == 303  # still signed out


async def test_login_is_rate_limited_per_client(console: Console) -> None:
    for _ in range(LOGIN_FAILURES_PER_MINUTE):
        assert (await login(console.client, token="wrong-token-xxxxxxxx")).status_code == 401
    response = await login(console.client)  # even the right token, for a minute
    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    assert _set_cookies(response, "hw_session") == []
    assert "wait a minute" in response.text


async def test_behind_a_trusted_proxy_the_limit_is_per_forwarded_address(
    proxied_console: Console,
) -> None:
    client = proxied_console.client
    for _ in range(LOGIN_FAILURES_PER_MINUTE):
        response = await login(client, token="wrong-token-xxxxxxxx", x_forwarded_for="203.0.113.5")
        assert response.status_code == 401
    assert (await login(client, x_forwarded_for="203.0.113.5")).status_code == 429
    assert (await login(client, x_forwarded_for="203.0.113.6")).status_code == 303


async def test_login_post_without_its_csrf_value_is_refused(console: Console) -> None:
    await console.client.get("/console/login")  # sets the form's cookie
    response = await console.client.post(
        "/console/login", data={"token": TOKEN, "csrf_token": "forged", "next": "/console/"}
    )
    assert response.status_code == 403
    assert _set_cookies(response, "hw_session") == []
    assert "expired" in response.text
    console.client.cookies.clear()  # a cross-site form: no cookie of ours at all
    response = await console.client.post("/console/login", data={"token": TOKEN})
    assert response.status_code == 403
    assert _set_cookies(response, "hw_session") == []
    await console.client.get("/console/login")  # a non-ASCII value is refused, not a 500
    response = await console.client.post("/console/login", data={"token": TOKEN,
                                                                 "csrf_token": "é"})  # fmt: skip
    assert response.status_code == 403


EVIL_TARGETS = [
    "https://evil.example/",
    "//evil.example/console/",
    "/\\evil.example",
    "/\t/evil.example",
    "javascript:alert(1)",
    "http:/console/",
    "/status",
]


async def test_next_is_never_another_site(console: Console) -> None:
    for target in EVIL_TARGETS:
        page = await console.client.get("/console/login", params={"next": target})
        assert 'name="next" value="/console/"' in page.text, target
        response = await console.client.post(
            "/console/login",
            data={"csrf_token": _form_csrf(page.text), "token": TOKEN, "next": target},
        )
        assert response.status_code == 303, target
        assert response.headers["location"] == "/console/", target
        console.client.cookies.delete("hw_session")


def test_safe_next_keeps_console_paths() -> None:
    assert (
        safe_next("/console/destinations/hook?window=24h")
        == "/console/destinations/hook?window=24h"
    )
    assert safe_next("/console") == "/console"
    assert safe_next("/consolex") == "/console/"
    assert safe_next(None) == "/console/"


async def test_logout_needs_the_csrf_token(console: Console) -> None:
    await login(console.client)
    session = console.client.cookies["hw_session"]
    refused = await console.client.post("/console/logout", data={})
    assert refused.status_code == 403
    assert "CSRF token" in refused.text
    refused = await console.client.post("/console/logout", data={"csrf_token": "guess"})
    assert refused.status_code == 403
    refused = await console.client.post("/console/logout", data={"csrf_token": "güess"})
    assert refused.status_code == 403
    api_post = await console.client.post("/api/v1/sources/website/blocked/resend",
                                         headers={"x-csrf-token": "gü".encode("latin-1")})  # fmt: skip
    assert api_post.status_code == 401
    page = await console.client.get("/console/")
    assert page.status_code == 200, "a refused logout must not end the session"

    response = await console.client.post(
        "/console/logout", data={"csrf_token": _form_csrf(page.text)}
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login")
    assert _set_cookies(response, "hw_session"), "the cookie is cleared"
    console.client.cookies.set("hw_session", session)  # replayed by someone who kept it
    after = await console.client.get("/console/")
    assert after.status_code == 303, "the old session id no longer works"
    assert "You are signed out" in (await console.client.get(response.headers["location"])).text


async def test_api_takes_the_session_cookie_for_reads_only(console: Console) -> None:
    await login(console.client)
    response = await console.client.get("/api/v1/sources/website/debugger")
    assert response.status_code == 200
    console.client.cookies.clear()
    assert (await console.client.get("/api/v1/sources/website/debugger")).status_code == 401


# ---------------------------------------------------------------------- pages


async def test_pages_render_the_workspace(console: Console) -> None:
    await console.track("m-1", properties={"total": 42})
    wrong = await console.client.post("/v1/track", json={"userId": "u", "event": "E"},
                                      auth=("wk_nobody_knows", ""))  # fmt: skip
    assert wrong.status_code == 401
    await console.delivered("m-1")
    await login(console.client)

    overview = (await console.client.get("/console/?window=24h")).text
    assert 'aria-current="true">24h</a>' in overview
    assert re.search(r'data-step="received">1<', overview)
    assert 'data-destination="rejecting"' in overview and 'data-destination="accepting"' in overview
    assert "2 critical" in overview and 'href="/console/diagnose?window=24h"' in overview

    sources = (await console.client.get("/console/sources")).text
    assert 'href="/console/sources/website"' in sources and "wk_c" in sources

    source = (await console.client.get("/console/sources/website")).text
    assert 'data-stream="/api/v1/sources/website/debugger/stream"' in source
    assert 'data-message-id="m-1"' in source and "Order Completed" in source
    assert re.search(r'<script src="/console/static/console\.js\?v=\w+" defer>', source)
    assert 'data-kind="rejected"' in source
    assert '<strong class="reject">401 invalid_write_key</strong>' in source

    destinations = (await console.client.get("/console/destinations")).text
    assert 'href="/console/destinations/rejecting?window=1h"' in destinations

    dest = await console.client.get("/console/destinations/rejecting")
    assert dest.status_code == 200
    html = dest.text
    assert re.search(r'<svg[^>]*role="img"[^>]*aria-labelledby="chart-title chart-desc"', html)
    assert '<title id="chart-title">Events delivered, retried and failed per 1 minute' in html
    assert 'class="bar-failed"' in html
    assert 'data-count="discarded">1<' in html
    assert 'data-status="401"' in html
    for pane in ("You sent", "Request to destination", "Response from destination"):
        assert f"<h4>{pane}</h4>" in html
    assert 'href="/console/trace?id=m-1"' in html
    assert "invalid api key" in html
    assert "dest-secret" not in html, "secrets in the request are redacted"

    trace = await console.client.get("/console/trace?id=m-1")
    assert trace.status_code == 200
    assert 'data-destination="rejecting" data-state="discarded"' in trace.text
    assert 'data-destination="accepting" data-state="delivered"' in trace.text
    assert "accepted from source website" in trace.text

    diagnose = (await console.client.get("/console/diagnose?destination=rejecting")).text
    assert "credentials invalid or rotated (401)" in diagnose
    assert '<option value="rejecting" selected>' in diagnose
    assert 'href="/console/trace?id=m-1"' in diagnose
    everything = (await console.client.get("/console/diagnose")).text
    assert "requests with the unknown write key" in everything
    assert "<caption>Newest refused requests</caption>" in everything


async def test_unknown_message_id_shows_the_retention_message(console: Console) -> None:
    await login(console.client)
    response = await console.client.get("/console/trace", params={"id": "nope-123"})
    assert response.status_code == 404
    assert "no event with messageId &#39;nope-123&#39; in the log" in response.text
    assert "keeps events for 7 days" in response.text
    assert 'value="nope-123"' in response.text  # the form keeps what was searched


async def test_unknown_names_and_bad_windows_explain_themselves(console: Console) -> None:
    await login(console.client)
    missing = await console.client.get("/console/sources/nope")
    assert missing.status_code == 404
    assert "the sources are: website" in missing.text
    bad = await console.client.get("/console/destinations/rejecting?window=1y")
    assert bad.status_code == 400
    assert "is not a duration" in bad.text
    unknown = await console.client.get("/console/nope")
    assert unknown.status_code == 404
    assert "is not a page of the console" in unknown.text
    slash = await console.client.get("/console/sources/?window=24h")
    assert slash.headers["location"] == "/console/sources?window=24h"


async def test_event_content_is_escaped(console: Console) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await console.track("m-<b>", properties={"note": evil}, event=evil)
    await console.delivered("m-<b>")
    await login(console.client)
    pages = [
        "/console/sources/website",
        "/console/destinations/rejecting",
        "/console/trace?id=m-%3Cb%3E",
    ]
    for path in pages:
        html = (await console.client.get(path)).text
        assert "&lt;script&gt;alert(" in html, path
        assert "<script>alert" not in html, path
        assert "<img src=x" not in html, path
        assert "<b>" not in html, path


async def test_console_responses_carry_security_headers(console: Console) -> None:
    login_page = await console.client.get("/console/login")
    await login(console.client)
    for response in (login_page, await console.client.get("/console/")):
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp.split("style-src")[0]  # no inline script
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cache-control"] == "no-store"


async def test_static_files_need_no_login_and_nothing_external(console: Console) -> None:
    css = await console.client.get("/console/static/console.css?v=1")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    js = await console.client.get("/console/static/console.js")
    assert js.status_code == 200 and "EventSource" in js.text
    for other in ("/console/static/app.py", "/console/static/sessions.py"):
        assert (await console.client.get(other)).status_code == 404, other
    await login(console.client)
    for path in PAGES[:5]:
        html = (await console.client.get(path)).text
        assert not re.findall(r'(?:src|href)="(?:https?:)?//', html), path


async def test_forms_are_labelled_and_tables_have_scoped_headers(console: Console) -> None:
    await console.track("m-1")
    await console.delivered("m-1")
    await login(console.client)
    for path in PAGES:
        html = (await console.client.get(path)).text
        assert '<a class="skip-link" href="#main">' in html and '<main id="main"' in html
        for field in re.findall(r'<(?:input|select)\b[^>]*\bid="([^"]+)"', html):
            assert f'<label for="{field}">' in html, f"{path}: #{field} has no label"
        assert "<th>" not in html, f"{path}: a header cell without scope"
        assert "onclick" not in html and '<div role="button"' not in html


# ---------------------------------------------------------------------- the chart


def test_chart_stacks_delivered_retried_failed_on_a_round_axis() -> None:
    series = [
        {"atMs": 60_000 * i, "delivered": d, "retried": r, "failed": f}
        for i, (d, r, f) in enumerate([(0, 0, 0), (5, 1, 1), (0, 0, 0), (2, 0, 0)])
    ]
    chart = delivery_chart(series, "1h")
    assert [c.at_ms for c in chart.columns] == [60_000, 180_000]
    first = chart.columns[0]
    assert [b.kind for b in first.bars] == ["delivered", "retried", "failed"]
    assert first.bars[0].y + first.bars[0].height == chart.bottom  # delivered on the axis
    assert first.bars[1].y + first.bars[1].height == pytest.approx(first.bars[0].y)
    assert first.title.endswith("5 delivered, 1 retried, 1 failed")
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6", "8"]
    assert chart.totals == {"delivered": 7, "retried": 1, "failed": 1}
    assert "per 1 minute, last 1h" in chart.title


def test_empty_chart_says_so() -> None:
    chart = delivery_chart([{"atMs": 0, "delivered": 0, "retried": 0, "failed": 0}], "1h")
    assert chart.columns == []
    assert chart.description == "No delivery attempts in this window."


@pytest.mark.parametrize(
    ("peak", "top", "step"), [(0, 4, 1), (1, 1, 1), (7, 8, 2), (100, 100, 50), (1234, 1500, 500)]
)
def test_axis_top_is_round(peak: int, top: int, step: int) -> None:
    assert nice_max(peak) == (top, step)
