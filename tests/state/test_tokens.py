"""Scoped tokens kept in the data directory or, with ``state: {backend: postgres}``, in the
shared schema: the same answers from both, every node seeing a token made or revoked
elsewhere within a second, and the tokens last read working while PostgreSQL is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headwater.cli import app as cli
from headwater.config.workspace import StateConfig
from headwater.state import tokens as tokens_module
from headwater.state.sql import StateUnavailable
from headwater.state.tokens import TokenError, TokenStore
from tests.postgres import Postgres, cluster, state_config, workspace_with_state

runner = CliRunner()


@pytest.fixture(scope="module")
def own() -> Iterator[Postgres]:
    """A cluster this module may stop and start (the session's is shared by other workers)."""
    with cluster() as server:
        yield server


def until(what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def test_tokens_are_made_found_and_revoked_alike_on_both_backends(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    with closing(TokenStore.open(tmp_path, state_backend)) as store:
        record, token = store.create("ci-deploy", "editor", None, created_by="cli")
        agency, _ = store.create("agency", "source_admin", "website", created_by="api")
        assert store.lookup(token) == record and record.active
        assert store.lookup(token + "x") is None and store.lookup("not-a-token") is None
        with pytest.raises(TokenError, match="exists already"):
            store.create("ci-deploy", "owner", None, created_by="cli")
        assert store.lookup(token) == record, "a refused duplicate changes nothing"
        assert {r.name for r in store.list()} == {"ci-deploy", "agency"}
        revoked = store.revoke("ci-deploy")
        assert revoked.revoked_ms is not None and store.lookup(token) is None
        with pytest.raises(TokenError, match="revoked already"):
            store.revoke("ci-deploy")
        with pytest.raises(TokenError, match="no token is named 'nobody'"):
            store.revoke("nobody")
        assert [r.name for r in store.list()] == ["agency"]
        assert {r.name for r in store.list(include_revoked=True)} == {"ci-deploy", "agency"}
        assert store.get("agency") == agency


def test_a_following_node_sees_other_nodes_tokens_and_keeps_them_while_postgres_is_down(
    tmp_path: Path, own: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens_module, "REFRESH_SECS", 0.1)
    state = state_config(own).model_copy(update={"reconnect_secs": 1})
    node = TokenStore.open(tmp_path / "node", state)
    node.follow()
    try:
        with closing(TokenStore.open(tmp_path / "cli", state)) as elsewhere:
            record, token = elsewhere.create("ci-deploy", "editor", None, created_by="cli")
            until("the node sees the new token", lambda: node.lookup(token) == record)
            _, other = elsewhere.create("agency", "read_only", None, created_by="cli")
            until("the node sees the second token", lambda: node.lookup(other) is not None)
            elsewhere.revoke("agency")
        until("the node sees the revocation", lambda: node.lookup(other) is None)
        agency = node.get("agency")
        assert agency is not None and not agency.active

        own.stop("immediate")
        try:
            time.sleep(0.5)  # refreshes fail meanwhile
            assert node.lookup(token) == record, "the tokens last read keep working"
        finally:
            own.start()
        _, mine = node.create("mine", "owner", None, created_by="api")
        assert node.lookup(mine) is not None, "a node's own change counts at once"
    finally:
        node.close()


def test_a_follower_closes_though_postgres_is_down_and_its_refresh_waits_for_it(
    tmp_path: Path, own: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh thread holds the store while it waits up to reconnect_secs (here ten
    minutes) for PostgreSQL: closing interrupts it instead of waiting that long."""
    monkeypatch.setattr(tokens_module, "REFRESH_SECS", 0.1)
    state = state_config(own).model_copy(update={"reconnect_secs": 600})
    node = TokenStore.open(tmp_path / "node", state)
    node.follow()
    own.stop("immediate")
    try:
        time.sleep(0.5)  # a refresh is waiting for the server now
        closer = threading.Thread(target=node.close, daemon=True)
        closer.start()
        closer.join(timeout=60)
        assert not closer.is_alive(), "close waited for PostgreSQL"
        with pytest.raises(StateUnavailable, match="is closed"):
            node.conn.execute("SELECT 1")
    finally:
        own.start()


def test_the_cli_makes_and_revokes_tokens_in_postgres_when_the_workspace_says_so(
    tmp_path: Path, own: Postgres
) -> None:
    state = state_config(own)
    config = workspace_with_state(tmp_path / "workspace.yaml", state,
                                  "[{name: website, write_key: wk_abcdefgh}]")  # fmt: skip
    args = ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
    made = runner.invoke(cli, ["tokens", "create", "--name", "agency", "--role", "source_admin",
                               "--source", "website", *args])  # fmt: skip
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert not (tmp_path / "data" / "state" / "tokens.db").exists(), "not in the data directory"
    with closing(TokenStore.open(tmp_path / "elsewhere", state)) as store:
        found = store.lookup(token)
        assert found is not None and (found.role, found.source) == ("source_admin", "website")
    listed = runner.invoke(cli, ["tokens", "list", *args])
    assert listed.exit_code == 0 and "agency" in listed.stdout, listed.output
    revoked = runner.invoke(cli, ["tokens", "revoke", "agency", *args])
    assert revoked.exit_code == 0, revoked.output
    with closing(TokenStore.open(tmp_path / "elsewhere", state)) as store:
        assert store.lookup(token) is None
