"""The Tracking API in-process: the real app and a real SQLite log in a temporary dir."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from headwater.app import Headwater
from headwater.config import parse_workspace

KEY = "wk_website_123"
BASE_WORKSPACE: dict[str, Any] = {
    "sources": [
        {"name": "website", "write_key": KEY},
        {"name": "shop", "write_key": "wk_shop_4567", "cors_origins": ["https://shop.example.com"]},
        {"name": "retired", "write_key": "wk_retired_89", "enabled": False},
    ],
    "log": {"durability": "os"},
    "status": {"canary_enabled": False},  # these tests count what the log holds
}


class Api:
    """A client of one in-process Headwater, plus a look into its log."""

    def __init__(self, app: Headwater, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    async def post(
        self, path: str, body: Any, *, key: str | None = KEY, **kwargs: Any
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = dict(kwargs.pop("headers", {}))
        auth = (key, "") if key is not None else None
        return await self.client.post(path, content=content, headers=headers, auth=auth, **kwargs)

    async def stored(self) -> list[dict[str, Any]]:
        assert self.app.log is not None
        return [orjson.loads(r.payload) for r in await self.app.log.read(after=0, limit=100_000)]


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[MakeApi]:
    apps: list[tuple[Headwater, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> Api:
        workspace = parse_workspace({**BASE_WORKSPACE, **overrides})
        app = Headwater(workspace, tmp_path / f"data{len(apps)}")
        await app.start()
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://hw.test")
        apps.append((app, client))
        return Api(app, client)

    yield make
    for app, client in apps:
        await client.aclose()
        await app.stop()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
