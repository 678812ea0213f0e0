"""Source functions on the gateway: a Stripe-like webhook at the function's secret URL
becomes an Order Completed track in the function's source, through the real app (ASGI),
real worker processes and the real log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from headwater.app import Headwater
from headwater.cli import app as cli
from headwater.config.workspace import parse_workspace
from headwater.state.admin_token import AdminToken, _digest
from tests.console.test_console import login

METRICS_DOC = Path(__file__).parents[2] / "docs" / "metrics.md"
TOKEN = "hwa_source_functions_token_0123456"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
SIGNING_SECRET = "whsec_test_0123456789"

STRIPE = """
import hashlib
import hmac

from headwater.functions import EventNotSupported, ValidationError, analytics


def on_request(request, settings):
    header = request.headers.get("Stripe-Signature", "")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    signed = parts.get("t", "").encode() + b"." + request.body
    expected = hmac.new(settings["signing_secret"].encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise ValidationError("the Stripe-Signature does not match the body")
    event = request.json()
    if event["type"] != "checkout.session.completed":
        raise EventNotSupported(f"{event['type']} is not handled")
    session = event["data"]["object"]
    print("order", session["id"], "from", request.url.path.split("/")[3])
    analytics.track(
        event="Order Completed",
        user_id=session["client_reference_id"],
        message_id=event["id"],  # Stripe's retries of one event are one event here
        properties={"order_id": session["id"], "revenue": session["amount_total"] / 100,
                    "currency": session["currency"].upper()},
    )
"""

BROKEN = """
def on_request(request, settings):
    if request.url.query.get("mode") == ["slow"]:
        while True:
            pass
    return {"type": "track", "event": "Ok", "userId": "u"} if request.body == b"ok" else {}["x"]
"""


def stripe_event(event_id: str, kind: str = "checkout.session.completed") -> bytes:
    return orjson.dumps({
        "id": event_id, "object": "event", "type": kind, "created": 1796000000,
        "data": {"object": {"id": "cs_test_a1", "object": "checkout.session",
                            "client_reference_id": "u-42", "amount_total": 4250,
                            "currency": "eur", "payment_status": "paid"}},
    })  # fmt: skip


def signature(body: bytes, secret: str = SIGNING_SECRET) -> str:
    t = str(int(time.time()))
    v1 = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


def workspace(tmp_path: Path) -> dict[str, Any]:
    files = tmp_path / "functions"
    files.mkdir(exist_ok=True)
    (files / "stripe.py").write_text(textwrap.dedent(STRIPE))
    (files / "broken.py").write_text(textwrap.dedent(BROKEN))
    (files / "crm.py").write_text("def on_track(event, settings):\n    pass\n")
    return {
        "sources": [{"name": "payments", "write_key": "wk_payments_key_1"},
                    {"name": "website", "write_key": "wk_website_key_1"}],
        "functions": [
            {"name": "stripe", "kind": "source", "file": str(files / "stripe.py"),
             "source": "payments", "settings": {"signing_secret": {"env": "STRIPE_SECRET"}}},
            {"name": "broken", "kind": "source", "file": str(files / "broken.py"),
             "source": "website", "limits": {"timeout_secs": 1}},
        ],
        "status": {"canary_enabled": False},
    }  # fmt: skip


@pytest.fixture
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Headwater, httpx.AsyncClient]]:
    monkeypatch.setenv("STRIPE_SECRET", SIGNING_SECRET)
    app = Headwater(parse_workspace(workspace(tmp_path)), tmp_path / "data",
                    admin_token=AdminToken(_digest(TOKEN), "env"))  # fmt: skip
    await app.start()
    try:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as client:
            yield app, client
    finally:
        await app.stop()


async def url_of(client: httpx.AsyncClient, name: str) -> str:
    answer = await client.get(f"/api/v1/functions/{name}/url", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    url: str = answer.json()["url"]
    assert url.startswith(f"http://hw.test/v1/functions/{name}/")
    return url.removeprefix("http://hw.test")


async def test_a_stripe_webhook_becomes_an_order_completed_track(
    served: tuple[Headwater, httpx.AsyncClient],
) -> None:
    app, client = served
    path = await url_of(client, "stripe")
    body = stripe_event("evt_1")
    answer = await client.post(path, content=body, headers={"Stripe-Signature": signature(body)})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "accepted": 1}

    assert app.log is not None
    record = await app.log.get("evt_1")
    assert record is not None and record.source == "payments"
    stored = orjson.loads(record.payload)
    assert stored["event"] == "Order Completed" and stored["userId"] == "u-42"
    assert stored["properties"] == {"order_id": "cs_test_a1", "revenue": 42.5, "currency": "EUR"}
    assert stored["receivedAt"] and stored["messageId"] == "evt_1"
    trace = await client.get("/api/v1/events/evt_1", headers=ADMIN)
    assert trace.status_code == 200 and trace.json()["source"] == "payments"

    again = await client.post(path, content=body, headers={"Stripe-Signature": signature(body)})
    assert again.json() == {"success": True, "accepted": 1, "duplicates": 1}, "a retry dedupes"

    forged = await client.post(path, content=body,
                               headers={"Stripe-Signature": signature(body, "whsec_wrong")})  # fmt: skip
    assert forged.status_code == 400
    assert forged.json() == {"code": "function_refused", "message": "function stripe: "
                             "ValidationError: the Stripe-Signature does not match the body"}  # fmt: skip
    other = stripe_event("evt_2", "invoice.paid")
    skipped = await client.post(path, content=other, headers={"Stripe-Signature": signature(other)})
    assert skipped.status_code == 400 and "EventNotSupported" in skipped.json()["message"]
    assert await app.log.get("evt_2") is None

    stats: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stats.get("invocations", 0) < 4:
        await asyncio.sleep(0.1)  # the stats file is written each second
        stats = (await client.get("/api/v1/functions/stripe", headers=ADMIN)).json()
    assert stats["invocations"] == 4 and stats["errorsByKind"] == {
        "ValidationError": 1, "EventNotSupported": 1}  # fmt: skip
    assert stats["source"] == "payments" and stats["running"] is True
    assert any(line["line"] == "order cs_test_a1 from stripe" for line in stats["logs"])

    scrape = (await client.get("/metrics")).text
    served = {line.split(" ")[0]: line.split(" ")[1] for line in scrape.splitlines()
              if line.startswith("headwater_function_")}  # fmt: skip
    stripe = 'function="stripe",kind="source"'
    assert served[f"headwater_function_invocations_total{{{stripe}}}"] == "4.0"
    assert served[f'headwater_function_errors_total{{error="ValidationError",{stripe}}}'] == "1.0"
    assert f'headwater_function_duration_seconds{{{stripe},quantile="0.99"}}' in served
    assert served[f"headwater_function_load_error{{{stripe}}}"] == "0.0"
    names = {n.split("{")[0].removesuffix("_total") for n in served}
    documented = set(re.findall(r"^\| `(headwater_function_\w+)`", METRICS_DOC.read_text(),
                                flags=re.M))  # fmt: skip
    assert {d.removesuffix("_total") for d in documented} == names


async def test_wrong_secrets_unknown_names_and_big_bodies_are_refused(
    served: tuple[Headwater, httpx.AsyncClient],
) -> None:
    app, client = served
    path = await url_of(client, "stripe")
    for wrong in (path[:-2] + "xx", "/v1/functions/stripe", "/v1/functions/nope/abc"):
        answer = await client.post(wrong, content=b"{}")
        assert answer.status_code == 404, wrong
        assert "no source function answers at this URL" in answer.json()["message"]
    big = await client.post(path, content=b"x" * (600 * 1024))
    assert big.status_code == 400 and big.json()["code"] == "payload_too_large"
    (sample,) = app.stats.latest("payments", "payload_too_large")
    assert sample.path == "/v1/functions/stripe/…", "the secret is never in a sample"


async def test_a_failing_or_hanging_function_is_answered_500_or_503(
    served: tuple[Headwater, httpx.AsyncClient],
) -> None:
    _, client = served
    path = await url_of(client, "broken")
    ok = await client.post(path, content=b"ok")
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    failed = await client.post(path, content=b"boom")
    assert failed.status_code == 500 and failed.json()["code"] == "function_failed"
    assert "KeyError" in failed.json()["message"] and "Traceback" not in failed.text
    slow = await client.post(path + "?mode=slow", content=b"")
    assert slow.status_code == 503 and slow.headers["retry-after"] == "5"
    assert slow.json()["code"] in ("function_retry", "function_unavailable")
    after = await client.post(path, content=b"ok")
    assert after.status_code == 200, "the function answers again after a timeout"


async def test_the_url_survives_a_restart_and_other_kinds_have_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_SECRET", SIGNING_SECRET)
    ws = workspace(tmp_path)
    ws["functions"].append({"name": "crm", "kind": "destination", "sources": ["website"],
                            "file": ws["functions"][0]["file"].replace("stripe", "crm")})  # fmt: skip
    urls = []
    for _ in range(2):
        app = Headwater(parse_workspace(ws), tmp_path / "data",
                        admin_token=AdminToken(_digest(TOKEN), "env"))  # fmt: skip
        await app.start()
        try:
            transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as c:
                urls.append(await url_of(c, "stripe"))
                crm = await c.get("/api/v1/functions/crm/url", headers=ADMIN)
                assert crm.status_code == 400 and "only source functions" in crm.text
                listed = (await c.get("/api/v1/functions", headers=ADMIN)).json()["functions"]
                assert [f["name"] for f in listed] == ["stripe", "broken", "crm"]
                assert all("logs" not in f for f in listed)
        finally:
            await app.stop()
    assert urls[0] == urls[1]
    secrets = tmp_path / "data" / "functions" / "secrets.json"
    assert secrets.stat().st_mode & 0o777 == 0o600


async def test_the_console_shows_functions_and_the_url_only_to_who_may_see_it(
    served: tuple[Headwater, httpx.AsyncClient], tmp_path: Path
) -> None:
    _, client = served
    path = await url_of(client, "stripe")
    body = stripe_event("evt_c1")
    await client.post(path, content=body, headers={"Stripe-Signature": "t=1,v1=forged"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the stats file is written each second
        stats = (await client.get("/api/v1/functions/stripe", headers=ADMIN)).json()
        if stats.get("invocations") == 1:
            break
        await asyncio.sleep(0.1)
    await login(client, TOKEN)
    listing = (await client.get("/console/functions")).text
    assert 'data-function="stripe"' in listing
    assert 'data-function="broken"' in listing and ">source<" in listing
    page = await client.get("/console/functions/stripe")
    assert page.status_code == 200
    assert f"<code data-url>http://hw.test{path}</code>" in page.text
    assert 'data-failure="ValidationError"' in page.text
    assert "the Stripe-Signature does not match the body" in page.text
    missing = await client.get("/console/functions/nope")
    assert missing.status_code == 404 and "no function is named &#39;nope&#39;" in missing.text

    token = CliRunner().invoke(cli, ["tokens", "create", "--name", "viewer", "--role",
                                     "read_only", "--data-dir", str(tmp_path / "data"),
                                     "--config", str(tmp_path / "none.yaml")])  # fmt: skip
    assert token.exit_code == 0, token.output
    await client.post("/console/logout", data={"csrf_token": ""})
    client.cookies.clear()
    await login(client, token.stdout.strip().splitlines()[0])
    viewer = await client.get("/console/functions/stripe")
    assert viewer.status_code == 200 and "data-url" not in viewer.text, "read_only sees no secret"
    refused = await client.get("/api/v1/functions/stripe/url",
                               headers={"authorization": f"Bearer {token.stdout.split()[0]}"})  # fmt: skip
    assert refused.status_code == 403 and refused.json()["permission"] == "functions:write"
