"""The delivery store on PostgreSQL, as a ratio of the embedded SQLite store in the same run.

    .venv/bin/python bench/state.py                     # 8 destinations, 300 batches each
    .venv/bin/python bench/state.py --destinations 2 --batches 1000

What a delivery worker writes after every batch it sent: a ledger row for the batch's
``--batch`` events (their offsets, attempts, status, a latency histogram) and its cursor,
through :class:`~headwater.delivery.store.DeliveryStore` (one thread, group commit of what
the workers write at the same moment). ``--destinations`` workers write concurrently; each
waits for its write before the next, as the real worker does.

- **sqlite (floor)**: ``<data-dir>/delivery/delivery.sqlite``, WAL, ``synchronous=NORMAL``:
  the default.
- **postgres**: ``state: {backend: postgres}`` on a throwaway local cluster
  (``tests/postgres.py``) with fsync on, over TCP on 127.0.0.1.

Prints events recorded per second, commits per second and the ratio to the floor; this is
the per-component figure the scale-out projection in docs/scale-out.md uses. The exit
status is 0 whatever the ratio is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.postgres import cluster

from headwater.config.workspace import StateConfig
from headwater.delivery.outcomes import EventState
from headwater.delivery.store import DeliveryStore, LedgerEntry, SetCursor


async def measure(store: DeliveryStore, destinations: int, batches: int, size: int) -> float:
    await store.open()
    try:

        async def worker(name: str) -> None:
            for i in range(batches):
                offsets = list(range(i * size + 1, (i + 1) * size + 1))
                await store.write([
                    LedgerEntry(name, EventState.DELIVERED, offsets, int(time.time() * 1000), 1,
                                200, latencies_ms=[12.0] * size, duration_ms=8.0),
                    SetCursor(name, offsets[-1]),
                ])  # fmt: skip

        started = time.perf_counter()
        await asyncio.gather(*(worker(f"d{n}") for n in range(destinations)))
        return time.perf_counter() - started
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--destinations", type=int, default=8)
    parser.add_argument("--batches", type=int, default=300, help="per destination")
    parser.add_argument("--batch", type=int, default=100, help="events per batch")
    args = parser.parse_args()
    events = args.destinations * args.batches * args.batch
    writes = args.destinations * args.batches
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hw-bench-state-") as tmp:
        results["sqlite (floor)"] = asyncio.run(
            measure(DeliveryStore(Path(tmp)), args.destinations, args.batches, args.batch)
        )
        with cluster(fsync=True) as pg:
            state = StateConfig.model_validate(
                {"backend": "postgres", "dsn": pg.dsn(), "schema": "bench"}
            )
            results["postgres"] = asyncio.run(
                measure(DeliveryStore(Path(tmp), state), args.destinations, args.batches,
                        args.batch)
            )  # fmt: skip
    floor = events / results["sqlite (floor)"]
    print(f"{args.destinations} destinations x {args.batches} batches x {args.batch} events "
          f"= {events:,} events, {writes:,} outcome writes")  # fmt: skip
    print(f"{'store':<16}{'events/s':>12}{'writes/s':>10}{'ratio':>8}")
    for name, secs in results.items():
        rate = events / secs
        print(f"{name:<16}{rate:>12,.0f}{writes / secs:>10,.0f}{rate / floor:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
