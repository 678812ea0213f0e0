"""Ingestion benchmark: Headwater against its floor, same machine, same load, one run.

For single ``POST /v1/track`` calls and for ``POST /v1/batch`` with 100 events a
request, it drives, each in a fresh process (Headwater on a fresh data dir):

- the floor (``bench/floor.py``): a bare ASGI app on the same uvicorn stack that
  only parses the JSON and answers 200;
- ``headwater serve`` with fsync durability;

with the same wrk load (``bench/wrk_post.lua``; ``bench/loadgen.py`` when wrk is
missing), and prints req/s, events/s, the ratio to the floor, p50/p99 latency and
peak RSS. wrk's loop is closed, so its batch latency is tied to its throughput;
then, for the batch scenario, both servers (fresh again) take a fixed-rate, open-loop
load of ``--open-loop-events-per-s`` (``bench/loadgen.py --rate``), which gives the
latency at that load. Last come the issue's targets as PASS/FAIL. The exit status is 0 whatever the
targets say, and 1 only when something could not run.

Run:        .venv/bin/python bench/ingest.py [--duration 10] [--json bench/results/ingest.json]
Self-test:  .venv/bin/python bench/ingest.py --against floor   (a second floor stands in)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from fsync_probe import measure_fsync
from harness import (
    BENCH_DIR,
    HOST,
    BenchError,
    LoadSpec,
    basic_auth,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    peak_rss_mb,
    preflight,
    run_load,
    running_server,
    wrk_path,
)
from report import (
    FLOOR,
    OPEN_LOOP_EVENTS_PER_S,
    Machine,
    Row,
    evaluate_targets,
    format_report,
    with_ratio,
    write_json,
)

REPO_DIR = BENCH_DIR.parent
WRITE_KEY = "wk_bench_123"
BATCH_SIZE = 100
TIMESTAMP = "2026-11-26T12:00:00.000Z"
MESSAGE_ID_PLACEHOLDER = "__MSGID__"  # filled per event by wrk_post.lua / loadgen.py
WORKSPACE_YAML = f"""\
sources:
  - name: bench
    write_key: {WRITE_KEY}
log:
  durability: fsync
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    events_per_request: int


SCENARIOS = (Scenario("single", "/v1/track", 1), Scenario("batch", "/v1/batch", BATCH_SIZE))


@dataclass(frozen=True)
class Options:
    duration_s: int  # wrk takes whole seconds
    warmup_s: int
    connections: int
    threads: int
    rounds: int
    scenarios: tuple[str, ...]
    against: str  # "headwater", or "floor" for the harness self-test
    headwater: Path
    python: str
    message_ids: bool
    use_wrk: bool
    data_root: Path | None
    startup_timeout_s: float
    json_path: Path | None
    open_loop_events_per_s: int  # batch events/s of the open-loop runs; 0 skips them

    def settings(self) -> dict[str, object]:
        """What the report and the JSON file record about this run."""
        keys = ["duration_s", "warmup_s", "connections", "threads", "rounds"]
        keys += ["message_ids", "against", "open_loop_events_per_s"]
        return {key: getattr(self, key) for key in keys} | {"batch_size": BATCH_SIZE}


# --- request bodies ---------------------------------------------------------------


def track_event(message_id: str | None, with_type: bool) -> dict[str, object]:
    """A realistic track event of about 500 bytes, shaped as analytics-node sends it."""
    event: dict[str, object] = {"type": "track"} if with_type else {}
    event |= {
        "userId": "u1",
        "event": "Bench Event",
        "properties": {
            "order_id": "ord_7f3a91c2",
            "product_id": "sku-12345",
            "name": "Trail Running Shoe",
            "category": "footwear",
            "price": 129.99,
            "quantity": 2,
            "currency": "USD",
            "coupon": None,
        },
        "context": {
            "library": {"name": "analytics-node", "version": "2.1.0"},
            "ip": "203.0.113.42",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "page": {"path": "/checkout", "url": "https://shop.example.com/checkout"},
        },
        "timestamp": TIMESTAMP,
    }
    if message_id is not None:
        event["messageId"] = message_id
    return event


def write_bodies(directory: Path, message_ids: bool) -> dict[str, Path]:
    """Write one request body per scenario and return their paths by scenario name."""
    message_id = MESSAGE_ID_PLACEHOLDER if message_ids else None
    events = [track_event(message_id, with_type=True) for _ in range(BATCH_SIZE)]
    bodies = {
        "single": track_event(message_id, with_type=False),
        "batch": {"batch": events, "sentAt": TIMESTAMP},
    }
    paths = {name: directory / f"{name}.json" for name in bodies}
    for name, body in bodies.items():
        paths[name].write_bytes(orjson.dumps(body))
    return paths


# --- measuring ----------------------------------------------------------------------


def server_command(kind: str, options: Options, port: int, run_dir: Path) -> list[str]:
    if kind == FLOOR:
        return [options.python, str(BENCH_DIR / "floor.py"), "--host", HOST, "--port", str(port)]
    config, data_dir = run_dir / "workspace.yaml", run_dir / "data"
    config.write_text(WORKSPACE_YAML)
    data_dir.mkdir()
    serve = ["serve", "--config", str(config), "--data-dir", str(data_dir)]
    return [str(options.headwater), *serve, "--host", HOST, "--port", str(port)]


def measure(
    kind: str,
    label: str,
    scenario: Scenario,
    spec: LoadSpec,
    options: Options,
    rate: float | None = None,
) -> Row:
    """Start a fresh server, warm it up, load it for the duration, read its peak RSS.

    With ``rate`` (requests/s), warm-up and measured load are both open-loop at that rate.
    """
    suffix = "" if rate is None else "-open"
    run_dir = Path(
        tempfile.mkdtemp(prefix=f"{label}-{scenario.name}{suffix}-", dir=spec.body_file.parent)
    )
    port = free_port()
    command = server_command(kind, options, port, run_dir)
    python, use_wrk = options.python, options.use_wrk
    with running_server(command, port, run_dir / "server.log", options.startup_timeout_s) as server:
        preflight(server, spec)
        if options.warmup_s > 0:
            run_load(server, spec, options.warmup_s, python, use_wrk, rate)
        server_before, busy_before = cpu_seconds(server.pid), machine_busy_seconds()
        started = time.monotonic()
        load = run_load(server, spec, options.duration_s, python, use_wrk, rate)
        elapsed_s = time.monotonic() - started
        server.check_alive()
        server_cpu_s = cpu_seconds(server.pid) - server_before
        other_cpu_s = machine_busy_seconds() - busy_before - server_cpu_s - load.loadgen_cpu_s
        rss_mb = peak_rss_mb(server.pid)
    row = Row(
        server=label,
        scenario=scenario.name,
        req_per_s=load.ok_requests_per_s,
        events_per_s=load.ok_requests_per_s * scenario.events_per_request,
        ratio_to_floor=1.0,
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        peak_rss_mb=rss_mb,
        errors=load.error_count,
        error_detail={name: count for name, count in load.errors.items() if count},
        server_cpu_pct=server_cpu_s / elapsed_s * 100,
        loadgen_cpu_pct=load.loadgen_cpu_s / elapsed_s * 100,
        other_cpu_pct=max(other_cpu_s, 0.0) / elapsed_s * 100,
        p90_ms=load.p90_ms,
        max_ms=load.max_ms,
    )
    if load.open_loop is None:
        return row
    return replace(
        row,
        loop="open",
        target_events_per_s=load.open_loop.rate * scenario.events_per_request,
        late_starts=load.open_loop.late,
        late_max_ms=load.open_loop.late_max_ms,
        # The generator's own reading: just the timed part, not its start-up.
        loadgen_cpu_pct=load.open_loop.loadgen_cpu_pct,
    )


def run_all(options: Options, workdir: Path) -> list[Row]:
    """Floor, then the server under test, for each scenario; ratios against that floor.

    Then the open-loop batch runs (floor, then the server under test), if asked for.
    """
    bodies = write_bodies(workdir, options.message_ids)
    label = "floor-copy" if options.against == FLOOR else "headwater"
    rows: list[Row] = []
    selected = [s for s in SCENARIOS if s.name in options.scenarios]
    specs = {
        scenario.name: LoadSpec(
            path=scenario.path,
            body_file=bodies[scenario.name],
            auth_header=basic_auth(WRITE_KEY),
            message_ids=options.message_ids,
            connections=options.connections,
            threads=options.threads,
        )
        for scenario in selected
    }
    for scenario in selected:
        spec = specs[scenario.name]
        floors: list[Row] = []
        measured: list[Row] = []
        for round_number in range(1, options.rounds + 1):
            step = f"{scenario.name} {round_number}/{options.rounds}"
            progress(f"{step}: floor …")
            floors.append(measure(FLOOR, FLOOR, scenario, spec, options))
            progress(f"{step}: {label} …")
            measured.append(measure(options.against, label, scenario, spec, options))
        floor = median_run(floors)
        rows += [floor, with_ratio(median_run(measured), floor)]
    batch = next((s for s in selected if s.name == "batch"), None)
    if batch is not None and options.open_loop_events_per_s > 0:
        rows += run_open_loop(batch, specs[batch.name], label, options)
    return rows


def run_open_loop(scenario: Scenario, spec: LoadSpec, label: str, options: Options) -> list[Row]:
    """The fixed-rate batch load on a fresh floor, then on a fresh server under test."""
    rate = options.open_loop_events_per_s / scenario.events_per_request  # requests/s
    floors: list[Row] = []
    measured: list[Row] = []
    for round_number in range(1, options.rounds + 1):
        step = f"{scenario.name} open loop @{rate:g} req/s {round_number}/{options.rounds}"
        progress(f"{step}: floor …")
        floors.append(measure(FLOOR, FLOOR, scenario, spec, options, rate))
        progress(f"{step}: {label} …")
        measured.append(measure(options.against, label, scenario, spec, options, rate))
    floor = median_run(floors, key="p99_ms")
    return [floor, with_ratio(median_run(measured, key="p99_ms"), floor)]


def median_run(runs: Sequence[Row], key: str = "events_per_s") -> Row:
    """The run with the median ``key`` (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda row: getattr(row, key))
    return ordered[(len(ordered) - 1) // 2]


def loadgen_name(use_wrk: bool) -> str:
    if not use_wrk:
        return "Python load generator (bench/loadgen.py; slower than wrk, may be the bottleneck)"
    completed = subprocess.run([wrk_path() or "wrk", "-v"], capture_output=True, text=True)
    first_line = (completed.stdout or completed.stderr).partition("\n")[0]
    return first_line.split(" [")[0] or "wrk"


# --- command line -------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--duration", type=int, default=10, help="measured seconds per run (default 10)")
    add("--warmup", type=int, default=2, help="unmeasured seconds before each (default 2)")
    add("--connections", type=int, default=32, help="default 32")
    add("--threads", type=int, default=1, help="wrk threads (default 1, for a 2-core machine)")
    add("--rounds", type=int, default=1, help="runs per server and scenario; the median is kept")
    scenario_names = [s.name for s in SCENARIOS]
    add("--scenario", action="append", choices=scenario_names, help="repeatable; default all")
    add(
        "--against",
        choices=["headwater", FLOOR],
        default="headwater",
        help="'floor' puts a second floor in Headwater's place: a self-test of the harness",
    )
    add("--headwater", type=Path, default=REPO_DIR / ".venv" / "bin" / "headwater")
    add("--python", help="interpreter for the floor (default: the one beside --headwater)")
    add(
        "--message-ids",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give every event its own messageId (default) or none",
    )
    add("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    add("--data-root", type=Path, help="parent of the fresh data dirs (default: system temp)")
    add("--startup-timeout", type=float, default=30.0, help="seconds to wait for /healthz")
    add("--json", type=Path, help="also write the results to this JSON file")
    add(
        "--open-loop-events-per-s",
        type=int,
        default=OPEN_LOOP_EVENTS_PER_S,
        metavar="N",
        help="after the closed-loop runs, load /v1/batch at this fixed rate to time its"
        f" latency (default {OPEN_LOOP_EVENTS_PER_S}; 0 skips it)",
    )
    args = parser.parse_args(argv)
    if args.open_loop_events_per_s < 0:
        parser.error("--open-loop-events-per-s must be 0 (skip) or more")
    if args.loadgen == "wrk" and wrk_path() is None:
        parser.error("wrk is not installed (apt-get install -y wrk); or use --loadgen python")
    return Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        rounds=args.rounds,
        scenarios=tuple(args.scenario or scenario_names),
        against=args.against,
        headwater=args.headwater,
        python=args.python or default_python(args.headwater),
        message_ids=args.message_ids,
        use_wrk=args.loadgen == "wrk" or (args.loadgen == "auto" and wrk_path() is not None),
        data_root=args.data_root,
        startup_timeout_s=args.startup_timeout,
        json_path=args.json,
        open_loop_events_per_s=args.open_loop_events_per_s,
    )


def default_python(headwater: Path) -> str:
    """The floor runs on Headwater's own interpreter, so both load the same packages."""
    candidate = headwater.parent / "python"
    return str(candidate) if candidate.exists() else sys.executable


def check_prerequisites(options: Options) -> None:
    if options.against == "headwater" and not os.access(options.headwater, os.X_OK):
        raise BenchError(
            f"headwater is not installed at {options.headwater}: install the package into "
            "the venv (`pip install -e .`), pass --headwater PATH, or run --against floor"
        )
    imports = "import orjson, uvicorn, uvloop, httptools"
    probe = subprocess.run([options.python, "-c", imports], capture_output=True, text=True)
    if probe.returncode != 0:
        raise BenchError(
            f"{options.python} cannot run the floor; it needs orjson and uvicorn[standard]:\n"
            f"{probe.stderr.strip()}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        check_prerequisites(options)
        if not options.use_wrk and wrk_path() is None:
            progress("wrk not found: using the Python load generator (bench/loadgen.py)")
        with tempfile.TemporaryDirectory(prefix="headwater-bench-", dir=options.data_root) as tmp:
            machine = Machine.describe(measure_fsync(Path(tmp)), loadgen_name(options.use_wrk))
            rows = run_all(options, Path(tmp))
    except BenchError as exc:
        print(f"bench/ingest.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/ingest.py: interrupted; servers stopped", file=sys.stderr)
        return 130
    targets = evaluate_targets(rows)
    print(format_report(options.settings(), machine, rows, targets))
    if options.json_path:
        write_json(options.json_path, options.settings(), machine, rows, targets)
        print(f"\nwrote {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
