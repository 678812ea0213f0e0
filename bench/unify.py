"""Identity resolution + computed traits throughput, and Profile API latency.

    .venv/bin/python bench/unify.py                      # 100k profiles, ~1M events
    .venv/bin/python bench/unify.py --profiles 20000     # smaller, on a busy machine

Events: for each profile, anonymous page views and orders, an identify linking the
anonymous id to a user id and an email, then orders as the user; 1 in 50 profiles shares
its anonymous id with another user (a refused merge), 1 in 20 has a second device merged
at login. Five computed traits (counter, windowed counter, sum, most frequent, unique
list count) are declared.

- **unify**: the records through :class:`~headwater.unify.consumer.SpaceProcessor` in
  batches of 500 (one transaction each, as the consumer does), on a fresh SQLite store;
- **floor**: the same batches with the space disabled — each payload parsed and the
  position committed per batch, nothing else (what the consumer costs without Unify).

Prints events/s of both and the ratio, then the Profile API's p50/p99 over ASGI (the
real Starlette routes and auth) for traits, external_ids and events of random profiles of
the store just built. Targets: ≥ 20,000 events/s; p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from headwater.gateway.normalize import iso_ms
from headwater.log.base import StoredRecord
from headwater.unify.api import Profiles, routes
from headwater.unify.config import SpaceConfig
from headwater.unify.consumer import BATCH, SpaceProcessor
from headwater.unify.store import SqliteProfileStore, store_path

T0 = 1_796_000_000_000
TOKEN = "bench-token-0123456789"
SPACE = {
    "name": "main",
    "sources": ["website"],
    "computed_traits": [
        {"name": "orders", "type": "event_counter", "event": "Order Completed"},
        {"name": "orders 30d", "type": "event_counter", "event": "Order Completed",
         "window": "30d"},
        {"name": "revenue", "type": "aggregation", "aggregation": "sum",
         "event": "Order Completed", "property": "revenue"},
        {"name": "favourite category", "type": "most_frequent", "event": "Order Completed",
         "property": "category"},
        {"name": "pages seen", "type": "unique_list_count", "event": "Page Viewed",
         "property": "path"},
    ],
}  # fmt: skip


def events_for(n: int, rng: random.Random) -> list[dict[str, Any]]:
    anon, user = f"anon-{n}", f"user-{n}"
    if n % 50 == 1:
        anon = f"anon-{n - 1}"  # a shared device: the login must not merge the two users
    at = T0 - rng.randrange(60 * 86_400_000)
    out: list[dict[str, Any]] = []
    for _ in range(rng.randrange(1, 4)):
        out.append({"type": "page", "anonymousId": anon, "name": "Page",
                    "properties": {"path": f"/p/{rng.randrange(20)}"}})  # fmt: skip
    out.append(
        {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": anon,
            "properties": {"revenue": rng.randrange(5, 200), "category": rng.choice("abcd")},
        }
    )
    if n % 20 == 0:
        out.append({"type": "track", "event": "App Opened", "anonymousId": f"app-{n}"})
        out.append({"type": "identify", "userId": user, "anonymousId": f"app-{n}", "traits": {}})
    out.append(
        {
            "type": "identify",
            "userId": user,
            "anonymousId": anon,
            "traits": {"email": f"{user}@example.com", "plan": rng.choice(["free", "pro"])},
        }
    )
    for _ in range(rng.randrange(2, 6)):
        out.append({"type": "track", "event": "Order Completed", "userId": user,
                    "properties": {"revenue": rng.randrange(5, 200),
                                   "category": rng.choice("abcd")}})  # fmt: skip
    for i, event in enumerate(out):
        event["timestamp"] = iso_ms(at + i * 60_000)
        event["context"] = {"library": {"name": "analytics.js", "version": "5.0.0"},
                            "ip": "203.0.113.7", "userAgent": "Mozilla/5.0"}  # fmt: skip
    return out


def records(profiles: int, seed: int = 7) -> list[list[StoredRecord]]:
    rng = random.Random(seed)
    flat: list[StoredRecord] = []
    offset = 0
    for n in range(profiles):
        for event in events_for(n, rng):
            offset += 1
            mid = f"m-{offset}"
            event["messageId"] = mid
            flat.append(StoredRecord(offset, mid, "website", event["type"], T0,
                                     orjson.dumps(event)))  # fmt: skip
    return [flat[i : i + BATCH] for i in range(0, len(flat), BATCH)]


def run_floor(batches: list[list[StoredRecord]], tmp: Path) -> float:
    store = SqliteProfileStore(tmp / "floor.sqlite")
    start = time.perf_counter()
    for batch in batches:
        store.begin()
        for record in batch:
            orjson.loads(record.payload)
        store.set_position(batch[-1].offset)
        store.commit()
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def run_unify(batches: list[list[StoredRecord]], data_dir: Path) -> tuple[float, SpaceProcessor]:
    space = SpaceConfig.model_validate(SPACE)
    processor = SpaceProcessor(space, SqliteProfileStore(store_path(data_dir, "main")),
                               lambda: T0)  # fmt: skip
    start = time.perf_counter()
    for batch in batches:
        processor.apply(batch)
    return time.perf_counter() - start, processor


async def api_latency(
    data_dir: Path, profiles: int, samples: int
) -> dict[str, tuple[float, float]]:
    space = SpaceConfig.model_validate(SPACE)

    async def no_event(message_id: str) -> None:
        return None

    reads = Profiles([space], data_dir, no_event)
    app = Starlette(routes=routes(reads, lambda token, _need: token == TOKEN))
    rng = random.Random(3)
    found: dict[str, tuple[float, float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bench", auth=(TOKEN, "")) as client:  # fmt: skip
        for what in ("traits", "external_ids", "events"):
            times = []
            for _ in range(samples):
                n = rng.randrange(profiles)
                start = time.perf_counter()
                r = await client.get(f"/v1/spaces/main/collections/users/profiles/"
                                     f"user_id:user-{n}/{what}")  # fmt: skip
                times.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, r.text
            times.sort()
            found[what] = (statistics.median(times), times[int(len(times) * 0.99) - 1])
    await reads.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--api-samples", type=int, default=2000)
    args = parser.parse_args()
    print(f"generating events for {args.profiles:,} profiles ...", flush=True)
    batches = records(args.profiles)
    total = sum(len(b) for b in batches)
    with tempfile.TemporaryDirectory(prefix="hw-bench-unify-") as tmp:
        data = Path(tmp)
        floor = run_floor(batches, data)
        elapsed, processor = run_unify(batches, data)
        c = processor.counts
        floor_rate, rate = total / floor, total / elapsed
        print(f"events: {total:,}  profiles: {c.created:,} created, {c.merged:,} merges, "
              f"{c.refused:,} refused, {c.limited:,} limit hits")  # fmt: skip
        print(f"floor (space disabled): {floor_rate:12,.0f} events/s")
        print(f"unify (5 traits):       {rate:12,.0f} events/s   ratio {rate / floor_rate:.3f}")
        size = store_path(data, "main").stat().st_size
        print(f"store: {size / 1e6:.0f} MB for {total:,} events")
        processor.store.close()
        latency = asyncio.run(api_latency(data, args.profiles, args.api_samples))
        for what, (p50, p99) in latency.items():
            print(f"Profile API {what:13} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    ok_rate = rate >= 20_000
    ok_api = all(p99 <= 10 for _, p99 in latency.values())
    print(f"target ≥ 20,000 events/s: {'met' if ok_rate else 'NOT met'}; "
          f"Profile API p99 ≤ 10 ms: {'met' if ok_api else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
