"""The status page's state on PostgreSQL (``state: {backend: postgres}``): one gateway at a
time records the cluster's status — its own checks merged with the other gateways' — so
every status page shows one set of incidents and one uptime history; another gateway takes
over when the writer stops; maintenance declared anywhere applies everywhere; a node's own
maintenance windows move to the cluster. Real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from headwater.cli import app as cli
from headwater.status.model import Component, ComponentState, Status, destination_component
from headwater.status.store import DB_FILE, StatusStore
from tests.postgres import Postgres, state_config, workspace_with_state

NOW = 1_780_000_000_000
FRESH_MS = 15_000
HOOK = destination_component("hook")
WRITER = Component("process:writer", "Process writer", "The event log's writer",
                   group="processes")  # fmt: skip


def hook(status: Status = Status.OPERATIONAL, reason: str = "") -> list[ComponentState]:
    return [ComponentState(HOOK, status, reason)]


def kinds(changes: list | None) -> list[str]:  # type: ignore[type-arg]
    assert changes is not None, "this node should be the writer"
    return [f"{c.state.component.id}:{c.kind}" for c in changes if c.kind != "none"]


async def test_one_gateway_records_the_merged_status_and_another_takes_over(
    tmp_path: Path, postgres: Postgres
) -> None:
    state = state_config(postgres)
    a = StatusStore(tmp_path / "a", state, "gw-a")
    b = StatusStore(tmp_path / "b", state, "gw-b")
    try:
        assert kinds(a.check(hook(), NOW, 2.0, FRESH_MS)) == []  # first: a writes
        # b sees the destination failing; it only publishes that
        assert b.check(hook(Status.MAJOR, "503 x5"), NOW + 100, 2.0, FRESH_MS) is None
        assert b.check([*hook(Status.MAJOR, "503 x5"), ComponentState(WRITER, Status.DEGRADED,
                        "restarted 1 time(s)")], NOW + 200, 2.0, FRESH_MS) is None  # fmt: skip
        changes = a.check(hook(), NOW + 2000, 2.0, FRESH_MS)  # a merges: the worst wins
        assert sorted(kinds(changes)) == ["destination:hook:opened", "process:writer:opened"]
        rows = b.component_rows()  # every gateway's page reads the cluster's rows
        assert rows["destination:hook"]["status"] == "major_outage"
        assert rows["destination:hook"]["reason"] == "503 x5 (seen by node gw-b)"
        [hook_incident] = [i for i in b.incidents() if i.component == "destination:hook"]
        assert hook_incident.status == "investigating"

        # stale observations do not count: b's last is older than FRESH_MS now
        assert kinds(a.check(hook(), NOW + 2000 + FRESH_MS + 1000, 2.0, FRESH_MS)) == [
            "destination:hook:resolved", "process:writer:resolved"]  # fmt: skip
        [gone] = [i for i in a.incidents() if i.component == "process:writer"]
        assert gone.status == "resolved" and gone.updates[0].body.startswith("no node observes")

        a.close()  # the writer stops: its session, and the lock, go with it

        async def b_writes() -> bool:
            return b.check(hook(), NOW + 40_000, 2.0, FRESH_MS) is not None

        for _ in range(600):
            if await b_writes():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("b never took over writing the cluster's status")
        uptime = b.uptime("destination:hook", NOW // 86_400_000)
        assert uptime[NOW // 86_400_000]["major_outage"] == 2.0  # one history, not two
    finally:
        a.close()
        b.close()


def test_maintenance_declared_by_the_cli_applies_to_the_cluster(
    tmp_path: Path, postgres: Postgres
) -> None:
    state = state_config(postgres)
    config = workspace_with_state(tmp_path / "workspace.yaml", state,
                                  "[{name: website, write_key: wk_website_1}]")  # fmt: skip
    data = tmp_path / "cli"
    data.mkdir()
    added = CliRunner().invoke(cli, ["maintenance", "add", "--name", "upgrade", "--component",
                                     "destination:hook", "--for", "1h", "--config", str(config),
                                     "--data-dir", str(data)])  # fmt: skip
    assert added.exit_code == 0, added.output
    gateway = StatusStore(tmp_path / "gw", state, "gw-a")
    try:
        [window] = gateway.maintenances(upcoming_after=0)
        assert window.name == "upgrade" and window.components == ["destination:hook"]
        gateway.check(hook(Status.MAJOR, "down"), window.starts_ms + 1000, 2.0, FRESH_MS)
        assert gateway.component_rows()["destination:hook"]["status"] == "under_maintenance"
        assert gateway.incidents() == []
    finally:
        gateway.close()
    listed = CliRunner().invoke(cli, ["maintenance", "list", "--config", str(config),
                                      "--data-dir", str(data)])  # fmt: skip
    assert listed.exit_code == 0 and "upgrade" in listed.output
    ended = CliRunner().invoke(cli, ["maintenance", "end", f"mnt-{window.id}", "--config",
                                     str(config), "--data-dir", str(data)])  # fmt: skip
    assert ended.exit_code == 0, ended.output


def test_a_nodes_own_windows_move_to_the_cluster_and_its_history_stays_its_own(
    tmp_path: Path, postgres: Postgres
) -> None:
    local = StatusStore(tmp_path)
    local.add_maintenance("over", ["*"], NOW - 20_000, NOW - 10_000)
    local.add_maintenance("coming", ["*"], 4_000_000_000_000, 4_000_000_600_000)
    local.apply(hook(Status.MAJOR, "down"), NOW, 2.0)
    shared = StatusStore(tmp_path, state_config(postgres), "gw-a")
    try:
        own = local.maintenances(upcoming_after=NOW)
        assert shared.add_windows(own) == 1
        local.drop_windows([m.id for m in own])
        assert [m.name for m in shared.maintenances()] == ["coming"]
        assert [m.name for m in local.maintenances()] == ["over"]  # moved, not copied
        assert shared.add_windows(own) == 0  # the cluster has it already
        assert shared.incidents() == []  # what that node saw stays in its file
        assert len(local.incidents()) == 1
        # the node's own checks go on, with the cluster's windows
        coming = shared.maintenances()
        [change] = local.apply(hook(Status.MAJOR, "down"), 4_000_000_000_100, 2.0, coming)
        assert change.state.status is Status.MAINTENANCE
    finally:
        shared.close()
        local.close()
    assert (tmp_path / DB_FILE).exists()
