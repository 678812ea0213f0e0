"""Inline mode (identity processing on the gateway's process, beside delivery) driven over
ASGI: the Tracking API in, the Profile API and the console's profile page out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.config.workspace import StateConfig
from headwater.state.admin_token import load_admin_token
from tests.console.test_console import TOKEN, login

KEY = "wk_unify_site_1"
BASE = "/v1/spaces/main/collections/users/profiles"


@pytest.fixture
async def client(
    tmp_path: Path, state_backend: StateConfig | None
) -> AsyncIterator[httpx.AsyncClient]:
    """Headwater with its profiles in the space's SQLite file, or in PostgreSQL."""
    shared = {"state": state_backend.model_dump(by_alias=True)} if state_backend else {}
    workspace = parse_workspace({
        "sources": [{"name": "website", "write_key": KEY}],
        "log": {"durability": "os", "writer": "thread"},
        "status": {"canary_enabled": False},
        "spaces": [{"name": "main", "sources": ["website"], "computed_traits": [
            {"name": "Orders", "type": "event_counter", "event": "Order Completed"}]}],
        **shared,
    })  # fmt: skip
    data_dir = tmp_path / "data"
    app = Headwater(workspace, data_dir, admin_token=load_admin_token(
        data_dir, {"HEADWATER_ADMIN_TOKEN": TOKEN}))  # fmt: skip
    await app.start()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as c:
        try:
            yield c
        finally:
            await app.stop()


async def post(client: httpx.AsyncClient, kind: str, **body: Any) -> None:
    response = await client.post(f"/v1/{kind}", json=body, auth=(KEY, ""))
    assert response.status_code == 200, response.text


async def wait_for(client: httpx.AsyncClient, path: str, check: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await client.get(f"{BASE}/{path}", auth=(TOKEN, ""))
        if response.status_code == 200 and check(response.json()):
            return response.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not reach the expected state in 30 s")


async def test_inline_profiles_and_the_console_page(client: httpx.AsyncClient) -> None:
    await post(client, "track", anonymousId="a-1", event="Order Completed", messageId="o-1")
    await post(client, "identify", anonymousId="a-1", userId="u-7", messageId="id-1",
               traits={"email": "u7@x.com", "plan": "pro"})  # fmt: skip
    await post(client, "track", userId="u-7", event="Order Completed", messageId="o-2")
    doc = await wait_for(client, "user_id:u-7/traits", lambda d: d["traits"].get("orders") == 2)
    assert doc["traits"] == {"email": "u7@x.com", "plan": "pro", "orders": 2}

    assert (await client.get("/console/profiles?id=user_id:u-7")).status_code == 303
    await login(client)
    page = await client.get("/console/profiles", params={"space": "main", "id": "email:U7@x.com"})
    assert page.status_code == 200
    html = page.text
    assert 'data-trait="orders"' in html and ">computed<" in html
    assert "<code>u7@x.com</code>" in html and "<code>a-1</code>" in html
    assert 'data-kind="created"' in html and "id-1" in html and "o-2" in html
    missing = await client.get("/console/profiles", params={"space": "main", "id": "user_id:zz"})
    assert missing.status_code == 404 and "No profile &#39;user_id:zz&#39;" in missing.text
    unknown = await client.get("/console/profiles", params={"space": "nope", "id": "user_id:u-7"})
    assert unknown.status_code == 404 and "the spaces are main" in unknown.text


async def test_links_are_the_accounts_of_group_calls_and_follow_merges(
    client: httpx.AsyncClient,
) -> None:
    await post(client, "group", anonymousId="a-9", groupId="acme", messageId="g-1")
    await post(client, "group", userId="u-9", groupId="globex", messageId="g-2")
    await post(client, "group", userId="u-9", groupId=" acme ", messageId="g-3")
    await post(client, "identify", anonymousId="a-9", userId="u-9", messageId="login")
    await wait_for(
        client, "user_id:u-9/metadata", lambda d: d["metadata"]["last_message_id"] == "login"
    )  # the merge is in
    doc = (await client.get(f"{BASE}/user_id:u-9/links", auth=(TOKEN, ""))).json()
    acme = doc["data"][0]
    created = acme["external_ids"][0].pop("created_at")
    assert created.startswith("20") and created.endswith("Z")
    assert acme == {"to_collection": "accounts", "external_ids": [
        {"id": "acme", "type": "group_id", "source_id": "website", "collection": "accounts",
         "encoding": "none", "first_message_id": "g-1"}],
    }, "the merged-away profile's older link is kept, with its first message"  # fmt: skip
    assert [d["external_ids"][0]["id"] for d in doc["data"]] == ["acme", "globex"]
    assert doc["cursor"]["has_more"] is False and doc["cursor"]["limit"] == 20

    first = (await client.get(f"{BASE}/anonymous_id:a-9/links", params={"limit": 1},
                              auth=(TOKEN, ""))).json()  # fmt: skip
    assert first["cursor"]["has_more"] is True and first["cursor"]["next"] == "1"
    rest = (await client.get(f"{BASE}/anonymous_id:a-9/links",
                             params={"limit": 1, "next": first["cursor"]["next"]},
                             auth=(TOKEN, ""))).json()  # fmt: skip
    assert [d["external_ids"][0]["id"] for d in rest["data"]] == ["globex"]
    assert rest["cursor"]["has_more"] is False
    too_many = await client.get(f"{BASE}/user_id:u-9/links", params={"limit": 21},
                                auth=(TOKEN, ""))  # fmt: skip
    assert too_many.status_code == 400 and "between 1 and 20" in too_many.text

    deleted = await client.delete(f"{BASE}/user_id:u-9", auth=(TOKEN, ""))
    assert deleted.status_code == 200
    await post(client, "identify", userId="u-9", messageId="again")
    again = await wait_for(client, "user_id:u-9/links", lambda d: True)
    assert again["data"] == [], "a deleted profile's links go with it"
