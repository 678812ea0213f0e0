"""Console sessions with shared state (``state: {backend: postgres}``): signing in on one
gateway works on the other (a balancer need not keep a user on one node), signing out on
either ends it on both, the table holds no usable session id, and while PostgreSQL does not
answer the console says so with a 503 instead of a bare 500. Real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from headwater.app import Headwater
from headwater.config import parse_workspace
from headwater.config.workspace import StateConfig
from headwater.console.sessions import COOKIE
from headwater.state.admin_token import load_admin_token
from tests.console.test_console import TOKEN, _form_csrf, login
from tests.postgres import Postgres, cluster, state_config


async def _nodes(tmp_path: Path, state: StateConfig,
                 tokens: tuple[str, str] = (TOKEN, TOKEN)) -> AsyncIterator[list[httpx.AsyncClient]]:  # fmt: skip
    workspace = parse_workspace({
        "sources": [{"name": "website", "write_key": "wk_shared_sessions_1"}],
        "status": {"canary_enabled": False},
        "state": state.model_dump(by_alias=True),
    })  # fmt: skip
    apps, clients = [], []
    try:
        for i, admin in enumerate(tokens, start=1):
            data = tmp_path / f"node-{i}"
            token = load_admin_token(data, {"HEADWATER_ADMIN_TOKEN": admin})
            app = Headwater(workspace, data, admin_token=token)
            apps.append(app)
            await app.start()
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000 + i))
            clients.append(httpx.AsyncClient(transport=transport, base_url="http://hw.test"))
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for app in apps:
            await app.stop()


@pytest.fixture
async def nodes(tmp_path: Path, postgres: Postgres) -> AsyncIterator[list[httpx.AsyncClient]]:
    async for clients in _nodes(tmp_path, state_config(postgres)):
        yield clients


def _cookie(response: httpx.Response) -> str:
    value = response.cookies.get(COOKIE)
    assert value, response.headers
    return value


async def test_a_session_made_on_one_gateway_works_on_the_other_until_signed_out(
    nodes: list[httpx.AsyncClient],
) -> None:
    one, two = nodes
    signed_in = await login(one)
    assert signed_in.status_code == 303, signed_in.text
    session = _cookie(signed_in)
    two.cookies.set(COOKIE, session)
    page = await two.get("/console/sources")
    assert page.status_code == 200 and "website" in page.text  # the other gateway knows it
    # the API through the session, with its CSRF token, works there too
    csrf = _form_csrf(page.text)
    assert (await two.get("/api/v1/sources")).status_code == 200

    out = await two.post("/console/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    one.cookies.set(COOKIE, session)
    again = await one.get("/console/sources")  # signed out on two: gone on one as well
    assert again.status_code == 303 and again.headers["location"].startswith("/console/login")


async def test_an_admin_session_is_not_honoured_where_the_admin_token_is_another(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A new admin token (rotated: a restart with another one) ends the sessions the old one
    made, as a restart did when sessions lived in memory."""
    other = "hwa_console_rotated_token_98765432"
    async for one, two in _nodes(tmp_path, state_config(postgres), (TOKEN, other)):
        session = _cookie(await login(one))
        two.cookies.set(COOKIE, session)
        refused = await two.get("/console/sources")
        assert refused.status_code == 303 and "/console/login" in refused.headers["location"]


async def test_the_table_holds_only_a_digest_of_each_session_id(
    tmp_path: Path, postgres: Postgres
) -> None:
    state = state_config(postgres)
    async for one, _ in _nodes(tmp_path, state):
        session = _cookie(await login(one))
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            rows = conn.execute(f'SELECT id_hash, token_name, role FROM "{state.schema_name}".'
                                "console_sessions").fetchall()  # fmt: skip
        [(digest, name, role)] = rows
        assert session not in digest and len(digest) == 64
        assert (name, role) == ("admin", "owner")


async def test_with_postgresql_down_the_console_answers_503_saying_why(tmp_path: Path) -> None:
    with cluster() as own:
        async for one, _ in _nodes(tmp_path, state_config(own)):
            session = _cookie(await login(one))
            own.stop()
            try:
                one.cookies.set(COOKIE, session)
                page = await one.get("/console/sources")
                assert page.status_code == 503, page.text
                assert "PostgreSQL" in page.text and "does not answer" in page.text
                assert page.headers["retry-after"] == "5"
            finally:
                own.start()
            assert (await one.get("/console/sources")).status_code == 200  # the session lives
