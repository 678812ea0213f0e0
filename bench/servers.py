"""Which HTTP server stack for the Tracking API: uvicorn (httptools, uvloop — what
``headwater serve`` runs) against granian, through ASGI and through RSGI, on the same bare
endpoint (``bench/floor.py``: read the body, parse it with orjson, answer 200).

The floor is uvicorn; each granian stack is printed as a ratio of it, with the server's CPU
per request, so the saving can be weighed against what Headwater itself spends per request
(``bench/ingest.py``). Each server runs in a fresh process, one worker, access log off,
under the same wrk load as bench/ingest.py (``-t1 -c32``, 2 s warm-up), single events
(``/v1/track``) and batches of 100 (``/v1/batch``), for ``--rounds`` rounds.

Run:  .venv/bin/pip install granian && .venv/bin/python bench/servers.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BENCH_DIR,
    HOST,
    BenchError,
    LoadSpec,
    cpu_seconds,
    free_port,
    preflight,
    run_load,
    running_server,
    wrk_path,
)
from ingest import SCENARIOS, write_bodies

STACKS = {
    "uvicorn (floor)": [str(BENCH_DIR / "floor.py")],
    "granian asgi": [str(BENCH_DIR / "floor_granian.py"), "--interface", "asgi"],
    "granian rsgi": [str(BENCH_DIR / "floor_granian.py"), "--interface", "rsgi"],
}


@dataclass(frozen=True)
class Result:
    stack: str
    scenario: str
    requests_per_s: float
    p99_ms: float
    cpu_us_per_request: float


def measure(stack: str, scenario: str, spec: LoadSpec, duration_s: int) -> Result:
    port = free_port()
    command = [sys.executable, *STACKS[stack], "--host", HOST, "--port", str(port)]
    log = Path(tempfile.mkdtemp(prefix="servers-")) / "server.log"
    with running_server(command, port, log, 30.0) as server:
        preflight(server, spec)
        run_load(server, spec, 2, sys.executable, True)
        before = cpu_seconds(server.pid)
        started = time.monotonic()
        load = run_load(server, spec, duration_s, sys.executable, True)
        elapsed = time.monotonic() - started
        server.check_alive()
        cpu = cpu_seconds(server.pid) - before
    if load.error_count:
        raise BenchError(f"{stack} {scenario}: {load.errors}")
    served = max(1, load.ok_requests)
    return Result(stack, scenario, load.ok_requests / elapsed, load.p99_ms,
                  cpu / served * 1e6)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    options = parser.parse_args()
    if wrk_path() is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 1
    try:
        import granian  # noqa: F401
    except ImportError:
        print("granian is missing: .venv/bin/pip install granian", file=sys.stderr)
        return 1
    bodies = write_bodies(Path(tempfile.mkdtemp(prefix="servers-bodies-")), message_ids=False)
    results: list[Result] = []
    for scenario in SCENARIOS:
        spec = LoadSpec(scenario.path, bodies[scenario.name], "", False, 32, 1)
        for round_number in range(1, options.rounds + 1):
            for stack in STACKS:  # interleaved, so a busy moment hits every stack alike
                print(f"{scenario.name} {round_number}/{options.rounds}: {stack} …",
                      file=sys.stderr, flush=True)  # fmt: skip
                results.append(measure(stack, scenario.name, spec, options.duration))
    print(f"{'scenario':<8} {'stack':<16} {'req/s (median)':>15} {'ratio':>6} "
          f"{'p99 ms':>7} {'CPU µs/req':>11}")  # fmt: skip
    for scenario in SCENARIOS:
        mine = [r for r in results if r.scenario == scenario.name]
        floor = statistics.median(r.requests_per_s for r in mine if r.stack == "uvicorn (floor)")
        for stack in STACKS:
            runs = [r for r in mine if r.stack == stack]
            rate = statistics.median(r.requests_per_s for r in runs)
            print(f"{scenario.name:<8} {stack:<16} {rate:>15,.0f} {rate / floor:>6.2f} "
                  f"{statistics.median(r.p99_ms for r in runs):>7.2f} "
                  f"{statistics.median(r.cpu_us_per_request for r in runs):>11.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
