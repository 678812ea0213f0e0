"""Isolation benchmark: how much a dead destination slows a healthy one beside it.

The test suite proves what the engine does (the healthy destination gets every event while
the dead one keeps its whole backlog, and never waits on its answers); this script gives the
figure, which no test asserts on: the time a healthy webhook takes to receive a stream of
events with a dead neighbour, against the same stream with no neighbour (the floor), in
alternating rounds of one process. The ratio is with / alone: 1.0 means no effect.

The dead neighbour is one of: ``refused`` (nothing listens), ``500`` (answers at once with
500) or ``slow`` (answers after 1 s, past its 0.5 s timeout); retries use short backoffs so
it keeps the worker busy. In-process: a memory log, the real delivery engine and store,
aiohttp receivers on 127.0.0.1, each in a child process.

Run:   .venv/bin/python bench/isolation.py [--rounds 3] [--events 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from headwater.config.workspace import LogConfig, parse_workspace
from headwater.delivery.engine import DeliveryEngine
from headwater.log.base import Record
from headwater.log.memory import MemoryLog

FAST = {"backoff_base_secs": 0.02, "backoff_max_secs": 0.1, "breaker_probe_secs": 0.05,
        "breaker_max_probe_secs": 0.1}  # fmt: skip


class Receiver:
    """A webhook receiver in a child process (so it takes no GIL time from the engine's
    process): counts events in shared memory, answers ``status`` after ``delay_secs``."""

    def __init__(self, status: int = 200, delay_secs: float = 0.0) -> None:
        self.status, self.delay_secs = status, delay_secs
        self._count = multiprocessing.Value("q", 0)
        self._ready = multiprocessing.Event()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._process = multiprocessing.Process(target=self._serve, daemon=True)

    @property
    def events(self) -> int:
        return int(self._count.value)

    def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            body = orjson.loads(await request.read())
            with self._count.get_lock():
                self._count.value += len(body) if isinstance(body, list) else 1
            if self.delay_secs:
                await asyncio.sleep(self.delay_secs)
            return web.Response(status=self.status, body=b"{}", content_type="application/json")

        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    def __enter__(self) -> Receiver:
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def record(n: int) -> Record:
    mid = str(uuid.uuid4())
    body = {"type": "track", "event": "Order Completed", "userId": f"u{n % 97}",
            "messageId": mid, "properties": {"n": n, "revenue": n / 100},
            "integrations": {}}  # fmt: skip
    return Record(mid, "website", "track", int(time.time() * 1000), orjson.dumps(body))


async def one_run(events: int, healthy: Receiver, dead_url: str | None, data_dir: Path) -> float:
    """Seconds from the first append until the healthy receiver has every event."""
    destinations: list[dict[str, Any]] = [
        {"name": "healthy", "type": "webhook", "sources": ["website"],
         "settings": {"url": healthy.url}, "delivery": {"concurrency": 4}},
    ]  # fmt: skip
    if dead_url is not None:
        destinations.append({"name": "dead", "type": "webhook", "sources": ["website"],
                             "settings": {"url": dead_url},
                             "delivery": {"timeout_secs": 0.5, **FAST}})  # fmt: skip
    workspace = parse_workspace({"sources": [{"name": "website", "write_key": "wk_website_bench"}],
                                 "destinations": destinations})  # fmt: skip
    log = MemoryLog(LogConfig())
    engine = DeliveryEngine(workspace, log, data_dir)
    await engine.start()
    start_count = healthy.events
    started = time.perf_counter()
    try:
        for chunk in range(0, events, 30):  # a stream, as the isolation test sends it
            await log.append([record(n) for n in range(chunk, min(events, chunk + 30))])
            await asyncio.sleep(0.002)
        while healthy.events - start_count < events:  # noqa: ASYNC110  # another process counts
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        await engine.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    with Receiver() as healthy, Receiver(500) as failing, Receiver(200, 1.0) as slow:
        dead = {"refused": refused_url(), "500": failing.url, "slow": slow.url}
        times: dict[str, list[float]] = {"alone": [], **{k: [] for k in dead}}
        with tempfile.TemporaryDirectory() as tmp:
            runs = 0
            for _ in range(args.rounds):  # alternate, so drift hits every variant alike
                for variant in times:
                    runs += 1
                    url = dead.get(variant)
                    took = await one_run(args.events, healthy, url, Path(tmp) / str(runs))
                    times[variant].append(took)
    floor = statistics.median(times["alone"])
    print(f"healthy webhook, {args.events:,} events in a stream, {args.rounds} rounds (median)")
    print(f"{'neighbour':<10} {'seconds':>8} {'events/s':>10} {'ratio to alone':>15}")
    for variant, values in times.items():
        median = statistics.median(values)
        print(f"{variant:<10} {median:8.2f} {args.events / median:10,.0f} {median / floor:15.2f}")


if __name__ == "__main__":
    asyncio.run(main())
