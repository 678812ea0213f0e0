"""The workspace file's changes between starts, as audit entries: per data directory, or
with a shared trail once for the whole cluster (the first node to load a version records
it)."""

from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from headwater.config.workspace import StateConfig, parse_workspace
from headwater.state.audit import AuditLog
from headwater.state.workspace_history import record_workspace_load
from tests.postgres import Postgres, state_config

SOURCES = [{"name": "website", "write_key": "wk_website_hist_1"}]


def workspace(enabled: bool, region: str = "us") -> Any:
    # header values count as secrets (masked in the snapshot): the region is in the URL
    return parse_workspace({"sources": SOURCES, "destinations": [
        {"name": "hook", "type": "webhook", "enabled": enabled, "sources": ["website"],
         "settings": {"url": f"http://127.0.0.1:9/{region}/hook",
                      "headers": {"X-Region": region}}}]})  # fmt: skip


def test_each_start_records_what_the_file_changed(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    with closing(AuditLog.open(tmp_path, state_backend)) as log:
        first = record_workspace_load(log, workspace(True), tmp_path)
        assert ("create", "destinations/hook") in [(e.action, e.resource) for e in first]
        assert record_workspace_load(log, workspace(True), tmp_path) == [], "nothing changed"
        [off] = record_workspace_load(log, workspace(False), tmp_path)
        assert (off.action, off.resource, off.actor, off.origin) == (
            "disable", "destinations/hook", "workspace", "workspace")  # fmt: skip
        found = log.last_change("destinations/hook", "disable")
        assert found is not None and found.id == off.id


def test_nodes_starting_together_with_a_new_file_record_its_changes_once(
    tmp_path: Path, postgres: Postgres
) -> None:
    state_backend = state_config(postgres)
    with closing(AuditLog.open(tmp_path, state_backend)) as log:
        record_workspace_load(log, workspace(True), tmp_path / "node-0")
    logs = [AuditLog.open(tmp_path, state_backend) for _ in range(4)]
    recorded: list[int] = []
    start = threading.Barrier(len(logs))

    def node(i: int) -> None:
        start.wait()
        made = record_workspace_load(logs[i], workspace(True, region="eu"), tmp_path / f"n{i}")
        recorded.append(len(made))

    threads = [threading.Thread(target=node, args=(i,)) for i in range(len(logs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(recorded) == [0, 0, 0, 1], "the first node records the change, once"
    [entry] = [e for e in logs[0].iter_entries("destinations/hook") if e.action == "update"]
    assert entry.diff["settings"]["to"]["url"] == "http://127.0.0.1:9/eu/hook"
    assert entry.diff["settings"]["to"]["headers"] == {"X-Region": "**********"}
    for log in logs:
        log.close()
