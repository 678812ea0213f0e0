"""The management API in process: every route it documents needs the admin token, the
Tracking API and the status page stay public, and secrets never come back out.

The live debugger (Server-Sent Events) never ends, so with a valid token it is read from a
real server in tests/e2e/test_where_did_it_go.py; here it is only refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from headwater.api.app import MASK
from headwater.app import Headwater
from headwater.config.workspace import parse_workspace
from headwater.console.sessions import COOKIE
from headwater.state.admin_token import AdminToken, _digest
from tests.fakes import free_port

TOKEN = "hwa_management_api_test_token_0123"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
WEBSITE_KEY = "wk_website_secret_key_1"
BACKEND_KEY = "wk_backend_secret_key_2"
SHARED_SECRET = "webhook-shared-secret-4f1d"
AUTH_HEADER = "Bearer destination-token-9a8b"
API_KEY_HEADER = "destination-api-key-77c1"
SEGMENT_KEY = "segment-write-key-5e2f"
SECRETS = (WEBSITE_KEY, BACKEND_KEY, SHARED_SECRET, AUTH_HEADER, API_KEY_HEADER, SEGMENT_KEY)
STREAM = "/api/v1/sources/{name}/debugger/stream"

WORKSPACE = {
    "sources": [
        {"name": "website", "write_key": WEBSITE_KEY},
        {"name": "backend", "write_key": BACKEND_KEY},
    ],
    "destinations": [
        {
            "name": "hook",
            "type": "webhook",
            "sources": ["website"],
            # nothing listens there: deliveries fail quietly, which the API does not mind
            "settings": {
                "url": f"http://127.0.0.1:{free_port()}/in",
                "shared_secret": SHARED_SECRET,
                "headers": {
                    "Authorization": AUTH_HEADER,
                    "X-Api-Key": API_KEY_HEADER,
                    "X-Team": "growth",
                },
            },
            "delivery": {"backoff_base_secs": 600},
        },
        {
            "name": "tee",
            "type": "segment",
            "sources": ["backend"],
            "settings": {"url": f"http://127.0.0.1:{free_port()}", "write_key": SEGMENT_KEY},
        },
        {"name": "sink", "type": "devsink", "sources": ["website"]},
    ],
    "status": {"canary_enabled": False},
}
PATH_VALUES = {"sources": "website", "destinations": "hook", "devsink": "sink", "events": "m1",
               "tracking-plans": "checkout"}  # fmt: skip


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = Headwater(
        parse_workspace(WORKSPACE), tmp_path, admin_token=AdminToken(_digest(TOKEN), "env")
    )
    await app.start()
    try:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
            sent = await client.post("/v1/track", auth=(WEBSITE_KEY, ""),
                                     json={"userId": "u1", "event": "Signed Up", "messageId": "m1"})  # fmt: skip
            assert sent.status_code == 200, sent.text
            yield client
    finally:
        await app.stop()


async def documented_routes(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every operation in the OpenAPI document."""
    doc = (await client.get("/api/openapi.json", headers=ADMIN)).json()
    routes = []
    for template, operations in doc["paths"].items():
        value = PATH_VALUES.get(template.split("/")[3], "x")  # /api/v1/<kind>/...
        path = re.sub(r"\{[^}]+\}", value, template)
        routes += [(method.upper(), path) for method in operations]
    assert len(routes) >= 11, routes  # a broken document must not make this test vacuous
    return routes


def assert_refused(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, (what, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"code", "message", "errors"} and body["code"] == "unauthorized"
    assert "Authorization: Bearer" in body["message"]


WRONG_CREDENTIALS = {
    "none": {},
    "wrong": {"authorization": "Bearer wrong-token-0123456789abcdef"},
    "longer": {"authorization": f"Bearer {TOKEN}x"},
    "basic": {"authorization": f"Basic {TOKEN}"},
    "no-scheme": {"authorization": TOKEN},
    "other-header": {"x-api-key": TOKEN},
    "forged-session": {"cookie": f"{COOKIE}=forged-session-id"},
}


async def test_every_documented_route_refuses_without_the_token(api: httpx.AsyncClient) -> None:
    routes = await documented_routes(api)
    for variant, headers in WRONG_CREDENTIALS.items():
        for method, path in routes:
            response = await api.request(method, path, headers=headers)
            assert_refused(response, f"{variant}: {method} {path}")


async def test_every_documented_route_answers_with_the_token(api: httpx.AsyncClient) -> None:
    # the reads first: the walk's writes (a DELETE with the token) change the workspace
    routes = sorted(await documented_routes(api), key=lambda route: route[0] != "GET")
    for method, path in routes:
        if path == STREAM.format(name="website"):
            continue  # never ends: read from a real server in the end-to-end test
        response = await api.request(method, path, headers=ADMIN, json={})
        assert response.headers["content-type"] == "application/json", (method, path)
        if method == "GET":  # no such tracking plan, warehouse, function, space, rule: not found
            missing = "/x" in path or path.startswith("/api/v1/tracking-plans/")
            assert response.status_code == (404 if missing else 200), (path, response.text)
        else:  # an empty body may be refused, but not for want of the token
            assert response.status_code not in (401, 403), (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)


async def test_the_openapi_document_is_public_and_holds_no_secret(api: httpx.AsyncClient) -> None:
    # Decision: the document describes the routes (the same for every installation) and
    # holds no data of this one, so tools and clients may read it without the token.
    public = await api.get("/api/openapi.json")
    assert public.status_code == 200
    versioned = await api.get("/api/v1/openapi.json")
    assert versioned.status_code == 200 and versioned.json() == public.json()
    assert versioned.json()["openapi"].startswith("3.1")
    doc = public.json()
    assert doc["info"]["title"] == "Headwater management API"
    assert not any(secret in public.text for secret in SECRETS)
    names = ("website", "backend", "hook", "tee", "sink")  # nothing of this workspace either
    assert not any(f'"{name}"' in public.text for name in names)
    # every operation documents the 401 it answers without the token
    for template, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert "401" in operation["responses"], (method, template)


async def test_tracking_api_status_page_and_health_stay_public(api: httpx.AsyncClient) -> None:
    tracked = await api.post("/v1/track", auth=(BACKEND_KEY, ""),
                             json={"userId": "u2", "event": "Paid", "messageId": "m2"})  # fmt: skip
    assert tracked.status_code == 200, tracked.text
    batch = await api.post("/v1/batch", json={"writeKey": WEBSITE_KEY, "batch": [
        {"type": "identify", "userId": "u3", "messageId": "m3"}]})  # fmt: skip
    assert batch.status_code == 200, batch.text
    settings = await api.get(f"/v1/projects/{WEBSITE_KEY}/settings")
    assert settings.status_code == 200
    for path in ("/api/v2/summary.json", "/api/v2/status.json", "/api/v2/components.json",
                 "/api/v2/incidents.json", "/status", "/healthz"):  # fmt: skip
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)
    # and the admin token changes nothing there: the Tracking API wants a write key
    refused = await api.post("/v1/track", headers=ADMIN, json={"userId": "u", "event": "E"})
    assert refused.status_code == 401 and refused.json()["code"] == "missing_write_key"


async def test_destination_settings_never_return_secrets(api: httpx.AsyncClient) -> None:
    listed = await api.get("/api/v1/destinations", headers=ADMIN)
    one = await api.get("/api/v1/destinations/hook", headers=ADMIN)
    tee = await api.get("/api/v1/destinations/tee", headers=ADMIN)
    for response in (listed, one, tee):
        assert response.status_code == 200
        leaked = [s for s in SECRETS if s in response.text]
        assert not leaked, f"{response.request.url} shows {leaked}"
    settings = one.json()["settings"]
    assert settings["shared_secret"] == MASK
    # every header value: custom names (X-Honeycomb-Team, X-Auth-Key) carry keys too
    assert settings["headers"] == {"Authorization": MASK, "X-Api-Key": MASK, "X-Team": MASK}
    assert settings["url"].endswith("/in") and settings["method"] == "POST"  # not secrets: shown
    assert tee.json()["settings"]["write_key"] == MASK
    assert [d["name"] for d in listed.json()["destinations"]] == ["hook", "tee", "sink"]
    assert one.json()["delivery"]["backoff_base_secs"] == 600


async def test_sources_show_a_key_prefix_not_the_key(api: httpx.AsyncClient) -> None:
    listed = await api.get("/api/v1/sources", headers=ADMIN)
    assert not any(secret in listed.text for secret in SECRETS)
    website = next(s for s in listed.json()["sources"] if s["name"] == "website")
    assert website == {"name": "website", "enabled": True, "writeKeyPrefix": "wk_web…",
                       "corsOrigins": ["*"], "destinations": ["hook", "sink"]}  # fmt: skip


async def test_the_debugger_and_trace_of_an_event(api: httpx.AsyncClient) -> None:
    debugger = (await api.get("/api/v1/sources/website/debugger", headers=ADMIN)).json()
    assert debugger["counts"] == {"accepted": 1, "duplicate": 0, "rejected": 0}
    [entry] = debugger["entries"]
    assert entry["messageId"] == "m1" and entry["name"] == "Signed Up"
    trace = (await api.get("/api/v1/events/m1", headers=ADMIN)).json()
    assert trace["source"] == "website" and trace["event"]["event"] == "Signed Up"
    assert {d["destination"] for d in trace["destinations"]} == {"hook", "sink"}


async def test_errors_say_what_exists(api: httpx.AsyncClient) -> None:
    cases: list[tuple[str, dict[str, Any], int, str, str]] = [
        ("/api/v1/sources/nope", {}, 404, "not_found", "the sources are: website, backend"),
        ("/api/v1/sources/nope/debugger", {}, 404, "not_found", "website, backend"),
        ("/api/v1/destinations/nope/delivery", {}, 404, "not_found", "hook, tee, sink"),
        ("/api/v1/devsink/hook", {}, 404, "not_found", "the devsinks are: sink"),
        ("/api/v1/events/never-sent", {}, 404, "not_found", "no event with messageId"),
        ("/api/v1/diagnose", {"source": "nope"}, 404, "not_found", "website, backend"),
        ("/api/v1/diagnose", {"since": "0h"}, 400, "invalid_window", "is not a duration"),
        ("/api/v1/diagnose", {"since": "999999w"}, 400, "invalid_window", "retention"),
        ("/api/v1/sources/website/overview", {"window": "1y"}, 400, "invalid_request", "window"),
        ("/api/v1/sources/website/debugger", {"limit": "0"}, 400, "invalid_request", "limit"),
        ("/api/v1/nothing-here", {}, 404, "not_found", "see /api/openapi.json"),
    ]
    for path, params, status, code, text in cases:
        response = await api.get(path, params=params, headers=ADMIN)
        assert response.status_code == status, (path, params, response.text)
        body = response.json()
        assert set(body) == {"code", "message", "errors"}, body
        assert body["code"] == code and text in body["message"], (path, body)


async def test_a_refused_item_is_explained_by_its_trace(api: httpx.AsyncClient) -> None:
    sent = await api.post("/v1/batch", auth=(WEBSITE_KEY, ""), json={"batch": [
        {"type": "track", "event": "Kept", "userId": "u", "messageId": "kept-1"},
        {"type": "track", "event": "Anonymous", "messageId": "lost-1"},
    ]})  # fmt: skip
    assert sent.status_code == 200 and sent.json()["rejected"][0]["messageId"] == "lost-1"
    response = await api.get("/api/v1/events/lost-1", headers=ADMIN)
    assert response.status_code == 404
    message = response.json()["message"]
    assert "'lost-1' was refused at" in message and "missing_identity" in message


async def test_an_event_refused_for_its_write_key_is_explained_by_its_trace(
    api: httpx.AsyncClient,
) -> None:
    sent = await api.post("/v1/track", json={"writeKey": "wk_nobody_has_this", "userId": "u",
                                             "event": "Lost", "messageId": "lost-2"})  # fmt: skip
    assert sent.status_code == 401
    response = await api.get("/api/v1/events/lost-2", headers=ADMIN)
    assert response.status_code == 404
    message = response.json()["message"]
    assert "'lost-2' was refused at" in message and "invalid_write_key" in message


async def test_any_message_id_can_be_traced(api: httpx.AsyncClient) -> None:
    odd = "order/42?retry=1#a b%20[/]"  # SDKs let senders choose messageIds
    sent = await api.post("/v1/track", auth=(WEBSITE_KEY, ""),
                          json={"userId": "u", "event": "Odd", "messageId": odd})  # fmt: skip
    assert sent.status_code == 200
    response = await api.get(f"/api/v1/events/{quote(odd, safe='')}", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["messageId"] == odd
