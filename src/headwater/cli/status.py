"""``headwater status``, ``maintenance`` and ``watch``: is it down, at a glance."""

from __future__ import annotations

import asyncio
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from headwater.cli.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA_DIR,
    ConfigOption,
    DataDirOption,
    fail,
    out,
    parse_when,
    record_change,
    refuse,
    state_of,
)
from headwater.config.units import parse_seconds
from headwater.config.workspace import StateConfig, WatchTarget, load_workspace
from headwater.delivery.http import HttpClient
from headwater.errors import ConfigError
from headwater.state import postgres
from headwater.state.migrations import MigrationError
from headwater.state.sql import StateUnavailable
from headwater.status import watch as watch_module
from headwater.status.alerts import AlertSender, Dispatcher
from headwater.status.config import AlertsConfig
from headwater.status.notifiers import build_notifiers
from headwater.status.service import STATUS_DIR
from headwater.status.statuspage import iso
from headwater.status.store import StatusStore

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


def _store(data_dir: Path, state: StateConfig | None) -> StatusStore:
    """The status store where the workspace keeps it (``state``, from ``--config``): the
    data directory's file, or the cluster's on PostgreSQL (``state: {backend: postgres}``)."""
    if not postgres.uses_postgres(state) and not data_dir.exists():
        raise refuse(f"no data directory at {data_dir}; check --data-dir")
    try:
        return StatusStore(data_dir / STATUS_DIR, state)
    except (StateUnavailable, MigrationError) as exc:
        raise refuse(str(exc)) from None


@maintenance_app.command("add")
def maintenance_add(
    name: Annotated[str, typer.Option(help="What is being done, shown on the status page.")],
    components: Annotated[
        list[str], typer.Option("--component", help="A component id (repeat), or '*' for all.")
    ],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h.")] = "1h",
    start: Annotated[str, typer.Option(help="When it starts (default now).")] = "now",
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Declare a maintenance window."""
    try:
        secs = parse_seconds(duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--for") from None
    starts = parse_when(start)
    assert isinstance(secs, int)  # parse_seconds returns int for strings
    state = state_of(config)
    with closing(_store(data_dir, state)) as store:
        mid = store.add_maintenance(name, components, starts, starts + secs * 1000)
    record_change(data_dir, "create", f"maintenance/mnt-{mid}",
                  {"name": name, "components": components, "starts_ms": starts,
                   "ends_ms": starts + secs * 1000}, state)  # fmt: skip
    out.print(
        f"Maintenance mnt-{mid}: {', '.join(components)} under maintenance from {iso(starts)} "
        f"for {duration}; alerts for them are silent.",
        highlight=False,
    )


@maintenance_app.command("list")
def maintenance_list(
    data_dir: DataDirOption = DEFAULT_DATA_DIR, config: ConfigOption = DEFAULT_CONFIG
) -> None:
    """List current and upcoming maintenance windows."""
    with closing(_store(data_dir, state_of(config))) as store:
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
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """End a maintenance window now."""
    raw = maintenance_id.removeprefix("mnt-")
    if not raw.isdigit():
        raise typer.BadParameter(f"{maintenance_id!r}; write it as `list` shows it, e.g. mnt-3")
    state = state_of(config)
    with closing(_store(data_dir, state)) as store:
        if not store.end_maintenance(int(raw), int(time.time() * 1000)):
            raise fail(f"no maintenance {maintenance_id}", 1)
    record_change(data_dir, "end", f"maintenance/mnt-{raw}", {}, state)
    out.print(f"Maintenance {maintenance_id} ended.")


def _targets(pages: list[str], endpoints: list[str]) -> list[WatchTarget]:
    targets = []
    for kind, option, values in (("statuspage", "--page", pages), ("http", "--http", endpoints)):
        for value in values:
            name, sep, url = value.partition("=")
            if not sep:
                raise typer.BadParameter(f"{value!r} is not NAME=URL", param_hint=option)
            try:
                targets.append(WatchTarget(name=name, url=url, type=kind))
            except ValueError as exc:
                raise typer.BadParameter(f"{value!r}: {exc}", param_hint=option) from None
    return targets


def watch(
    pages: Annotated[
        list[str], typer.Option("--page", help="NAME=URL of a Statuspage-compatible page.")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
    endpoints: Annotated[
        list[str], typer.Option("--http", help="NAME=URL of an endpoint that must answer 2xx.")
    ] = [],  # noqa: B006
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Workspace file: its watch targets and alerts."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between two polls.", min=1)] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="Poll once, print, exit.")] = False,
) -> None:
    """Watch other status pages and endpoints; print changes and send the workspace's alerts.

    With --once, exits 1 when a watched component is not operational."""
    targets = _targets(pages, endpoints)
    alerts: AlertsConfig | None = None
    if config is not None:
        try:
            workspace = load_workspace(config)
        except ConfigError as exc:
            raise refuse(str(exc)) from exc
        targets += workspace.watch
        alerts = workspace.alerts
    if not targets:
        raise refuse("nothing to watch: give --page NAME=URL, --http NAME=URL or a --config "
                   "with a watch: section")  # fmt: skip
    code = asyncio.run(_watch(targets, alerts, interval, once))
    raise typer.Exit(code)


async def _watch(
    targets: list[WatchTarget], alerts: AlertsConfig | None, interval: float, once: bool
) -> int:
    alerting = watch_module.WatchAlerts(Dispatcher(alerts)) if alerts is not None else None
    http = HttpClient()
    sender = AlertSender(build_notifiers(alerts, http)) if alerts is not None else None
    shown: dict[str, str] = {}
    try:
        async with watch_module.client() as client:
            while True:
                states = await watch_module.poll_all(targets, client)
                now = datetime.now(UTC)
                for state in states:
                    cid, status = state.component.id, state.status.value
                    if shown.get(cid) != status:
                        shown[cid] = status
                        reason = f" — {state.reason}" if state.reason else ""
                        out.print(
                            f"{now:%H:%M:%S} {state.component.name}: "
                            f"[{STYLE.get(status, 'white')}]{status}[/]{reason}",
                            highlight=False,
                        )
                if alerting is not None and sender is not None:
                    sender.submit(alerting.observe(states, now))
                if once:
                    calm = all(s.status.severity == 0 for s in states)
                    return 0 if calm else 1
                await asyncio.sleep(interval)
    finally:
        if sender is not None:
            await sender.close()
        await http.close()
