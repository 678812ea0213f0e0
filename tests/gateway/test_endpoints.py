"""Point 3 of the Tracking API issue: endpoints, bodies, encodings, auth and CORS."""

from __future__ import annotations

import base64
import gzip

import orjson
import pytest

from tests.gateway.conftest import KEY, Api, MakeApi

SINGLE = [
    ("/v1/track", "track"), ("/v1/t", "track"),
    ("/v1/identify", "identify"), ("/v1/i", "identify"),
    ("/v1/page", "page"), ("/v1/p", "page"),
    ("/v1/screen", "screen"), ("/v1/s", "screen"),
    ("/v1/group", "group"), ("/v1/g", "group"),
    ("/v1/alias", "alias"), ("/v1/a", "alias"),
]  # fmt: skip
VALID = {
    "track": {"userId": "u1", "event": "Order Completed"},
    "identify": {"userId": "u1", "traits": {"plan": "pro"}},
    "page": {"anonymousId": "a1", "name": "Home"},
    "screen": {"anonymousId": "a1", "name": "Settings"},
    "group": {"userId": "u1", "groupId": "g1"},
    "alias": {"userId": "u1", "previousId": "a1"},
}


@pytest.mark.parametrize(("path", "typ"), SINGLE)
async def test_single_endpoints_store_their_type(api: Api, path: str, typ: str) -> None:
    response = await api.post(path, VALID[typ])
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    [event] = await api.stored()
    assert event["type"] == typ


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/v1/import"])
async def test_batch_endpoints(api: Api, path: str) -> None:
    batch = [{"type": t, **body} for t, body in VALID.items()]
    response = await api.post(path, {"batch": batch})
    assert response.status_code == 200
    assert [e["type"] for e in await api.stored()] == list(VALID)


async def test_type_comes_from_the_path(api: Api) -> None:
    await api.post("/v1/track", {"type": "identify", **VALID["track"]})
    [event] = await api.stored()
    assert event["type"] == "track"


async def test_text_plain_body_as_analytics_js_sends(api: Api) -> None:
    body = orjson.dumps({**VALID["track"], "writeKey": KEY})
    response = await api.post("/v1/t", body, key=None, headers={"content-type": "text/plain"})
    assert response.status_code == 200
    assert len(await api.stored()) == 1


async def test_gzip_body(api: Api) -> None:
    body = gzip.compress(orjson.dumps({"batch": [{"type": "track", **VALID["track"]}] * 3}))
    response = await api.post("/v1/batch", body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200
    assert len(await api.stored()) == 3


async def test_invalid_gzip_is_refused(api: Api) -> None:
    response = await api.post("/v1/batch", b"not gzip", headers={"content-encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"


async def test_truncated_gzip_is_refused(api: Api) -> None:
    body = gzip.compress(orjson.dumps({"batch": [VALID["track"]]}))[:-12]
    response = await api.post("/v1/batch", body, headers={"content-encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"


async def test_gzip_bomb_is_capped_at_the_decompressed_limit(api: Api) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 2_000_000 + b"]}")
    assert len(bomb) < 500 * 1024
    response = await api.post("/v1/batch", bomb, headers={"content-encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["code"] == "payload_too_large"
    assert await api.stored() == []


async def test_unknown_encoding_is_refused(api: Api) -> None:
    response = await api.post("/v1/track", b"{}", headers={"content-encoding": "br"})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_encoding"
    assert "gzip" in response.json()["message"]


async def test_wrong_method_and_unknown_path(api: Api) -> None:
    response = await api.client.get("/v1/track")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    response = await api.post("/v1/tracks", VALID["track"])
    assert response.status_code == 404
    assert "/v1/batch" in response.json()["message"]


# ------------------------------------------------------------------ auth


async def test_write_key_in_body(api: Api) -> None:
    response = await api.post("/v1/track", {**VALID["track"], "writeKey": KEY}, key=None)
    assert response.status_code == 200
    [event] = await api.stored()
    assert "writeKey" not in event, "credentials must not travel with the event"


async def test_missing_write_key(api: Api) -> None:
    response = await api.post("/v1/track", VALID["track"], key=None)
    assert response.status_code == 401
    assert response.json()["code"] == "missing_write_key"
    assert "Basic" in response.json()["message"]


async def test_unknown_write_key_is_401_and_recorded_redacted(api: Api) -> None:
    response = await api.post("/v1/track", VALID["track"], key="wk_wrong_key_999")
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "invalid_write_key"
    assert "wk_wrong_key_999" not in body["message"], "never echo a whole key"
    assert await api.stored() == []
    [rejected] = api.app.stats.snapshot()["rejected"]
    assert rejected["scope"] == "key:wk_wr…" and rejected["code"] == "invalid_write_key"
    assert rejected["count"] == 1


async def test_malformed_basic_auth(api: Api) -> None:
    headers = {"authorization": "Basic !!!notbase64"}
    response = await api.post("/v1/track", VALID["track"], key=None, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_authorization"


async def test_non_ascii_basic_auth_is_a_401_not_a_crash(api: Api) -> None:
    headers = {"authorization": "Basic éé"}
    content = b'{"userId": "u1", "event": "e"}'
    response = await api.client.post(
        "/v1/track", content=content, headers={k: v.encode() for k, v in headers.items()}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_authorization"


async def test_basic_auth_with_password_uses_the_user_part(api: Api) -> None:
    token = base64.b64encode(f"{KEY}:ignored".encode()).decode()
    headers = {"authorization": f"Basic {token}"}
    response = await api.post("/v1/track", VALID["track"], key=None, headers=headers)
    assert response.status_code == 200


async def test_disabled_source(api: Api) -> None:
    response = await api.post("/v1/track", VALID["track"], key="wk_retired_89")
    assert response.status_code == 401
    assert response.json()["code"] == "source_disabled"
    assert await api.stored() == []


# ------------------------------------------------------------------ CORS


async def test_preflight_is_answered_for_browsers(api: Api) -> None:
    response = await api.client.options(
        "/v1/t",
        headers={
            "origin": "https://any.example.org",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://any.example.org"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type,authorization"


async def test_responses_carry_cors_headers(api: Api) -> None:
    headers = {"origin": "https://any.example.org"}
    response = await api.post("/v1/track", VALID["track"], headers=headers)
    assert response.headers["access-control-allow-origin"] == "https://any.example.org"
    bad = await api.post("/v1/track", b"{", headers=headers)
    assert bad.headers["access-control-allow-origin"] == "https://any.example.org"


async def test_per_source_origins(api: Api) -> None:
    allowed = await api.post(
        "/v1/track",
        VALID["track"],
        key="wk_shop_4567",
        headers={"origin": "https://shop.example.com"},
    )
    assert allowed.status_code == 200
    refused = await api.post(
        "/v1/track", VALID["track"], key="wk_shop_4567", headers={"origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "origin_not_allowed"
    assert "cors_origins" in refused.json()["message"]
    assert len(await api.stored()) == 1


async def test_preflight_from_an_origin_no_source_allows(make_api: MakeApi) -> None:
    api = await make_api(
        sources=[
            {"name": "shop", "write_key": "wk_shop_4567", "cors_origins": ["https://a.example"]}
        ]
    )
    response = await api.client.options("/v1/t", headers={"origin": "https://b.example"})
    assert response.status_code == 403


# ------------------------------------------------------------------ settings for analytics.js


async def test_cdn_settings_point_analytics_js_back_here(api: Api) -> None:
    response = await api.client.get(f"/v1/projects/{KEY}/settings")
    assert response.status_code == 200
    segment_io = response.json()["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == KEY
    assert segment_io["apiHost"] == "hw.test/v1"
    assert segment_io["protocol"] == "http"


async def test_cdn_settings_use_the_public_url(make_api: MakeApi) -> None:
    api = await make_api(gateway={"public_url": "https://cdp.example.com:8443"})
    response = await api.client.get(f"/v1/projects/{KEY}/settings")
    segment_io = response.json()["integrations"]["Segment.io"]
    assert (segment_io["apiHost"], segment_io["protocol"]) == ("cdp.example.com:8443/v1", "https")


async def test_cdn_settings_unknown_key(api: Api) -> None:
    response = await api.client.get("/v1/projects/wk_nobody_000/settings")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
