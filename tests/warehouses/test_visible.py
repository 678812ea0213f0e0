"""What the readers see of a warehouse without touching it: the trace of a messageId, the
findings of diagnose, the Prometheus metrics — and a DuckDB file that an analyst opens
between syncs (and holds during one)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from headwater.config.workspace import StateConfig, Workspace, parse_workspace
from headwater.log.memory import MemoryLog
from headwater.warehouses.loader import Loader, duckdb_path
from headwater.warehouses.view import WarehouseView
from tests.fakes import free_port
from tests.warehouses.helpers import Target, append, event, memory_log, warehouse_config

WAIT_SECS = 60


def workspace(*warehouses: dict[str, Any], state: StateConfig | None = None) -> Workspace:
    return parse_workspace({
        "sources": [{"name": "website", "write_key": "wk_website_1"},
                    {"name": "backend", "write_key": "wk_backend_2"}],
        "warehouses": list(warehouses),
        **({} if state is None else {"state": state.model_dump(by_alias=True)}),
    })  # fmt: skip


def duckdb_warehouse(**options: Any) -> dict[str, Any]:
    return {"name": "analytics", "type": "duckdb", "sources": ["website"]} | options


def view_and_loader(ws: Workspace, log: MemoryLog, data_dir: Path) -> tuple[WarehouseView, Loader]:
    """A gateway's view and a worker's loader; with shared state each in a data directory of
    its own (two nodes: what the view shows is the cluster's, not its own file's)."""
    shared = ws.state.backend == "postgres"
    loader = Loader(ws.warehouses[0], log, data_dir / "worker" if shared else data_dir,
                    state=ws.state, node="worker-1")  # fmt: skip
    return WarehouseView(ws, data_dir / "gateway" if shared else data_dir, lambda: log), loader


async def stored(log: MemoryLog, offset: int) -> Any:
    return (await log.read(offset - 1, 1))[0]


async def test_the_trace_says_which_sync_and_tables_an_event_landed_in(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    ws = workspace(duckdb_warehouse(exclude_events=["Heartbeat"], path=str(tmp_path / "a.duckdb")),
                   state=state_backend)  # fmt: skip
    log = memory_log()
    view, loader = view_and_loader(ws, log, tmp_path)
    await append(log, [event("track", event="Order Completed", properties={"total": 1}),
                       event("track", event="Heartbeat")])  # fmt: skip
    await append(log, [event("track", event="Not Mine")], source="backend")

    (waiting,) = await view.trace_stages(await stored(log, 1))
    assert waiting["decision"] == "waiting" and "offset 0" in waiting["detail"]
    record = await loader.sync()
    (loaded,) = await view.trace_stages(await stored(log, 1))
    assert loaded["decision"] == "loaded" and loaded["sync"] == record.id
    assert loaded["tables"] == ["website.order_completed", "website.tracks"]
    assert f"sync #{record.id} of warehouse analytics" in loaded["detail"]
    (skipped,) = await view.trace_stages(await stored(log, 2))
    assert skipped["decision"] == "not loaded" and "exclude_events" in skipped["detail"]
    assert await view.trace_stages(await stored(log, 3)) == []  # not a source it loads

    await append(log, [event("track", event="Order Completed", properties={"total": "many"})])
    await loader.sync()
    (conflict,) = await view.trace_stages(await stored(log, 4))
    assert conflict["discarded"] == ["total"]
    assert "total went to website._discards" in conflict["detail"]
    view.close()
    loader.state.close()


async def test_diagnose_names_a_failing_sync_with_its_fix_and_the_waiting_events(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there
    ws = workspace({"name": "pg", "type": "postgres", "sources": ["website"],
                    "dsn": f"postgresql://loader@127.0.0.1:{closed}/analytics"})  # fmt: skip
    log = memory_log()
    view, loader = view_and_loader(ws, log, tmp_path)
    await append(log, [event("track", event="A") for _ in range(3)])
    record = await loader.sync()
    assert (record.status, record.error_kind) == ("failed", "connection_refused")

    findings = await view.findings()
    failing = next(f for f in findings if "last sync failed" in f.title)
    assert failing.severity == "critical" and failing.events == 3
    assert f"127.0.0.1:{closed}" in failing.detail  # where, with no password
    assert "does not answer" in failing.fix and "Nothing is lost" in failing.fix
    # the events are months old: the log's 7-day retention would drop them unsynced
    retention = next(f for f in findings if "retention will drop" in f.title)
    assert retention.severity == "critical" and retention.events == 3
    status = await view.status("pg")
    assert status["lagEvents"] == 3 and status["lastSync"]["errorKind"] == "connection_refused"
    view.close()


async def test_discards_are_a_warning_with_the_query_to_see_them(
    tmp_path: Path, state_backend: StateConfig | None
) -> None:
    ws = workspace(duckdb_warehouse(path=str(tmp_path / "a.duckdb")), state=state_backend)
    log = memory_log()
    view, loader = view_and_loader(ws, log, tmp_path)
    await append(log, [event("track", event="A", properties={"n": 1}),
                       event("track", event="A", properties={"n": "one"})])  # fmt: skip
    await loader.sync()
    (finding,) = [f for f in await view.findings() if "_discards" in f.title]
    assert finding.severity == "warning" and finding.events == 1
    assert "FROM website._discards" in finding.fix
    view.close()
    loader.state.close()


async def test_metrics_show_rows_lag_and_a_failing_sync(tmp_path: Path) -> None:
    closed = free_port()
    ws = workspace(duckdb_warehouse(),
                   {"name": "pg", "type": "postgres", "sources": ["website"],
                    "dsn": f"postgresql://loader@127.0.0.1:{closed}/analytics"})  # fmt: skip
    log = memory_log()
    view = WarehouseView(ws, tmp_path, lambda: log)
    await append(log, [event("track", event="A"), event("identify", userId="u1")])
    await Loader(ws.warehouses[0], log, tmp_path).sync()
    await Loader(ws.warehouses[1], log, tmp_path).sync()
    await view.refresh()
    registry = CollectorRegistry()
    registry.register(view)
    text = generate_latest(registry).decode()
    assert 'headwater_warehouse_rows_loaded_total{table="website.tracks",warehouse="analytics"}' \
        ' 1.0' in text  # fmt: skip
    assert 'headwater_warehouse_rows_loaded_total{table="website.users",warehouse="analytics"}' \
        ' 1.0' in text  # fmt: skip
    assert 'headwater_warehouse_lag_events{warehouse="analytics"} 0.0' in text
    assert 'headwater_warehouse_lag_events{warehouse="pg"} 2.0' in text
    assert 'headwater_warehouse_sync_failing{kind="connection_refused",warehouse="pg"} 1.0' in text
    assert 'headwater_warehouse_sync_failing{kind="none",warehouse="analytics"} 0.0' in text
    assert 'headwater_warehouse_last_success_timestamp_seconds{warehouse="analytics"}' in text
    assert 'headwater_warehouse_last_success_timestamp_seconds{warehouse="pg"}' not in text
    docs = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(headwater_warehouse_\w+)`", docs, flags=re.M))
    served = set(re.findall(r"^(headwater_warehouse_\w+)\{", text, flags=re.M))
    assert served == documented
    view.close()


def analyst(path: Path, script: str, *, hold: bool = False) -> subprocess.Popen[str]:
    """Another process using the DuckDB file as an analyst's notebook would (read-write)."""
    code = textwrap.dedent(f"""
        import sys, duckdb
        conn = duckdb.connect({str(path)!r})
        {script}
        print("ready", flush=True)
        if {hold!r}:
            sys.stdin.readline()
        conn.close()
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=WAIT_SECS)
    assert process.returncode == 0, err
    return out


async def test_an_analyst_can_open_the_duckdb_file_between_syncs(tmp_path: Path) -> None:
    target = Target(warehouse_config("duckdb", None), tmp_path)
    log = memory_log()
    loader = target.loader(log)
    await append(log, [event("track", event="Order Completed", userId="u1")])
    assert (await loader.sync()).status == "success"
    path = duckdb_path(target.config, target.data_dir)
    # between syncs the file is free: a read-write connection, its own table, a query
    out = finished(analyst(path, "conn.execute('CREATE TABLE scratch AS SELECT event, count(*) "
                                 "AS n FROM website.tracks GROUP BY 1'); print(conn.execute("
                                 "'SELECT * FROM scratch').fetchall())"))  # fmt: skip
    assert "('order_completed', 1)" in out

    # an analyst who keeps it open for writing during a sync: that sync fails as locked ...
    holder = analyst(path, "conn.execute('SELECT 1')", hold=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    await append(log, [event("track", event="Order Completed", userId="u2")])
    held = await loader.sync()
    assert (held.status, held.error_kind) == ("failed", "locked")
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    finished(holder)
    # ... and the next one loads what waited, once
    assert (await loader.sync()).status == "success"
    assert target.query("SELECT user_id FROM website.order_completed ORDER BY 1") == [
        ("u1",), ("u2",)
    ]  # fmt: skip
    assert target.query("SELECT n FROM main.scratch") == [(1,)]
