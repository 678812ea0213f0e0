"""Nodes moved from their own files to shared state (``state: {backend: postgres}``) keep
what those files held: tokens, the audit trail and the workspace snapshot are copied into
PostgreSQL at the first open, once, and the files are put aside."""

from __future__ import annotations

import logging
from contextlib import closing
from pathlib import Path

import pytest

from headwater.state.audit import AuditLog
from headwater.state.postgres import ADOPTED_SUFFIX
from headwater.state.tokens import TokenStore
from headwater.state.workspace_history import SNAPSHOT_FILE, record_workspace_load
from tests.postgres import Postgres, state_config
from tests.state.test_workspace_history import workspace


def test_two_nodes_files_are_adopted_once_and_a_clashing_token_name_is_named(
    tmp_path: Path, postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = [tmp_path / "a", tmp_path / "b"]
    made: dict[str, str] = {}
    for node in nodes:  # each node on its own files, as before the move
        with closing(TokenStore.open(node, None)) as store:
            for name in (f"ci-{node.name}", "shared-name"):
                _, made[f"{node.name}/{name}"] = store.create(name, "editor", None, "cli")
        with closing(AuditLog.open(node, None)) as log:
            record_workspace_load(log, workspace(True), node)
            log.record("ci", "disable", f"destinations/{node.name}", {"enabled": {"from": True, "to": False}}, "api", at_ms=1_000)  # fmt: skip
            # the same change seen by both nodes (one entry in each file)
            log.record("workspace", "update", "sources/website", {"enabled": {"from": False, "to": True}}, "workspace", at_ms=2_000)  # fmt: skip

    state = state_config(postgres)
    caplog.set_level(logging.WARNING, logger="headwater.state.postgres")
    for node in nodes:
        with closing(TokenStore.open(node, state)) as store:
            pass
    adopted = [r.getMessage() for r in caplog.records]
    assert any("2 token(s) copied" in m for m in adopted)
    assert any("1 token(s) copied" in m and "named shared-name" in m for m in adopted)

    with closing(TokenStore.open(nodes[0], state)) as store:  # once: the files are aside
        assert store.lookup(made["a/ci-a"]) is not None and store.lookup(made["b/ci-b"])
        assert store.lookup(made["a/shared-name"]) is not None, "the first node's stays"
        assert store.lookup(made["b/shared-name"]) is None, "the clash, named in the log"
        assert len(store.list()) == 3
    for node in nodes:
        assert not (node / "state" / "tokens.db").exists()
        assert (node / "state" / f"tokens.db{ADOPTED_SUFFIX}").exists()

    for node in nodes:
        with closing(AuditLog.open(node, state)) as log:
            # the workspace did not change: the node's own snapshot stands in for the
            # cluster's missing one, so the load records nothing new
            assert record_workspace_load(log, workspace(True), node) == []
            assert not (node / "state" / SNAPSHOT_FILE).exists()
    with closing(AuditLog.open(tmp_path / "c", state)) as log:
        entries = log.entries(limit=100).entries
    by_resource = sorted((e.resource, e.action) for e in entries)
    assert ("destinations/a", "disable") in by_resource
    assert ("destinations/b", "disable") in by_resource
    same = [e for e in entries if e.at_ms == 2_000]
    assert len(same) == 1, "an entry both files hold is copied once"
    assert len(entries) == len({(e.at_ms, e.resource, e.actor) for e in entries})
