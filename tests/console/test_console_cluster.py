"""The console's Cluster page with the state on PostgreSQL: this node listed with its role
and the destinations it delivers; hidden from the menu of a single node."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.test_console import Console, _start, fakes, login  # noqa: F401
from tests.postgres import Postgres, state_config


@pytest.fixture
async def console(tmp_path: Path, fakes: Any, postgres: Postgres) -> AsyncIterator[Console]:  # noqa: F811
    state = state_config(postgres).model_dump(by_alias=True)
    async for c in _start(tmp_path / "data", fakes, "http://hw.test", state=state):
        yield c


async def test_the_cluster_page_lists_the_nodes_and_what_each_delivers(console: Console) -> None:
    await login(console.client)
    deadline = time.monotonic() + 30
    while True:  # the first lease round runs as delivery starts
        page = await console.client.get("/console/cluster")
        assert page.status_code == 200, page.text
        row = re.search(r'<tr data-node="([^"]+:worker:[^"]+)">(.*?)</tr>', page.text, re.S)
        if row and "accepting" in row.group(2) and "rejecting" in row.group(2):
            break
        assert time.monotonic() < deadline, page.text
        await asyncio.sleep(0.2)
    assert "<td>worker</td>" in row.group(2) and "s ago" in row.group(2)
    assert 'href="/console/cluster"' in page.text  # in the menu: the state is shared
    assert "this node's embedded SQLite log" in page.text  # the log is not JetStream


async def test_a_single_node_has_no_cluster_menu_and_says_it_works_alone(
    tmp_path: Path,
    fakes: Any,  # noqa: F811
) -> None:
    async for c in _start(tmp_path / "data", fakes, "http://hw.test"):
        await login(c.client)
        overview = await c.client.get("/console/")
        assert 'href="/console/cluster"' not in overview.text
        page = await c.client.get("/console/cluster")
        assert page.status_code == 200 and "this node works alone" in page.text
