"""``headwater replay --dry-run`` counts by today's routing and today's filters."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from headwater.cli.delivery import count_window
from headwater.config.workspace import LogConfig, parse_workspace
from headwater.log.base import Record
from headwater.log.sqlite import SqliteLog


async def test_dry_run_counts_what_the_filters_drop_as_filtered(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "log", LogConfig(durability="os"))
    now = int(time.time() * 1000)
    names = ["Order Completed", "Debug Ping", "Debug Pong", "Cart Viewed"]
    records = [
        Record(f"m{i}", "website", "track", now,
               orjson.dumps({"type": "track", "event": name, "userId": "u", "messageId": f"m{i}"}))
        for i, name in enumerate(names)
    ]  # fmt: skip
    records.append(Record("m9", "backend", "track", now, b'{"type":"track","event":"X"}'))
    await log.append(records)
    await log.close()
    workspace = parse_workspace({
        "sources": [{"name": "website"}, {"name": "backend"}],
        "destinations": [{
            "name": "hook", "type": "devsink", "sources": ["website"],
            "filters": [{"if": 'match(event, "Debug *")', "actions": [{"type": "DROP"}]}],
        }],
    })  # fmt: skip
    _, _, counts = count_window(tmp_path / "log", workspace, "hook", now - 1000, now + 1000)
    assert counts == {"sent": 2, "filtered": 2, "skipped": 1}
