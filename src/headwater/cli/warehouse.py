"""``headwater warehouse status | sync | backfill``: the warehouses of a running server.

They ask its management API (``--url`` / ``HEADWATER_URL``, the admin token in
``HEADWATER_ADMIN_TOKEN``); the loader, in the delivery worker, carries a sync or backfill
request out within a second. ``sync`` and ``backfill`` wait for the sync to finish (at most
``--timeout``) and exit 1 when it failed, so a script or CI job can rely on the exit code.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, err, fail, out, parse_when

warehouse_app = typer.Typer(help="Warehouses: their syncs, lag and discards; sync or backfill "
                            "one now.", no_args_is_help=True)  # fmt: skip

NameArg = Annotated[str, typer.Argument(help="The warehouse (warehouses: in the workspace).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the JSON document.")]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the sync to end.")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for the sync, at most.")]
POLL_SECS = 0.5


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _lag(doc: dict[str, Any]) -> str:
    if not doc["lagEvents"]:
        return "none"
    secs = doc["lagSecs"] or 0.0
    return f"{doc['lagEvents']} offsets, oldest {secs:.0f} s"


def _sync_line(sync: dict[str, Any] | None) -> str:
    if sync is None:
        return "no sync yet"
    took = "" if sync["durationMs"] is None else f" in {sync['durationMs'] / 1000:.1f} s"
    at = _when(sync["finishedMs"] or sync["startedMs"])
    rows = sum(sync["rows"].values())
    line = (
        f"#{sync['id']} {sync['status']}{took} at {at}: {sync['events']} events, "
        f"{rows} rows, {sync['discards']} discards"
    )
    if sync["error"]:
        line += f" — {sync['errorKind']}: {sync['error']}"
    return line


@warehouse_app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(help="One warehouse; all when left out.")] = None,
    url: UrlOption = DEFAULT_URL,
    json: JsonOption = False,
) -> None:
    """Last sync, lag, rows per table, discards and errors (one warehouse in detail, or all)."""
    api = Api(url)
    if name is None:
        docs = api.get("/api/v1/warehouses")["warehouses"]
        if json:
            out.print_json(orjson.dumps(docs).decode())
            return
        if not docs:
            out.print("the workspace declares no warehouses (warehouses: in docs/warehouses.md)")
            return
        table = Table("warehouse", "type", "target", "last sync", "lag", "discards")
        for doc in docs:
            table.add_row(escape(doc["name"]), doc["type"], escape(doc["target"]),
                          escape(_sync_line(doc["lastSync"])), _lag(doc),
                          str(doc["discards"]))  # fmt: skip
        out.print(table)
        return
    doc = api.get(f"/api/v1/warehouses/{quote(name, safe='')}")
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    state = "" if doc["enabled"] else " (disabled)"
    out.print(f"[bold]{escape(doc['name'])}[/]{state}  {doc['type']}  {escape(doc['target'])}")
    out.print(f"sources {', '.join(doc['sources'])} → schemas {', '.join(doc['schemas'])}; "
              f"every {doc['syncIntervalSecs']} s")  # fmt: skip
    out.print(f"last sync: {escape(_sync_line(doc['lastSync']))}")
    out.print(f"last success: {_when(doc['lastSuccessMs'])}; lag: {_lag(doc)}; "
              f"discards: {doc['discards']}")  # fmt: skip
    if doc["rowsPerTable"]:
        rows = Table("table", "rows loaded", title="rows per table")
        for table_name, n in doc["rowsPerTable"].items():
            rows.add_row(escape(table_name), str(n))
        out.print(rows)
    if len(doc["syncs"]) > 1:
        out.print("earlier syncs:")
        for sync in doc["syncs"][1:]:
            out.print(f"  {escape(_sync_line(sync))}")


def _wait(api: Api, name: str, request: int, timeout: float) -> None:
    path = f"/api/v1/warehouses/{quote(name, safe='')}"
    deadline = time.monotonic() + timeout
    while not api.get(f"{path}/requests/{request}")["done"]:
        if time.monotonic() > deadline:
            raise fail(f"the sync did not end within {timeout:.0f} s; it goes on: follow it "
                       f"with `headwater warehouse status {name}`")  # fmt: skip
        time.sleep(POLL_SECS)
    sync = api.get(path)["lastSync"]
    if sync is None or sync["status"] != "success":
        raise fail(f"warehouse {name}: {_sync_line(sync)}; `headwater diagnose` says how to "
                   "fix it (the events wait in the log)")  # fmt: skip
    out.print(f"warehouse {escape(name)}: sync {escape(_sync_line(sync))}")


@warehouse_app.command("sync")
def sync(name: NameArg, url: UrlOption = DEFAULT_URL, wait: WaitOption = True,
         timeout: TimeoutOption = 600.0) -> None:  # fmt: skip
    """Sync now: load every event the warehouse has not loaded yet."""
    api = Api(url)
    request = api.post(f"/api/v1/warehouses/{quote(name, safe='')}/sync")["request"]
    if not wait:
        out.print(f"sync of {escape(name)} requested (request {request})")
        return
    err.print(f"syncing {escape(name)} …")
    _wait(api, name, request, timeout)


SINCE_HELP = "Reload what was received since then: ISO-8601, a date, or how long ago (7d)."
SinceOption = Annotated[str, typer.Option(help=SINCE_HELP)]


@warehouse_app.command("backfill")
def backfill(
    name: NameArg,
    since: SinceOption,
    url: UrlOption = DEFAULT_URL,
    wait: WaitOption = True,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Reload from the log every event received since a time (rows already loaded are
    skipped by id, so nothing is loaded twice)."""
    since_ms = parse_when(since)
    iso = datetime.fromtimestamp(since_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    api = Api(url)
    request = api.post(f"/api/v1/warehouses/{quote(name, safe='')}/backfill", since=iso)
    if not wait:
        out.print(f"backfill of {escape(name)} since {iso} requested (request "
                  f"{request['request']})")  # fmt: skip
        return
    err.print(f"backfilling {escape(name)} since {iso} …")
    _wait(api, name, request["request"], timeout)
