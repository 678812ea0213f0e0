"""``headwater deadletter``, ``replay`` and ``devsink``: operating the delivery of a data dir.

These commands work on the files in ``--data-dir`` (SQLite allows them beside a running
server, which picks their changes up within a second), so they need no admin API and also
work while the server is stopped: re-driven dead letters and replays then run at its next
start.
"""

from __future__ import annotations

import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from headwater.cli.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA_DIR,
    Api,
    ConfigOption,
    DataDirOption,
    err,
    out,
    parse_when,
    record_change,
    refuse,
    server_running,
    state_of,
)
from headwater.config.workspace import Workspace, load_workspace
from headwater.delivery.engine import route_of
from headwater.delivery.store import DB_FILE, StoreDB
from headwater.destinations import TYPES
from headwater.errors import ConfigError
from headwater.log.sqlite_reads import connect_readonly, offsets_received_between, read_after
from headwater.processor.fanout import DestinationStage, FilteredOut
from headwater.processor.routing import Filtered, NotMine
from headwater.state.migrations import MigrationError
from headwater.state.sql import StateUnavailable

deadletter_app = typer.Typer(
    help="List, re-drive or purge events that outlived their retry window.",
    no_args_is_help=True,
)

READ_CHUNK = 5000


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _workspace(config: Path) -> Workspace:
    try:
        return load_workspace(config)
    except ConfigError as exc:
        raise refuse(str(exc)) from exc


def _store(data_dir: Path, config: Path | None = None) -> StoreDB:
    """The delivery store of the workspace at ``config`` (when that file exists): in
    PostgreSQL with ``state: {backend: postgres}``, else the data directory's file."""
    state = _workspace(config).state if config is not None and config.exists() else None
    if state is not None and state.backend == "postgres":
        try:
            return StoreDB.postgres(state)
        except (StateUnavailable, MigrationError) as exc:
            raise refuse(str(exc)) from exc
    path = data_dir / "delivery" / DB_FILE
    if not path.exists():
        raise refuse(f"no delivery store at {path}; check --data-dir (has Headwater run there?)")
    return StoreDB(path)


def _destination(workspace: Workspace, name: str | None) -> None:
    if name is not None and workspace.destination(name) is None:
        names = ", ".join(d.name for d in workspace.destinations) or "none"
        raise refuse(f"the workspace has no destination named {name!r}; its destinations: {names}")


# ---------------------------------------------------------------------- deadletter


@deadletter_app.command("list")
def deadletter_list(
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List dead letters, oldest first, with the reason each one failed."""
    with closing(_store(data_dir, config)) as db:
        letters = db.dead_letters(destination, limit=limit)
        counts = db.dead_letter_counts()
    if as_json:
        for d in letters:
            row = {
                "id": d.id,
                "destination": d.destination,
                "messageId": d.message_id,
                "deadAt": _iso(d.dead_ms),
                "attempts": d.attempts,
                "status": d.status,
                "reason": d.reason,
                "event": orjson.loads(d.payload),
            }
            out.print(orjson.dumps(row).decode(), highlight=False, markup=False)
        return
    total = sum(counts.values()) if destination is None else counts.get(destination, 0)
    if not letters:
        out.print("No dead letters." if not total else "")
        return
    table = Table("id", "destination", "messageId", "dead at (UTC)", "attempts", "reason")
    for d in letters:
        table.add_row(
            str(d.id), d.destination, d.message_id, _iso(d.dead_ms), str(d.attempts), d.reason
        )
    out.print(table)
    out.print(f"{len(letters)} shown of {total}. Re-drive with `headwater deadletter retry`.")


@deadletter_app.command("retry")
def deadletter_retry(
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    ids: Annotated[list[int], typer.Option("--id", help="Only these dead letters.")] = [],  # noqa: B006
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Send dead letters again: they go back to their destination's queue, due at once,
    with a fresh retry window (the running server picks them up within a second)."""
    if not (destination or ids or all_):
        raise refuse("say which dead letters to re-drive: --destination NAME, --id N or --all")
    workspace = _workspace(config)
    _destination(workspace, destination)
    windows = {d.name: float(d.delivery.retry_window_secs) for d in workspace.destinations}
    batches = {
        d.name: min(
            d.delivery.batch_max_events or TYPES[d.type].default_batch_events,
            TYPES[d.type].max_batch_events,
        )
        for d in workspace.destinations
    }
    with closing(_store(data_dir, config)) as db:
        orphans = set(db.dead_letter_counts()) - set(windows)
        moved = db.redrive(windows, batches, destination, ids or None)
    for name, n in sorted(moved.items()):
        record_change(data_dir, "retry", f"destinations/{name}/deadletters",
                      {"events": n, "ids": ids or None}, workspace.state)  # fmt: skip
        out.print(f"{name}: {n} event(s) queued for delivery again", highlight=False)
    if not moved:
        out.print("Nothing to re-drive.")
    if orphans and destination is None:
        err.print(
            f"[yellow]Left alone:[/] dead letters of destinations no longer in the workspace: "
            f"{', '.join(sorted(orphans))} (purge them with `headwater deadletter purge`)",
            highlight=False,
        )
    if moved and not server_running(data_dir):
        out.print("Headwater is not running here: they are sent when it starts.")


@deadletter_app.command("purge")
def deadletter_purge(
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    ids: Annotated[list[int], typer.Option("--id", help="Only these dead letters.")] = [],  # noqa: B006
    before: Annotated[
        str | None, typer.Option(help="Only those dead before this time (ISO-8601 or 7d ago).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Delete dead letters for good."""
    if not (destination or ids or before or all_):
        raise refuse("say which dead letters to purge: --destination, --id, --before or --all")
    before_ms = parse_when(before) if before else None
    with closing(_store(data_dir, config)) as db:
        count = len(db.dead_letters(destination, ids or None, limit=None, before_ms=before_ms))
        if not count:
            out.print("No dead letters match.")
            return
        if not yes and not typer.confirm(f"Delete {count} dead letter(s) for good?"):
            raise typer.Exit(1)
        purged = db.purge(destination, ids or None, before_ms)
    resource = f"destinations/{destination}/deadletters" if destination else "deadletters"
    record_change(data_dir, "purge", resource, {"events": purged, "ids": ids or None,
                                                "before_ms": before_ms},
                  state_of(config))  # fmt: skip
    out.print(f"Purged {purged} dead letter(s).")


# ---------------------------------------------------------------------- replay


def count_window(
    log_dir: Path, workspace: Workspace, destination: str, since_ms: int, until_ms: int
) -> tuple[int, int, dict[str, int]]:
    """``(after, last, counts)`` of a replay, by today's routing: read after ``after`` up to
    ``last``.

    ``counts`` of the events received in the window: ``sent``, ``filtered`` (by routing or
    the destination's filters, as they are today) and ``skipped`` (from sources the
    destination does not take).
    """
    config = workspace.destination(destination)
    assert config is not None  # checked by the caller
    route = route_of(config)
    stage = DestinationStage(config.name, config.filters, workspace.transformations)
    counts = {"sent": 0, "filtered": 0, "skipped": 0}
    with closing(connect_readonly(log_dir)) as conn:
        bounds = offsets_received_between(conn, since_ms, until_ms)
        if bounds is None:
            return 0, 0, counts
        after, last = bounds
        position = after
        while position < last:
            records = read_after(conn, position, READ_CHUNK)
            if not records:
                break
            for r in records:
                if r.offset > last:
                    break
                if not since_ms <= r.received_at_ms < until_ms:
                    continue  # read only because its segment overlaps the window
                event = orjson.loads(r.payload)
                decision = route.decide(r.source, event)
                if isinstance(decision, NotMine):
                    counts["skipped"] += 1
                elif isinstance(decision, Filtered) or (
                    stage and isinstance(stage.apply(r.payload, event, count=False), FilteredOut)
                ):
                    counts["filtered"] += 1
                else:
                    counts["sent"] += 1
            position = records[-1].offset
    return after, last, counts


def replay(
    destination: Annotated[str, typer.Option(help="The destination to send to.")],
    since: Annotated[str, typer.Option(help="From this time (ISO-8601, or how long ago: 2h).")],
    until: Annotated[str, typer.Option(help="Up to this time (default: now).")] = "now",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be sent; send nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the replay's progress until it ends.")] = True,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Send a time window of the log again to one destination, through today's routing."""
    workspace = _workspace(config)
    _destination(workspace, destination)
    since_ms, until_ms = parse_when(since), parse_when(until)
    if since_ms >= until_ms:
        raise refuse(f"--since ({_iso(since_ms)}) must come before --until ({_iso(until_ms)})")
    try:
        after, last, counts = count_window(
            data_dir / "log", workspace, destination, since_ms, until_ms
        )
    except FileNotFoundError as exc:
        raise refuse(str(exc)) from exc
    window = f"{_iso(since_ms)} to {_iso(until_ms)} UTC"
    out.print(
        f"Replay to {destination}, events received {window}: {counts['sent']} would be sent, "
        f"{counts['filtered']} filtered by routing, {counts['skipped']} skipped "
        "(from sources it does not take).",
        highlight=False,
    )
    if dry_run or counts["sent"] == 0:
        if counts["sent"] == 0 and not dry_run:
            out.print("Nothing to replay.")
        return
    with closing(_store(data_dir, config)) as db:
        replay_id = db.create_replay(destination, since_ms, until_ms, last, after)
    record_change(data_dir, "replay", f"destinations/{destination}",
                  {"replay": replay_id, "since_ms": since_ms, "until_ms": until_ms,
                   "events": counts["sent"]}, state_of(config))  # fmt: skip
    out.print(f"Replay {replay_id} queued.", highlight=False)
    if not server_running(data_dir):
        out.print("Headwater is not running here: the replay runs when it starts.")
        return
    if wait:
        _follow(data_dir, config, replay_id, after, last)


def _follow(data_dir: Path, config: Path, replay_id: int, first: int, last: int) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    with closing(_store(data_dir, config)) as db, Progress(*columns, console=out) as progress:
        task = progress.add_task(f"replay {replay_id}", total=max(1, last - first))
        while True:
            job = db.replay(replay_id)
            if job is None:
                raise refuse(f"replay {replay_id} disappeared from the store")
            progress.update(task, completed=job.position - first)
            if job.state in ("done", "cancelled"):
                break
            time.sleep(0.2)
    out.print(
        f"Replay {replay_id} {job.state}: {job.sent} sent, {job.filtered} filtered, "
        f"{job.skipped} skipped. Their outcomes are in the delivery ledger.",
        highlight=False,
    )


# ---------------------------------------------------------------------- devsink


def devsink(
    destination: Annotated[str, typer.Argument(help="The devsink destination's name.")],
    limit: Annotated[int, typer.Option(help="How many of the newest events.", min=1)] = 20,
    url: Annotated[str, typer.Option(help="Headwater's URL.", envvar="HEADWATER_URL")] = (
        "http://127.0.0.1:8080"
    ),
) -> None:
    """Show what a devsink destination received, newest first."""
    body = Api(url).get(f"/api/v1/devsink/{destination}", limit=limit)
    out.print(f"{destination}: {body['total']} delivered since start", highlight=False)
    for item in body["events"]:
        event = item["event"]
        what = event.get("event") or event.get("name") or ""
        out.print(
            f"{_iso(item['deliveredAtMs'])}  {event.get('type', '?'):8} {what:30} "
            f"{item['messageId']}  ({item['latencyMs']} ms)",
            highlight=False,
            markup=False,
        )
