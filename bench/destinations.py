"""Destinations benchmark: mapping + encoding per core, and end to end to a batching fake.

1. **Mapping + encoding, per core.** For each destination — the ``http`` destination with a
   realistic webhook mapping, an "amplitude-like" mapping (Amplitude's six fields) through
   the ``http`` destination, and the vendor types named by ``--types`` (``amplitude`` and
   ``mixpanel`` by default; a type that is not registered in ``headwater.destinations.TYPES``
   is skipped with a message saying so) — batches of stored events go through what the
   delivery worker calls: ``map_events`` (triggers, mappings, required fields) and ``plan``
   (the request bodies, encoded). Nothing is sent. The **floor** is the least any
   destination must do: ``orjson.dumps`` of the batch of stored events as they are (what
   the webhook destination sends).

   Parsing: the events are parsed (``OutboundEvent.event``) before the clock starts, for
   the floor and the destination alike, so the headline ratio compares mapping + encoding
   with encoding alone; a second ratio, "with parsing", starts both from the stored bytes
   (fresh events each pass), as the worker does.

   Events/s are per CPU second of the benchmark's thread (``time.thread_time``), so other
   work on the machine slows the figures less than wall time would; floor and destinations
   are interleaved in each round and the median of the rounds is printed. Target: ≥ 0.5 of
   the floor.

2. **End to end.** ``--e2e-events`` events are appended to an in-memory log; the real
   delivery engine (its worker, routing, batching, the ledger on SQLite, the HTTP client)
   delivers them to ``bench/receiver.py`` (a fake that takes batches: a bare ASGI server
   in its own process, as bench/delivery.py uses) through the amplitude-like ``http``
   destination (500 events a request) and, as its floor, the ``webhook`` destination with
   the same batches of unmapped events. Figure: events/s from the first append to the
   last event counted at the receiver. Target: ≥ 20,000 events/s.

The exit status is 0 whatever the targets say, 1 when something could not run.

Run:   .venv/bin/python bench/destinations.py [--rounds 3] [--types amplitude,mixpanel]
Smoke: .venv/bin/python bench/destinations.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from harness import BenchError, Server, free_port, get_json, running_server
from headwater.config.workspace import LogConfig, parse_workspace
from headwater.delivery.engine import DeliveryEngine
from headwater.delivery.events import OutboundEvent
from headwater.destinations import TYPES
from headwater.destinations.base import Context, Destination
from headwater.destinations.mapped import MappedDestination
from headwater.log.base import Record
from headwater.log.memory import MemoryLog

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
TARGET_RATIO = 0.5
TARGET_E2E = 20_000
AMPLITUDE_LIKE: dict[str, Any] = {
    "user_id": {"@path": "$.userId"},
    "device_id": {"@path": "$.anonymousId"},
    "event_type": {"@path": "$.event"},
    "time": {"@path": "$.timestamp"},
    "event_properties": {"@path": "$.properties"},
    "insert_id": {"@path": "$.messageId"},
}
"""Segment's Amplitude defaults for log_event, as plain paths (docs/mapping.md)."""
WEBHOOK_MAPPING: dict[str, Any] = {
    "id": {"@path": "$.messageId"},
    "name": {"@template": "{{event}} by {{userId}}"},
    "user": {"id": {"@path": "$.userId"}, "anonymous": {"@path": "$.anonymousId"},
             "ip": {"@path": "$.context.ip"}},
    "at": {"@path": "$.timestamp"},
    "page": {"@path": "$.context.page.url"},
    "revenue": {"@path": "$.properties.price"},
    "properties": {"@path": "$.properties"},
    "source": "headwater",
}  # fmt: skip
"""A realistic webhook payload: nested objects, a template, a constant."""
VENDOR_SETTINGS: dict[str, dict[str, Any]] = {
    "amplitude": {"api_key": "bench-api-key"},
    "mixpanel": {"project_token": "bench-token"},
}
"""Settings to build vendor types with; a type whose model refuses them is skipped."""


@dataclass(frozen=True)
class Case:
    label: str
    destination: Destination[Any]


def track(i: int) -> dict[str, Any]:
    """A track event of about 600 bytes as the log stores it (bench/ingest.py's, normalised)."""
    return {
        "type": "track", "event": "Order Completed", "userId": f"u{i % 1000}",
        "anonymousId": "a6f1c2d4-0b1e-4c39-9a3f-1d2e3f4a5b6c", "messageId": str(uuid.uuid4()),
        "properties": {"order_id": "ord_7f3a91c2", "product_id": "sku-12345",
                       "name": "Trail Running Shoe", "category": "footwear", "price": 129.99,
                       "quantity": 2, "currency": "USD", "coupon": None},
        "context": {"library": {"name": "analytics-node", "version": "2.1.0"},
                    "ip": "203.0.113.42", "locale": "en-US",
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                    "page": {"path": "/checkout", "url": "https://shop.example.com/checkout"}},
        "integrations": {}, "timestamp": "2026-01-31T12:00:00.000Z",
        "receivedAt": "2026-01-31T12:00:00.120Z", "sentAt": "2026-01-31T12:00:00.100Z",
        "originalTimestamp": "2026-01-31T12:00:00.000Z", "version": 2,
    }  # fmt: skip


def payloads(n: int) -> list[bytes]:
    return [orjson.dumps(track(i)) for i in range(n)]


def http_case(label: str, mapping: Any, batch: int) -> Case:
    kind = TYPES["http"]
    settings = kind.settings_model.model_validate(
        {"url": f"http://{HOST}:9/bench", "batch": True, "mapping": mapping}
    )
    return Case(label, kind("bench", settings, Context(None, 5.0, batch)))  # type: ignore[arg-type]


def vendor_case(name: str) -> Case | str:
    """The vendor type with bench settings, or why it is skipped."""
    kind = TYPES.get(name)
    if kind is None:
        return f"{name}: not registered in headwater.destinations.TYPES (not merged yet)"
    try:
        settings = kind.settings_model.model_validate(VENDOR_SETTINGS.get(name, {}))
    except ValueError as exc:
        first = str(exc).splitlines()[:3]
        return f"{name}: cannot build it with {VENDOR_SETTINGS.get(name, {})}: {' '.join(first)}"
    batch = kind.default_batch_events
    return Case(name, kind("bench", settings, Context(None, 5.0, batch)))  # type: ignore[arg-type]


def work(destination: Destination[Any]) -> Callable[[Sequence[OutboundEvent]], object]:
    if isinstance(destination, MappedDestination):
        mapped_destination: MappedDestination[Any] = destination

        def mapped(events: Sequence[OutboundEvent]) -> object:
            payloads, _refused = mapped_destination.map_events(events)
            return mapped_destination.plan(payloads) if payloads else None

        return mapped
    encode = getattr(destination, "encode", None)
    if encode is None:
        raise BenchError(f"{destination.type}: neither mapped nor an HTTP encoder; cannot time")
    return encode  # type: ignore[no-any-return]


def floor(events: Sequence[OutboundEvent]) -> object:
    return orjson.dumps([e.event for e in events])


def batches_of(data: list[bytes], size: int, parsed: bool) -> list[list[OutboundEvent]]:
    out = []
    for start in range(0, len(data), size):
        batch = [OutboundEvent(start + i + 1, f"m{start + i}", 0, p)
                 for i, p in enumerate(data[start : start + size])]  # fmt: skip
        if parsed:
            for e in batch:
                _ = e.event
        out.append(batch)
    return out


def rate(fn: Callable[[Sequence[OutboundEvent]], object], data: list[bytes], size: int,
         parsed: bool, min_cpu_s: float) -> float:  # fmt: skip
    """Events per CPU second of this thread, over passes until ``min_cpu_s`` is spent."""
    events = spent = 0.0
    while spent < min_cpu_s:
        batches = batches_of(data, size, parsed)  # fresh events: parsing is timed if not parsed
        started = time.thread_time()
        for batch in batches:
            fn(batch)
        spent += time.thread_time() - started
        events += len(data)
    return events / spent


def measure_cpu(cases: list[Case], data: list[bytes], rounds: int, min_cpu_s: float) -> None:
    print("\n1. mapping + encoding, events per CPU second (one core), median of "
          f"{rounds} rounds; floor: orjson.dumps of the stored events")  # fmt: skip
    header = f"{'destination':<26}{'batch':>6}{'events/s':>12}{'floor':>12}{'ratio':>7}"
    print(header + f"{'with parsing':>14}  target ≥ {TARGET_RATIO}")
    for case in cases:
        size = case.destination.batch_events
        fn = work(case.destination)
        fn(batches_of(data[:size], size, True)[0])  # warm up, and fail early
        figures: dict[str, list[float]] = {"f": [], "d": [], "fp": [], "dp": []}
        for _ in range(rounds):
            figures["f"].append(rate(floor, data, size, True, min_cpu_s))
            figures["d"].append(rate(fn, data, size, True, min_cpu_s))
            figures["fp"].append(rate(floor, data, size, False, min_cpu_s))
            figures["dp"].append(rate(fn, data, size, False, min_cpu_s))
        m = {k: statistics.median(v) for k, v in figures.items()}
        ratio, with_parse = m["d"] / m["f"], m["dp"] / m["fp"]
        verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
        print(f"{case.label:<26}{size:>6}{m['d']:>12,.0f}{m['f']:>12,.0f}{ratio:>7.2f}"
              f"{with_parse:>14.2f}  {verdict}")  # fmt: skip


# --- end to end ---------------------------------------------------------------------


def e2e_workspace(url: str, kind: str) -> Any:
    settings: dict[str, Any] = {"url": f"{url}/bench"}
    if kind == "http":
        settings |= {"batch": True, "mapping": AMPLITUDE_LIKE}
    return parse_workspace({
        "sources": [{"name": "bench", "write_key": "wk_bench_1"}],
        "destinations": [{"name": "sink", "type": kind, "sources": ["bench"],
                          "settings": settings,
                          "delivery": {"batch_max_events": 500, "concurrency": 8}}],
    })  # fmt: skip


async def deliver_all(kind: str, sink: Server, data: list[bytes], data_dir: Path) -> float:
    """Events/s from the first append to the last event counted at the receiver."""
    return await deliver(e2e_workspace(sink.base_url, kind), sink, data, data_dir, kind)


async def deliver(
    workspace: Any, sink: Server, data: list[bytes], data_dir: Path, what: str
) -> float:
    """The events (of the source ``bench``) through ``workspace``'s delivery engine: events/s
    from the first append to the last event counted at ``sink`` (bench/functions.py too)."""
    log = MemoryLog(LogConfig())
    engine = DeliveryEngine(workspace, log, data_dir)
    await engine.start()
    try:
        before = get_json(sink.base_url + "/stats")["events"]
        now_ms = int(time.time() * 1000)
        records = [Record(str(uuid.uuid4()), "bench", "track", now_ms, p) for p in data]
        started = time.monotonic()
        for i in range(0, len(records), 1000):
            await log.append(records[i : i + 1000])
        deadline = started + 600
        while True:
            counted = await asyncio.to_thread(get_json, sink.base_url + "/stats")
            if counted["events"] - before >= len(data):
                return len(data) / (time.monotonic() - started)
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: {counted['events'] - before} of {len(data)} events "
                                 "delivered in 600 s")  # fmt: skip
            await asyncio.sleep(0.02)
    finally:
        await engine.stop()


def measure_e2e(events: int, rounds: int, run_dir: Path) -> None:
    print(f"\n2. end to end: {events:,} events from the log to a batching fake "
          f"(bench/receiver.py), 500 a request, median of {rounds} rounds")  # fmt: skip
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "receiver.py"), "--host", HOST, "--port", str(port)]
    data = payloads(events)
    figures: dict[str, list[float]] = {"http": [], "webhook": []}
    with running_server(command, port, run_dir / "receiver.log", 30) as sink:
        for n in range(rounds):
            for kind in ("http", "webhook") if n % 2 == 0 else ("webhook", "http"):
                figure = asyncio.run(deliver_all(kind, sink, data, run_dir / f"{kind}{n}"))
                figures[kind].append(figure)
    mapped, plain = (statistics.median(figures[k]) for k in ("http", "webhook"))
    verdict = "ok" if mapped >= TARGET_E2E else "BELOW TARGET"
    print(f"{'amplitude-like via http':<26}{mapped:>12,.0f} events/s  target ≥ {TARGET_E2E:,}: "
          f"{verdict}")  # fmt: skip
    print(f"{'webhook (floor, unmapped)':<26}{plain:>12,.0f} events/s  ratio {mapped / plain:.2f}")


def machine() -> str:
    import os

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--types", default="amplitude,mixpanel",
                        help="vendor destination types to time, by name")  # fmt: skip
    parser.add_argument("--cpu-seconds", type=float, default=1.0,
                        help="CPU seconds per figure and round")  # fmt: skip
    parser.add_argument("--e2e-events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.cpu_seconds, args.e2e_events = 1, 0.1, 5_000
    print(f"machine: {machine()}")
    cases = [http_case("http (webhook mapping)", WEBHOOK_MAPPING, 100),
             http_case("amplitude-like via http", AMPLITUDE_LIKE, 100)]  # fmt: skip
    for name in filter(None, (t.strip() for t in args.types.split(","))):
        found = vendor_case(name)
        if isinstance(found, str):
            print(f"skipped {found}")
        else:
            cases.append(found)
    try:
        measure_cpu(cases, payloads(2000), args.rounds, args.cpu_seconds)
        with tempfile.TemporaryDirectory(prefix="hw-bench-destinations-") as tmp:
            measure_e2e(args.e2e_events, args.rounds, Path(tmp))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
