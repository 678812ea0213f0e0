"""Functions benchmark: events/s through a trivial insert function, against the same
destination without it.

``--events`` events are appended to an in-memory log; the real delivery engine (its worker,
routing, batching, the ledger on SQLite, the HTTP client) delivers them to
``bench/receiver.py`` (a bare ASGI server in its own process that counts events) through a
``webhook`` destination, 500 events a request:

- **floor**: the webhook alone;
- **on_batch**: the same webhook with an insert function whose ``on_batch`` adds a property
  to every event (one round trip to the function's worker per batch);
- **per event**: the same with an ``on_track`` handler instead (the worker calls it once per
  event; still one round trip per batch).

Figure: events/s from the first append to the last event counted at the receiver; the
median of ``--rounds`` rounds, cases interleaved. Targets (issue 19): on_batch ≥ 0.5 of the
floor; per event ≥ 5,000 events/s with one function worker.

The exit status is 0 whatever the targets say, 1 when something could not run.

Run:   .venv/bin/python bench/functions.py [--events 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson

from destinations import deliver
from harness import BenchError, free_port, running_server
from headwater.config.workspace import parse_workspace

BENCH_DIR = Path(__file__).resolve().parent

HOST = "127.0.0.1"
TARGET_RATIO = 0.5
TARGET_PER_EVENT = 5_000

ON_BATCH = """
def on_batch(events, settings):
    for event in events:
        event["properties"]["enriched"] = True
    return events
"""

PER_EVENT = """
def on_track(event, settings):
    event["properties"]["enriched"] = True
    return event
"""


def payloads(n: int) -> list[bytes]:
    return [
        orjson.dumps({
            "type": "track", "event": "Order Completed", "userId": f"u{i % 5000}",
            "messageId": str(uuid.uuid4()), "timestamp": "2026-12-06T10:00:00.000Z",
            "properties": {"order_id": f"o-{i}", "revenue": 25.5, "currency": "EUR"},
            "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        })
        for i in range(n)
    ]  # fmt: skip


def workspace(url: str, code: Path | None) -> Any:
    functions = []
    if code is not None:
        functions = [{"name": "enrich", "kind": "insert", "file": str(code),
                      "destination": "sink", "limits": {"workers": 1}}]  # fmt: skip
    return parse_workspace({
        "sources": [{"name": "bench", "write_key": "wk_bench_1"}],
        "destinations": [{"name": "sink", "type": "webhook", "sources": ["bench"],
                          "settings": {"url": f"{url}/bench"},
                          "delivery": {"batch_max_events": 500, "concurrency": 4}}],
        "functions": functions,
    })  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = payloads(args.events)
    with tempfile.TemporaryDirectory(prefix="hw-bench-functions-") as tmp:
        run_dir = Path(tmp)
        codes = {"floor": None, "on_batch": run_dir / "batch.py", "per event": run_dir / "one.py"}
        (run_dir / "batch.py").write_text(ON_BATCH)
        (run_dir / "one.py").write_text(PER_EVENT)
        port = free_port()
        command = [sys.executable, str(BENCH_DIR / "receiver.py"), "--host", HOST,
                   "--port", str(port)]  # fmt: skip
        figures: dict[str, list[float]] = {name: [] for name in codes}
        try:
            with running_server(command, port, run_dir / "receiver.log", 30) as sink:
                for n in range(args.rounds):
                    order = list(codes) if n % 2 == 0 else list(reversed(codes))
                    for name in order:
                        data_dir = run_dir / f"{name.replace(' ', '_')}{n}" / "delivery"
                        data_dir.mkdir(parents=True)
                        ws = workspace(sink.base_url, codes[name])
                        rate = asyncio.run(deliver(ws, sink, data, data_dir, name))
                        figures[name].append(rate)
                        print(f"round {n + 1} {name:<10} {rate:10,.0f} events/s", flush=True)
        except BenchError as exc:
            print(f"could not run: {exc}", file=sys.stderr)
            return 1
    floor, batch, single = (statistics.median(figures[k]) for k in codes)
    print(f"\n{args.events:,} events, median of {args.rounds} rounds")
    print(f"{'webhook alone (floor)':<32}{floor:10,.0f} events/s")
    print(
        f"{'insert function, on_batch':<32}{batch:10,.0f} events/s   ratio {batch / floor:.2f}"
        f"   target ≥ {TARGET_RATIO}: {'met' if batch / floor >= TARGET_RATIO else 'NOT met'}"
    )
    print(f"{'insert function, per event':<32}{single:10,.0f} events/s   ratio {single / floor:.2f}"
          f"   target ≥ {TARGET_PER_EVENT:,}/s: "
          f"{'met' if single >= TARGET_PER_EVENT else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
