"""Applying the configuration under load: nothing lost, and ingest's p99 within 2× of the
p99 without it, in the same run.

    .venv/bin/python bench/config_apply.py                 # 5,000 events/s, 15 s a phase
    .venv/bin/python bench/config_apply.py --rate 2000 --duration 10 --rounds 3

One ``headwater serve`` (the gateway, the log writer and the delivery worker process, fsync
durability) with two sources and 26 devsink destinations: ``sink``, which gets every event
of ``website`` and that nobody changes, and ``d0``…``d24`` on a second source, ``quiet``, so
that the load measures the apply and not 26 deliveries of each event (on 2 cores that alone
saturates the machine). Single track calls come in open loop (``bench/loadgen.py --rate``: each
request's latency counts from when it was due) in two phases of ``--duration`` each:

- **floor**: the load alone;
- **apply**: the same load while ``PUT /api/v1/workspace`` applies one change of 50
  resources after another for the whole phase — each apply flips between two workspaces
  that differ in 50 resources (the 25 ``d*`` destinations get a filter or lose it, and 25
  ``e*`` destinations are created or deleted), so every one restarts 25 workers and
  starts or stops 25 more.

Printed per round: the p99 of each phase, their ratio (target ≤ 2), the applies made and
how long they took, and whether anything was lost: every event the server acknowledged
must be in ``sink`` (the destination no apply touches), counted by its devsink. The exit
status is 0 whatever the figures are.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from harness import (
    HOST,
    LOCAL_HTTP,
    LoadSpec,
    basic_auth,
    free_port,
    preflight,
    run_load,
    running_server,
)

WRITE_KEY = "wk_bench_config_apply_1"
ADMIN_TOKEN = "hwa_" + secrets.token_urlsafe(24)
DESTINATIONS = 25


def workspace(flip: bool) -> dict[str, Any]:
    """One of the two workspaces the applies flip between (50 resources apart)."""
    dests: list[dict[str, Any]] = [
        {"name": "sink", "type": "devsink", "sources": ["website"], "settings": {"keep": 10}}
    ]
    for n in range(DESTINATIONS):
        dest: dict[str, Any] = {
            "name": f"d{n}",
            "type": "devsink",
            "sources": ["quiet"],
            "settings": {"keep": 10},
        }
        if flip:
            dest["filters"] = [{"if": "event = 'Never Sent'", "actions": [{"type": "DROP"}]}]
        dests.append(dest)
    if flip:
        dests += [
            {"name": f"e{n}", "type": "devsink", "sources": ["quiet"], "settings": {"keep": 10}}
            for n in range(DESTINATIONS)
        ]
    return {
        "sources": [
            {"name": "website", "write_key": WRITE_KEY},
            {"name": "quiet", "write_key": "wk_bench_config_quiet_1"},
        ],
        "destinations": dests,
        "status": {"canary_enabled": False},
    }


def api(base: str, method: str, path: str, body: Any = None, **headers: str) -> Any:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers={
            "authorization": f"Bearer {ADMIN_TOKEN}",
            "content-type": "application/json",
            **headers,
        },
    )
    with LOCAL_HTTP.open(request, timeout=120) as response:
        return orjson.loads(response.read())


class Applier(threading.Thread):
    """Applies the two workspaces in turn until stopped; keeps each apply's duration."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.took_s: list[float] = []
        self.changes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        flip = True
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                answer = api(self.base, "PUT", "/api/v1/workspace", workspace(flip))
                self.took_s.append(time.monotonic() - started)
                self.changes += (
                    len(answer["created"]) + len(answer["changed"]) + len(answer["deleted"])
                )
                flip = not flip
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def sink_total(base: str) -> int:
    request = urllib.request.Request(
        f"{base}/api/v1/devsink/sink?limit=1", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with LOCAL_HTTP.open(request, timeout=10) as response:
        doc = orjson.loads(response.read())
    return int(doc["total"])


def one_round(options: argparse.Namespace, work: Path, index: int) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"round{index}-", dir=work))
    config = run_dir / "workspace.yaml"
    config.write_bytes(orjson.dumps(workspace(False)))  # JSON is YAML
    body = run_dir / "batch.json"
    event = {"type": "track", "userId": "u1", "event": "Bench", "messageId": "__MSGID__",
             "properties": {"plan": "pro", "amount": 12.5}}  # fmt: skip
    if options.batch > 1:
        body.write_bytes(orjson.dumps({"batch": [event] * options.batch}))
        path = "/v1/batch"
    else:
        body.write_bytes(orjson.dumps(event))
        path = "/v1/track"
    spec = LoadSpec(path, body, basic_auth(WRITE_KEY), True, options.connections, 1)
    rate = options.rate / options.batch  # requests/s
    port = free_port()
    command = [
        options.headwater,
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(run_dir / "data"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with running_server(command, port, run_dir / "server.log", 60) as server:
        preflight(server, spec)
        run_load(server, spec, 3, options.python, False, rate)  # warm-up
        floor = run_load(server, spec, options.duration, options.python, False, rate)
        applier = Applier(server.base_url)
        applier.start()
        during = run_load(server, spec, options.duration, options.python, False, rate)
        applier.stop.set()
        applier.join(timeout=300)
        if applier.error is not None:
            raise applier.error
        server.check_alive()
        # every acknowledged event is in the log (the tests prove that); the untouched
        # destination must get all of them, however many applies ran beside it
        deadline = time.monotonic() + 120
        while True:
            total = sink_total(server.base_url)
            logged = _log_count(run_dir / "data")
            if total >= logged or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {
        "floor_p99_ms": floor.p99_ms,
        "apply_p99_ms": during.p99_ms,
        "ratio": during.p99_ms / floor.p99_ms if floor.p99_ms else float("inf"),
        "floor_rate": floor.ok_requests_per_s * options.batch,
        "apply_rate": during.ok_requests_per_s * options.batch,
        "errors": floor.error_count + during.error_count,
        "applies": len(applier.took_s),
        "changes": applier.changes,
        "apply_median_s": statistics.median(applier.took_s) if applier.took_s else 0.0,
        "apply_max_s": max(applier.took_s, default=0.0),
        "logged": logged,
        "in_sink": total,
        "lost": max(0, logged - total),
    }


def _log_count(data_dir: Path) -> int:
    """Events in the log, read from its SQLite files as the tests do."""
    import sqlite3

    from headwater.log.sqlite_reads import read_after

    conn = sqlite3.connect(f"file:{data_dir / 'log' / 'events.sqlite'}?mode=ro", uri=True)
    try:
        return len(read_after(conn, after=0, limit=10**9))
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s offered")
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="events per request (/v1/batch); 1: single /v1/track calls",
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--headwater", default=str(Path(sys.executable).with_name("headwater")))
    options = parser.parse_args()
    os.environ["HEADWATER_ADMIN_TOKEN"] = ADMIN_TOKEN
    work = Path(tempfile.mkdtemp(prefix="hw-config-apply-"))
    print(
        f"config apply under load: {options.rate:g} events/s offered ({options.batch} per "
        f"request), {options.duration} s "
        f"a phase, {options.rounds} round(s); work dir {work}"
    )
    for index in range(options.rounds):
        r = one_round(options, work, index)
        print(
            f"round {index + 1}: request p99 {r['apply_p99_ms']:.1f} ms while applying vs "
            f"{r['floor_p99_ms']:.1f} ms without (floor) → ratio {r['ratio']:.2f} (target ≤ 2); "
            f"{r['applies']} applies of 50 changes ({r['changes']} changes, median "
            f"{r['apply_median_s'] * 1000:.0f} ms, max {r['apply_max_s'] * 1000:.0f} ms); "
            f"accepted {r['floor_rate']:.0f}/{r['apply_rate']:.0f} events/s; "
            f"{r['logged']} events in the log, {r['in_sink']} delivered to the untouched "
            f"destination, lost {r['lost']}; HTTP errors {r['errors']}"
        )


if __name__ == "__main__":
    main()
