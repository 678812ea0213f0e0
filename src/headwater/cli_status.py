"""``headwater status`` and ``headwater maintenance``: is it down, at a glance."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from headwater.cli_delivery import DEFAULT_DATA_DIR, DataDirOption, fail, parse_when
from headwater.config.units import parse_seconds
from headwater.status.service import STATUS_DIR
from headwater.status.statuspage import iso
from headwater.status.store import StatusStore

out = Console(soft_wrap=True)

STYLE = {
    "operational": "green",
    "degraded_performance": "yellow",
    "partial_outage": "dark_orange",
    "major_outage": "red",
    "under_maintenance": "blue",
}

maintenance_app = typer.Typer(
    help="Declare maintenance windows: components show under_maintenance, alerts are silent.",
    no_args_is_help=True,
)


def status(
    url: Annotated[str, typer.Option(help="Headwater's URL.", envvar="HEADWATER_URL")] = (
        "http://127.0.0.1:8080"
    ),
) -> None:
    """Print Headwater's components, open incidents and maintenance at a glance."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v2/summary.json", timeout=10)
        summary: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise fail(f"could not read the status of Headwater at {url}: {exc}", 1) from exc
    overall = summary["status"]
    out.print(f"[bold]{summary['page']['name']}[/]: {overall['description']}", highlight=False)
    table = Table("component", "status")
    for c in summary["components"]:
        name = ("  " if c.get("group_id") else "") + c["name"]
        table.add_row(name, f"[{STYLE.get(c['status'], 'white')}]{c['status']}[/]")
    out.print(table)
    for incident in summary["incidents"]:
        update = incident["incident_updates"][0] if incident["incident_updates"] else {}
        out.print(
            f"[red]Incident {incident['id']}[/] since {incident['created_at']}: "
            f"{incident['name']} — {update.get('body', '')}",
            highlight=False,
        )
    for m in summary["scheduled_maintenances"]:
        out.print(
            f"[blue]Maintenance {m['id']}[/] {m['status']}: {m['name']} "
            f"({m['scheduled_for']} to {m['scheduled_until']})",
            highlight=False,
        )
    calm = ("operational", "under_maintenance")
    if any(c["status"] not in calm for c in summary["components"]):
        raise typer.Exit(1)  # for scripts: something (Headwater or a destination) is failing


def _store(data_dir: Path) -> StatusStore:
    if not data_dir.exists():
        raise fail(f"no data directory at {data_dir}; check --data-dir")
    return StatusStore(data_dir / STATUS_DIR)


@maintenance_app.command("add")
def maintenance_add(
    name: Annotated[str, typer.Option(help="What is being done, shown on the status page.")],
    components: Annotated[
        list[str], typer.Option("--component", help="A component id (repeat), or '*' for all.")
    ],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h.")] = "1h",
    start: Annotated[str, typer.Option(help="When it starts (default now).")] = "now",
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Declare a maintenance window."""
    try:
        secs = parse_seconds(duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--for") from None
    starts = parse_when(start)
    assert isinstance(secs, int)  # parse_seconds returns int for strings
    with closing(_store(data_dir)) as store:
        mid = store.add_maintenance(name, components, starts, starts + secs * 1000)
    out.print(
        f"Maintenance mnt-{mid}: {', '.join(components)} under maintenance from {iso(starts)} "
        f"for {duration}; alerts for them are silent.",
        highlight=False,
    )


@maintenance_app.command("list")
def maintenance_list(data_dir: DataDirOption = DEFAULT_DATA_DIR) -> None:
    """List current and upcoming maintenance windows."""
    with closing(_store(data_dir)) as store:
        windows = store.maintenances(upcoming_after=int(time.time() * 1000))
    if not windows:
        out.print("No current or upcoming maintenance.")
        return
    table = Table("id", "name", "components", "from (UTC)", "until (UTC)")
    for m in windows:
        table.add_row(f"mnt-{m.id}", m.name, ", ".join(m.components), iso(m.starts_ms) or "",
                      iso(m.ends_ms) or "")  # fmt: skip
    out.print(table)


@maintenance_app.command("end")
def maintenance_end(
    maintenance_id: Annotated[str, typer.Argument(help="mnt-N, as `list` shows it.")],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """End a maintenance window now."""
    raw = maintenance_id.removeprefix("mnt-")
    if not raw.isdigit():
        raise typer.BadParameter(f"{maintenance_id!r}; write it as `list` shows it, e.g. mnt-3")
    with closing(_store(data_dir)) as store:
        if not store.end_maintenance(int(raw), int(time.time() * 1000)):
            raise fail(f"no maintenance {maintenance_id}", 1)
    out.print(f"Maintenance {maintenance_id} ended.")
