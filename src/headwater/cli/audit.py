"""``headwater audit``: who changed what, when and from where.

Reads ``<data-dir>/state/audit.db`` (:mod:`headwater.state.audit`) directly, so it works
beside a running server and without one; ``GET /api/v1/audit`` serves the same entries.
"""

from __future__ import annotations

import time
from contextlib import closing
from itertools import islice
from typing import Annotated

import orjson
import typer
from rich.table import Table

from headwater.cli.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA_DIR,
    ConfigOption,
    DataDirOption,
    out,
    refuse,
    state_of,
)
from headwater.config.units import parse_seconds
from headwater.state.audit import AuditLog
from headwater.state.migrations import MigrationError
from headwater.state.sql import StateUnavailable


def audit(
    resource: Annotated[
        str | None,
        typer.Option(help="A resource and what lies under it (destinations/amplitude), or a "
                     "kind (destinations)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only changes in this last while: 30m, 7d.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:  # fmt: skip
    """Show the audit trail, newest first."""
    since_ms = None
    if since is not None:
        try:
            secs = parse_seconds(since)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--since") from None
        assert isinstance(secs, int)  # parse_seconds returns int for strings
        since_ms = int((time.time() - secs) * 1000)
    state = state_of(config)  # the cluster's trail with state: {backend: postgres}
    if state is None and not data_dir.exists():
        raise refuse(f"no data directory at {data_dir}; check --data-dir")
    try:
        opened = AuditLog.open(data_dir, state)
    except (StateUnavailable, MigrationError) as exc:
        raise refuse(str(exc)) from None
    with closing(opened) as log:
        entries = list(islice(log.iter_entries(resource, since_ms), limit))
    if as_json:
        for entry in entries:
            typer.echo(orjson.dumps(entry.to_json()).decode())
        return
    if not entries:
        out.print("No changes recorded" + (f" for {resource}" if resource else "") + ".")
        return
    table = Table("when (UTC)", "who", "action", "resource", "from", "change")
    for e in entries:
        who = e.actor if e.actor.startswith("local:") else f"token {e.actor}"
        change = orjson.dumps(e.diff).decode() if e.diff else ""
        table.add_row(e.to_json()["at"], who, e.action, e.resource, e.origin, change)
    out.print(table)
