"""Every route with every role: a route answers a token whose role holds the permission it
declares (for its own source, for ``source_admin``), and refuses every other role with a 403
naming that permission. Tokens are made with ``headwater tokens create`` as an operator
would, and revoking one shuts it out at the next request."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute
from typer.testing import CliRunner

from headwater.api.permissions import ROLES, Principal, route_need, walk_routes
from headwater.app import Headwater
from headwater.cli import app as cli
from headwater.config.workspace import parse_workspace
from headwater.state.admin_token import AdminToken, _digest
from headwater.state.audit import AuditLog
from headwater.state.sql import StateUnavailable
from tests.fakes import free_port
from tests.postgres import Postgres, state_config

TOKEN = "hwa_permissions_test_token_0123456"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
WEBSITE_KEY = "wk_website_perm_key_1"
WORKSPACE = {
    "sources": [
        {"name": "website", "write_key": WEBSITE_KEY},
        {"name": "backend", "write_key": "wk_backend_perm_key_2"},
    ],
    "destinations": [
        {
            "name": "hook",
            "type": "webhook",
            "sources": ["website"],
            "settings": {"url": f"http://127.0.0.1:{free_port()}/in"},
            "delivery": {"backoff_base_secs": 600},
        },
        {"name": "sink", "type": "devsink", "sources": ["website"]},
    ],
    "status": {"canary_enabled": False},
}
# path parameters by name; a source parameter names the source_admin token's own source
VALUES = {"name": "website", "source": "website", "destination": "hook", "message_id": "m1",
          "plan": "checkout", "warehouse": "wh"}  # fmt: skip
NEVER_ENDS = {"/api/v1/sources/{name}/debugger/stream"}
runner = CliRunner()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Headwater, httpx.AsyncClient]]:
    app = Headwater(
        parse_workspace(WORKSPACE), tmp_path, admin_token=AdminToken(_digest(TOKEN), "env")
    )
    await app.start()
    try:
        transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:
            yield app, client
    finally:
        await app.stop()


def create_token(data_dir: Path, name: str, role: str, source: str | None = None) -> str:
    args = ["tokens", "create", "--name", name, "--role", role, "--data-dir", str(data_dir),
            "--config", str(data_dir / "none.yaml")]  # fmt: skip
    if source:
        args += ["--source", source]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[0]
    assert token.startswith("hwt_"), result.output
    return token


def api_routes(app: Headwater) -> list[tuple[str, str, APIRoute]]:
    found = []
    for path, route in walk_routes(app._api.routes):
        if isinstance(route, APIRoute) and path.startswith("/api/v1/"):
            found += [(method, path, route) for method in sorted(route.methods or ())]
    assert len(found) >= 20, found  # a broken walk must not make the test vacuous
    return found


def fill(template: str) -> str:
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: VALUES.get(m.group(1), "x"), template)


async def test_every_route_declares_a_permission(
    served: tuple[Headwater, httpx.AsyncClient],
) -> None:
    app, _ = served
    missing = [(m, p) for m, p, route in api_routes(app) if route_need(route) is None]
    assert not missing, f"routes without a declared permission: {missing}"
    for path, route in walk_routes(app._web.routes):  # console, status page, health
        assert route_need(route) is not None, path


async def test_every_route_with_every_role(
    served: tuple[Headwater, httpx.AsyncClient], tmp_path: Path
) -> None:
    app, client = served
    tokens = {
        role: create_token(tmp_path, f"t-{role.replace('_', '-')}", role,
                           "website" if role == "source_admin" else None)
        for role in ROLES
    }  # fmt: skip
    checked = 0
    for method, template, route in api_routes(app):
        need = route_need(route)
        assert need is not None
        path = fill(template)
        for role, token in tokens.items():
            principal = Principal(role, role, "website" if role == "source_admin" else None)
            source = VALUES[need.source_param] if need.source_param else None
            allowed = principal.allows(need.permission, source, lists_sources=need.lists_sources)
            if allowed and template in NEVER_ENDS:
                continue  # an endless stream; refusals are still checked
            response = await client.request(
                method, path, headers={"authorization": f"Bearer {token}"}, json={}
            )
            what = (role, method, template, need.permission, response.text[:300])
            if allowed:
                assert response.status_code not in (401, 403), what
                assert response.status_code < 500, what
            else:
                assert response.status_code == 403, what
                assert response.json()["permission"] == need.permission, what
            checked += 1
    assert checked >= len(ROLES) * 20


async def test_a_source_admin_is_refused_another_source(
    served: tuple[Headwater, httpx.AsyncClient], tmp_path: Path
) -> None:
    app, client = served
    token = create_token(tmp_path, "agency", "source_admin", "website")
    headers = {"authorization": f"Bearer {token}"}
    scoped = [
        (m, t) for m, t, r in api_routes(app)
        if (n := route_need(r)) and n.source_param and m == "GET" and t not in NEVER_ENDS
    ]  # fmt: skip
    assert scoped, "no route names a source"
    for method, template in scoped:
        own = await client.request(method, fill(template), headers=headers)
        assert own.status_code not in (401, 403), (template, own.text)
        other = fill(template).replace("/website", "/backend")
        refused = await client.request(method, other, headers=headers)
        assert refused.status_code == 403, (template, refused.text)
        assert "backend" in refused.json()["message"]


async def test_a_revoked_token_stops_at_the_next_request(
    served: tuple[Headwater, httpx.AsyncClient], tmp_path: Path
) -> None:
    _, client = served
    token = create_token(tmp_path, "ci-deploy", "read_only")
    headers = {"authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/sources", headers=headers)).status_code == 200
    listed = runner.invoke(cli, ["tokens", "list", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "ci-deploy" in listed.stdout and "read_only" in listed.stdout
    assert token not in listed.stdout  # never shown again
    revoked = runner.invoke(cli, ["tokens", "revoke", "ci-deploy", "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 0, revoked.output
    assert (await client.get("/api/v1/sources", headers=headers)).status_code == 401
    again = runner.invoke(cli, ["tokens", "revoke", "ci-deploy", "--data-dir", str(tmp_path)])
    assert again.exit_code == 2 and "revoked already" in again.output


async def test_with_shared_state_a_token_works_on_every_node_and_revoked_stops_on_every_node(
    tmp_path: Path, postgres: Postgres
) -> None:
    state = state_config(postgres)
    workspace = {**WORKSPACE, "state": {"backend": "postgres", "dsn": state.dsn,
                                        "schema": state.schema_name}}  # fmt: skip
    config = tmp_path / "workspace.yaml"
    config.write_text(yaml.safe_dump(workspace))
    nodes = [Headwater(parse_workspace(workspace), tmp_path / f"node-{i}",
                       admin_token=AdminToken(_digest(TOKEN), "env")) for i in (1, 2)]  # fmt: skip
    args = ["--data-dir", str(tmp_path / "cli"), "--config", str(config)]
    for node in nodes:
        await node.start()
    try:
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(n), base_url="http://hw")  # type: ignore[arg-type]
                   for n in nodes]  # fmt: skip
        made = runner.invoke(cli, ["tokens", "create", "--name", "ci", "--role", "read_only",
                                   *args])  # fmt: skip
        assert made.exit_code == 0, made.output
        headers = {"authorization": f"Bearer {made.stdout.strip().splitlines()[0]}"}

        async def answers(code: int) -> bool:
            got = [(await c.get("/api/v1/sources", headers=headers)).status_code for c in clients]
            return got == [code, code]

        await eventually(lambda: answers(200), "the token works on both nodes")
        revoked = runner.invoke(cli, ["tokens", "revoke", "ci", *args])
        assert revoked.exit_code == 0, revoked.output
        await eventually(lambda: answers(401), "the revoked token stops on both nodes")
        for client in clients:
            await client.aclose()
    finally:
        for node in nodes:
            await node.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        await asyncio.sleep(0.1)


def test_tokens_create_refuses_bad_roles_and_names(tmp_path: Path) -> None:
    config = tmp_path / "workspace.yaml"
    config.write_text("sources:\n  - {name: website, write_key: wk_abcdefgh}\n")
    base = ["tokens", "create", "--data-dir", str(tmp_path), "--config", str(config)]
    cases = {
        ("--name", "x", "--role", "god"): "role 'god' does not exist",
        ("--name", "x", "--role", "source_admin"): "add --source NAME",
        ("--name", "x", "--role", "editor", "--source", "website"): "drop --source",
        ("--name", "x", "--role", "source_admin", "--source", "shop"): "not in the workspace",
        ("--name", "Bad Name!", "--role", "editor"): "must be 1-63 characters",
    }
    for args, message in cases.items():
        result = runner.invoke(cli, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    ok = runner.invoke(cli, [*base, "--name", "x", "--role", "editor"])
    assert ok.exit_code == 0, ok.output
    dup = runner.invoke(cli, [*base, "--name", "x", "--role", "editor"])
    assert dup.exit_code == 2 and "exists already" in dup.output


def test_token_changes_are_in_the_audit_trail_and_the_audit_command(tmp_path: Path) -> None:
    create_token(tmp_path, "agency", "source_admin", "website")
    runner.invoke(cli, ["tokens", "revoke", "agency", "--data-dir", str(tmp_path)])
    log = AuditLog.for_data_dir(tmp_path)
    try:
        entries = log.entries("tokens").entries
    finally:
        log.close()
    assert [(e.action, e.resource, e.origin) for e in entries] == [
        ("revoke", "tokens/agency", "cli"),
        ("create", "tokens/agency", "cli"),
    ]
    assert all(e.actor.startswith("local:") for e in entries)
    shown = runner.invoke(cli, ["audit", "--resource", "tokens", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "tokens/agency" in shown.stdout and "revoke" in shown.stdout
    as_json = runner.invoke(cli, ["audit", "--json", "--since", "1h", "--limit", "1",
                                  "--data-dir", str(tmp_path)])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    assert len(as_json.stdout.strip().splitlines()) == 1 and '"revoke"' in as_json.stdout
    none = runner.invoke(cli, ["audit", "--resource", "destinations", "--data-dir", str(tmp_path)])
    assert none.exit_code == 0 and "No changes recorded for destinations" in none.stdout
    bad = runner.invoke(cli, ["audit", "--since", "soon", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "--since" in bad.output


async def test_a_change_the_audit_trail_cannot_take_still_succeeds_and_is_logged(
    served: tuple[Headwater, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The plan is saved before the trail is written: a 500 then would have the caller send
    a change again that was made already."""
    app, client = served

    def down(*_: object, **__: object) -> None:
        raise StateUnavailable("PostgreSQL at 127.0.0.1:1/x schema s does not answer")

    monkeypatch.setattr(app.audit, "record", down)
    plan = {"name": "checkout", "sources": ["website"], "rules": []}
    saved = await client.put("/api/v1/tracking-plans/checkout", headers=ADMIN, json=plan)
    assert saved.status_code == 200, saved.text
    got = await client.get("/api/v1/tracking-plans/checkout", headers=ADMIN)
    assert got.status_code == 200 and got.json()["name"] == "checkout"
    [said] = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
    assert "create tracking-plans/checkout by admin (api)" in said and "does not answer" in said
