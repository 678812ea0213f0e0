"""Engage benchmark: audiences kept as events arrive, and the time from an event to its
activation.

    .venv/bin/python bench/engage.py                        # 100k profiles, 30 s of load
    .venv/bin/python bench/engage.py --profiles 20000 --seconds 20

1. **throughput**: bench/unify.py's events (about 10 per profile, five computed traits)
   through :class:`~headwater.unify.consumer.SpaceProcessor` in batches of 500, once with
   the 20 audiences below and once without (the floor: Unify alone), on fresh stores.
   Target: ≥ 10,000 events/s with the audiences.
2. **event → activation**: a real ``headwater serve`` with the same space and audiences,
   one of them (``bench_vip``: trait ``plan = vip``) activated to a webhook on
   ``bench/receiver.py``. The load is open loop: a ``/v1/batch`` of 10 events every 10 ms
   (1,000 events/s) for ``--seconds``, each batch on its schedule whatever the answers; one
   event in ten is a trigger — an identify making a new user ``vip``. The figure is, per
   trigger, the first arrival at the receiver of that user's activation minus the time its
   batch was due; p50/p99/max over the triggers. Target: p99 ≤ 5 s.

The exit status is 0 whatever the targets say, 1 when something could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import HOST, BenchError, free_port, get_json, running_server
from headwater.unify.config import SpaceConfig
from headwater.unify.consumer import SpaceProcessor
from headwater.unify.store import SqliteProfileStore, store_path
from unify import SPACE, T0, records

BENCH_DIR = Path(__file__).resolve().parent
WRITE_KEY = "wk_bench_engage_1"
TARGET_RATE = 10_000
TARGET_P99_S = 5.0


def audiences() -> list[dict[str, Any]]:
    """20 audiences of every kind of condition."""
    found: list[dict[str, Any]] = [
        {"key": "bench_vip", "where": {"trait": {"name": "plan", "op": "=", "value": "vip"}}},
        {"key": "pro", "where": {"trait": {"name": "plan", "op": "=", "value": "pro"}}},
        {"key": "has_email", "where": {"trait": {"name": "email", "op": "exists"}}},
        {"key": "never_ordered", "where": {"performed": {"event": "Order Completed",
                                                         "at_most": 0}}},
        {"key": "big_spenders", "where": {"all": [
            {"performed": {"event": "Order Completed", "at_least": 2, "within": "30d",
                           "where": "properties.revenue > 50"}},
            {"not": {"member_of": "never_ordered"}}]}},
        {"key": "pro_buyers", "where": {"all": [{"member_of": "pro"},
                                                {"performed": {"event": "Order Completed"}}]}},
        {"key": "browsers", "where": {"performed": {"event": "Page Viewed", "at_least": 3}}},
        {"key": "app_users", "where": {"performed": {"event": "App Opened"}}},
        {"key": "free_or_app", "where": {"any": [
            {"trait": {"name": "plan", "op": "=", "value": "free"}},
            {"member_of": "app_users"}]}},
        {"key": "revenue_100", "where": {"trait": {"name": "revenue", "op": ">", "value": 100}}},
    ]  # fmt: skip
    for category in "abcd":
        found.append({"key": f"likes_{category}", "where": {"trait": {
            "name": "favourite_category", "op": "=", "value": category}}})  # fmt: skip
    for n in (1, 3, 5):
        found.append({"key": f"orders_{n}_30d", "where": {"performed": {
            "event": "Order Completed", "at_least": n, "within": "30d"}}})  # fmt: skip
    found.append({"key": "category_a_buyers", "where": {"performed": {
        "event": "Order Completed", "where": 'properties.category = "a"'}}})  # fmt: skip
    found.append({"key": "not_pro", "where": {"not": {"member_of": "pro"}}})
    found.append({"key": "exactly_two", "where": {"performed": {"event": "Order Completed",
                                                                "exactly": 2}}})  # fmt: skip
    assert len(found) == 20
    return found


def run(space: dict[str, Any], batches: list[Any], data_dir: Path) -> tuple[float, Any]:
    store = SqliteProfileStore(store_path(data_dir, "main"))
    processor = SpaceProcessor(SpaceConfig.model_validate(space), store, lambda: T0)
    start = time.perf_counter()
    for batch in batches:
        processor.apply(batch)
    elapsed = time.perf_counter() - start
    processor.store.close()
    return elapsed, processor


def throughput(profiles: int) -> float:
    print(f"1. throughput: generating events for {profiles:,} profiles ...", flush=True)
    batches = records(profiles)
    total = sum(len(b) for b in batches)
    with tempfile.TemporaryDirectory(prefix="hw-bench-engage-") as tmp:
        floor, _ = run(SPACE, batches, Path(tmp) / "floor")
        elapsed, processor = run({**SPACE, "audiences": audiences()}, batches, Path(tmp) / "on")
    rate, floor_rate = total / elapsed, total / floor
    c = processor.counts
    print(f"   events: {total:,}  profiles: {c.created:,}  audience entries: {c.entered:,}, "
          f"exits: {c.exited:,}")  # fmt: skip
    print(f"   unify alone (floor):   {floor_rate:10,.0f} events/s")
    print(f"   with 20 audiences:     {rate:10,.0f} events/s   ratio {rate / floor_rate:.2f}   "
          f"target ≥ {TARGET_RATE:,}: {'met' if rate >= TARGET_RATE else 'NOT met'}")  # fmt: skip
    return rate


def workspace(url: str) -> str:
    space = {**SPACE, "audiences": audiences()}
    space["audiences"][0] = {**space["audiences"][0], "destinations": [{"name": "sink"}]}
    return yaml.safe_dump({
        "sources": [{"name": "website", "write_key": WRITE_KEY}],
        "destinations": [{"name": "sink", "type": "webhook", "sources": ["website"],
                          "settings": {"url": f"{url}/sink"}}],
        "spaces": [space],
        "status": {"canary_enabled": False},
    })  # fmt: skip


async def load(url: str, seconds: float, population: int) -> dict[str, float]:
    """The open-loop load; each trigger's user → the time its batch was due."""
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    due: dict[str, float] = {}
    tasks: list[asyncio.Task[Any]] = []
    failures = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": auth},
                                 limits=limits, timeout=30) as client:  # fmt: skip

        async def post(batch: list[dict[str, Any]]) -> None:
            nonlocal failures
            try:
                answer = await client.post("/v1/batch", json={"batch": batch})
                failures += answer.status_code != 200
            except httpx.HTTPError:
                failures += 1

        start = time.time() + 0.5
        n = 0
        for tick in range(int(seconds * 100)):
            at = start + tick / 100
            await asyncio.sleep(max(0.0, at - time.time()))
            batch: list[dict[str, Any]] = []
            for _ in range(10):
                n += 1
                if n % 10 == 0:
                    user = f"trigger-{n}"
                    due[user] = at
                    batch.append({"type": "identify", "userId": user, "traits": {"plan": "vip"}})
                else:
                    properties = {"revenue": n % 200, "category": "abcd"[n % 4]}
                    batch.append({"type": "track", "event": "Order Completed",
                                  "userId": f"user-{n % population}",
                                  "properties": properties})  # fmt: skip
            tasks.append(asyncio.create_task(post(batch)))
        await asyncio.gather(*tasks)
    if failures:
        print(f"   {failures} batch(es) were not answered 200", flush=True)
    return due


def latency(seconds: float, startup_s: float) -> float | None:
    print(f"\n2. event → activation: 1,000 events/s open loop for {seconds:g} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="hw-bench-engage-") as tmp:
        run_dir = Path(tmp)
        port = free_port()
        receiver = [sys.executable, str(BENCH_DIR / "receiver.py"), "--host", HOST,
                    "--port", str(port)]  # fmt: skip
        with running_server(receiver, port, run_dir / "receiver.log", startup_s) as sink:
            config = run_dir / "workspace.yaml"
            config.write_text(workspace(sink.base_url))
            hw_port = free_port()
            serve = [sys.executable, "-m", "headwater.cli", "serve", "--config", str(config),
                     "--data-dir", str(run_dir / "data"), "--host", HOST, "--port",
                     str(hw_port), "--log-level", "warning"]  # fmt: skip
            with running_server(serve, hw_port, run_dir / "headwater.log", startup_s) as hw:
                due = asyncio.run(load(hw.base_url, seconds, 5000))
                deadline = time.time() + 60
                while True:
                    arrived = get_json(sink.base_url + "/arrivals")
                    if all(user in arrived for user in due) or time.time() > deadline:
                        break
                    time.sleep(0.2)
    missing = [u for u in due if u not in arrived]
    waits = sorted(arrived[u] - at for u, at in due.items() if u in arrived)
    if not waits:
        print("   no activation arrived")
        return None
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    print(f"   triggers: {len(due):,}  activations arrived: {len(waits):,}  missing after 60 s: "
          f"{len(missing)}")  # fmt: skip
    verdict = "met" if p99 <= TARGET_P99_S and not missing else "NOT met"
    print(f"   event → activation: p50 {p50:.2f} s  p99 {p99:.2f} s  max {waits[-1]:.2f} s   "
          f"target p99 ≤ {TARGET_P99_S:g} s: {verdict}")  # fmt: skip
    return p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        throughput(args.profiles)
        latency(args.seconds, args.startup_timeout)
    except BenchError as exc:
        print(f"could not run: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
