"""Delivery end to end with 1, 2 and 3 worker nodes sharing the destinations (JetStream log,
PostgreSQL state), and the single-node SQLite mode as the floor, in one run.

    .venv/bin/python bench/scale_workers.py                  # 6 destinations, 20,000 events
    .venv/bin/python bench/scale_workers.py --destinations 3 --events 5000 --workers 1 2

Each run starts fresh: ``headwater serve`` (the gateway and its worker process: node 1) and
``N - 1`` more ``headwater serve --role worker`` processes with data directories of their
own, as other machines would be, all on a 3-server NATS JetStream cluster (R3) and a
PostgreSQL with fsync on, every server on this machine. ``--destinations`` webhooks (batches
of 100 events) point at ``bench/receiver.py``. Once the leases are spread, the benchmark
posts ``--events`` tracks through ``/v1/batch`` (batches of 100) and measures from the
first post until the receiver has counted every delivery (events × destinations).

- **sqlite (floor)**: the same, on one node with the embedded log and state (the default).
- **jetstream + postgres, N workers**: shared delivery (docs/scale-out.md).

Prints deliveries/s, the ratio to the floor and the scaling ratio to one worker. All the
processes share this machine's cores, so the scaling measured here is a floor for what
separate machines give; docs/benchmarks.md has the projection. Exit status 0 whatever the
ratios are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.postgres import Postgres, cluster

from harness import HOST, Server, free_port, get_json, process_tree, running_server
from headwater.log.nats_local import LocalNats

BENCH_DIR = Path(__file__).resolve().parent
WRITE_KEY = "wk_bench_scale_123"
BATCH = 100


def workspace_yaml(receiver: str, destinations: int, shared: tuple[LocalNats, Postgres] | None,
                   tag: str) -> str:  # fmt: skip
    lines = ["name: bench", "sources:", f"  - {{name: website, write_key: {WRITE_KEY}}}",
             "destinations:"]  # fmt: skip
    for i in range(destinations):
        lines.append(f"  - {{name: d{i}, type: webhook, sources: [website], settings: "
                     f"{{url: '{receiver}/d{i}'}}, delivery: {{batch_max_events: {BATCH}, "
                     "concurrency: 4}}")  # fmt: skip
    lines.append("status: {canary_enabled: false}")
    if shared is not None:
        nats, pg = shared
        servers = ", ".join(nats.urls)
        lines.append(f"log: {{backend: jetstream, servers: [{servers}], replicas: 3, "
                     f"stream: s{tag}}}")  # fmt: skip
        lines.append(f"state: {{backend: postgres, dsn: '{pg.dsn()}', schema: s{tag}}}")
    return "\n".join(lines) + "\n"


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_secs(roots: list[int]) -> float:
    """User + system CPU of these processes and their descendants (live ones, from /proc)."""
    total = 0
    for root in roots:
        for pid in process_tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def postmaster_pid(pg: Postgres) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


@dataclass
class Result:
    secs: float
    cpu: dict[str, float]  # CPU seconds per component during the measured window


def lease_owners(pg: Postgres, schema: str) -> int:
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            rows = conn.execute("SELECT DISTINCT owner FROM leases WHERE expires_at > now()")
            return len(rows.fetchall())
    except psycopg.Error:
        return 0


@contextmanager
def nodes(run_dir: Path, config: Path, workers: int) -> Iterator[tuple[Server, list[int]]]:
    """Node 1 (gateway + its worker) and ``workers - 1`` worker-only nodes."""
    headwater = str(Path(sys.executable).parent / "headwater")
    port = free_port()
    serve = [headwater, "serve", "--config", str(config), "--data-dir", str(run_dir / "node1"),
             "--host", HOST, "--port", str(port), "--log-level", "warning"]  # fmt: skip
    extra: list[subprocess.Popen[bytes]] = []
    with running_server(serve, port, run_dir / "node1.log", 120) as gateway:
        try:
            for n in range(2, workers + 1):
                with (run_dir / f"node{n}.log").open("wb") as log:
                    extra.append(subprocess.Popen(
                        [headwater, "serve", "--role", "worker", "--config", str(config),
                         "--data-dir", str(run_dir / f"node{n}"), "--log-level", "warning"],
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    ))  # fmt: skip
            yield gateway, [gateway.pid, *(p.pid for p in extra)]
        finally:
            for process in extra:
                process.send_signal(signal.SIGTERM)
            for process in extra:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def post_events(url: str, events: int, tag: str) -> None:
    with httpx.Client(base_url=url, auth=(WRITE_KEY, ""), timeout=60) as client:
        for start in range(0, events, BATCH):
            batch = [{"type": "track", "event": "Order Completed", "userId": f"u{i % 5000}",
                      "messageId": f"{tag}-{i}", "properties": {"revenue": i % 97, "sku": f"s{i}"},
                      "context": {"library": {"name": "analytics.js", "version": "2.11.1"}}}
                     for i in range(start, min(events, start + BATCH))]  # fmt: skip
            response = client.post("/v1/batch", json={"batch": batch})
            response.raise_for_status()


def run_once(receiver: Server, run_dir: Path, args: argparse.Namespace, workers: int,
             shared: tuple[LocalNats, Postgres] | None) -> Result:  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    run_dir.mkdir(parents=True)
    config = run_dir / "workspace.yaml"
    config.write_text(workspace_yaml(receiver.base_url, args.destinations, shared, tag))
    with nodes(run_dir, config, workers) as (gateway, headwater):
        if shared is not None:
            deadline = time.monotonic() + 90
            while lease_owners(shared[1], f"s{tag}") < min(workers, args.destinations):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the leases did not spread over {workers} workers")
                time.sleep(0.2)
        groups = {"headwater": headwater, "receiver": [receiver.pid]}
        if shared is not None:
            groups["nats"] = [s.process.pid for s in shared[0].servers if s.process]
            groups["postgres"] = [postmaster_pid(shared[1])]
        cpu_before = {name: cpu_secs(pids) for name, pids in groups.items()}
        before = int(get_json(receiver.base_url + "/stats")["events"])
        want = before + args.events * args.destinations
        started = time.perf_counter()
        post_events(gateway.base_url, args.events, tag)
        deadline = time.monotonic() + 600
        while int(get_json(receiver.base_url + "/stats")["events"]) < want:
            if time.monotonic() > deadline:
                raise RuntimeError("not every event arrived within 10 minutes")
            time.sleep(0.05)
        secs = time.perf_counter() - started
        cpu = {name: cpu_secs(pids) - cpu_before[name] for name, pids in groups.items()}
        return Result(secs, cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--destinations", type=int, default=6)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    deliveries = args.events * args.destinations
    results: dict[str, Result] = {}
    root = Path(tempfile.mkdtemp(prefix="hw-bench-scale-"))
    try:
        with ExitStack() as stack:
            port = free_port()
            receiver = stack.enter_context(running_server(
                [sys.executable, str(BENCH_DIR / "receiver.py"), "--host", HOST, "--port",
                 str(port)], port, root / "receiver.log", 60))  # fmt: skip
            results["sqlite (floor)"] = run_once(receiver, root / "sqlite", args, 1, None)
            nats = LocalNats(root / "nats", size=3)
            nats.start()
            stack.callback(nats.stop)
            pg = stack.enter_context(cluster(fsync=True))
            for n in args.workers:
                name = f"jetstream+pg, {n} worker{'s' if n > 1 else ''}"
                results[name] = run_once(receiver, root / f"w{n}", args, n, (nats, pg))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    floor = deliveries / results["sqlite (floor)"].secs
    one = next((deliveries / r.secs for k, r in results.items() if k.endswith(" 1 worker")), None)
    print(f"{args.events:,} events x {args.destinations} destinations = {deliveries:,} "
          f"deliveries, batches of 100, on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'run':<26}{'deliveries/s':>14}{'vs floor':>10}{'vs 1 worker':>13}"
          "   CPU ms per 1,000 deliveries (headwater / nats / postgres / receiver)")  # fmt: skip
    for name, result in results.items():
        rate = deliveries / result.secs
        scale = f"{rate / one:>13.2f}" if one and "worker" in name else f"{'':>13}"
        per = " / ".join(f"{result.cpu.get(k, 0) * 1e6 / deliveries:.0f}"
                         for k in ("headwater", "nats", "postgres", "receiver"))  # fmt: skip
        print(f"{name:<26}{rate:>14,.0f}{rate / floor:>10.2f}{scale}   {per}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
