"""Processing benchmark: delivery with a tracking plan and filters, against delivery without.

One run, one machine, two workspaces that differ only in processing:

(a) **plain**: bench/delivery.py's workspace — source ``bench``, ``durability: fsync``, one
    webhook to ``bench/receiver.py`` (the batching hook: 500 events a request, concurrency
    16; ``--hook per-event`` for one request per event);
(b) **processing**: the same, plus a 20-rule tracking plan on ``bench`` (Segment's shape:
    17 TRACK rules, IDENTIFY, GROUP and a COMMON rule; the load's events are valid, so each
    is checked against its TRACK rule and the COMMON rule and stored unchanged) and 3
    filters on the webhook that keep every event of the load: a DROP of ``Debug *`` events
    (matches none), a 90% SAMPLE on ``userId`` (the load's one user is in it) and a
    DROP_PROPERTIES of ``context.ip`` and ``properties.coupon`` (changes every event, which
    is then re-encoded).

Each is measured as bench/delivery.py measures its throughput figures (``measure_throughput``:
events delivered per second at the receiver while delivery is the bottleneck, the load
paced to what it sustains; bench/README.md explains). The rounds alternate the order of
(a) and (b); each round gives the ratio (b) / (a), and the median ratio is checked against
the target of 0.70. Before the rounds, one (b) server is checked: the load's events pass
the plan without a violation and none is filtered, and an invalid event is counted, so the
plan is live. Last, when bench/fql.py exists, its FQL evaluation speeds are printed.

The servers run a copy of ``src/`` taken at the start (the working tree, uncommitted
changes included), so edits made while the benchmark runs are not measured half-way.

The exit status is 0 whatever the target says, 1 when something could not run.

Run:   .venv/bin/python bench/processing.py [--rounds 3] [--json bench/results/processing.json]
Smoke: .venv/bin/python bench/processing.py --quick --rounds 1 --fql-seconds 0.1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

import delivery
import ingest
from delivery_report import CONVERGED_GAP, Hook, Throughput
from fsync_probe import measure_fsync
from harness import LOCAL_HTTP, BenchError, Server, basic_auth, log_tail, post
from report import BUSY_MACHINE_PCT, Machine, render_table

TARGET_RATIO = 0.70
PLAN_NAME = "bench-plan"
SOURCE = "bench"  # ingest.WORKSPACE_YAML's source
DESTINATION = "bench-hook"  # delivery.workspace_yaml's webhook
ADMIN_TOKEN = os.environ.setdefault("HEADWATER_ADMIN_TOKEN", "hwa_" + secrets.token_urlsafe(24))
EVENTS_PER_REQUEST = delivery.EVENTS_PER_REQUEST


# --- the processing workspace ---------------------------------------------------------


def _track(key: str, properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(required)}
    return {
        "type": "TRACK",
        "key": key,
        "jsonSchema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"context": {}, "traits": {}, "properties": schema},
            "required": ["properties"],
        },
    }


def bench_plan() -> dict[str, Any]:
    """20 rules; the load's ``Bench Event`` (ingest.track_event) is valid against them."""
    text = {"type": "string"}
    amount = {"type": "number", "minimum": 0}
    product = {
        "product_id": text,
        "sku": text,
        "name": text,
        "category": text,
        "price": amount,
        "quantity": {"type": "integer", "minimum": 1},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "coupon": {"type": ["string", "null"]},
        "url": {"type": "string", "format": "uri"},
    }
    products = {
        "type": "array",
        "items": {"type": "object", "properties": product, "required": ["product_id"]},
    }
    bench_required = ["order_id", "product_id", "price", "quantity", "currency"]
    rules = [
        _track("Bench Event", {"order_id": text, **product}, bench_required),
        _track("Order Completed", {"order_id": text, "revenue": amount, "products": products},
               ["order_id", "revenue"]),
        _track("Products Searched", {"query": {"type": "string", "minLength": 1}}, ["query"]),
        _track("Signed Up", {"email": {"type": "string", "format": "email"}}, ["email"]),
    ]  # fmt: skip
    for name in (
        "Product Viewed", "Product Added", "Product Removed", "Product Clicked",
        "Checkout Started", "Checkout Step Viewed", "Payment Info Entered", "Cart Viewed",
        "Coupon Applied", "Coupon Denied", "Order Refunded", "Promotion Viewed",
        "Wishlist Product Added",
    ):  # fmt: skip
        rules.append(_track(name, product, ["product_id"]))
    email = {"type": "string", "format": "email"}
    plan = {"enum": ["free", "pro", "enterprise"]}
    identify = {"type": "object", "properties": {"email": email, "plan": plan}}
    group = {"type": "object", "properties": {"name": text}, "required": ["name"]}
    library = {"type": "object", "required": ["name"]}
    common = {
        "type": "object",
        "properties": {"context": {"type": "object", "properties": {"library": library}}},
        "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    }
    rules += [
        {"type": "IDENTIFY", "jsonSchema": {"type": "object", "properties": {"traits": identify}}},
        {"type": "GROUP", "jsonSchema": {"type": "object", "properties": {"traits": group}}},
        {"type": "COMMON", "jsonSchema": common},
    ]
    return {"name": PLAN_NAME, "sources": [SOURCE], "rules": rules}


FILTERS_YAML = """\
    filters:
      - name: Debug events
        if: type = "track" and match(event, "Debug *")
        actions: [{type: DROP}]
      - name: Most users
        if: all
        actions: [{type: SAMPLE, percent: 0.9, path: userId}]
      - name: No IP
        if: all
        actions: [{type: DROP_PROPERTIES, fields: {context: [ip], properties: [coupon]}}]
"""


def processing_yaml() -> str:
    """What (b) adds to (a)'s workspace: the webhook's filters (it is the last key of the
    file, so they continue its mapping) and the plan (JSON is YAML)."""
    return FILTERS_YAML + "tracking_plans: " + json.dumps([bench_plan()]) + "\n"


@contextmanager
def processing_workspace() -> Iterator[None]:
    """bench/delivery.py writes its servers' workspace with ``workspace_yaml``; for (b) that
    function also writes the plan and the filters, so its measurement is reused whole."""
    plain = delivery.workspace_yaml

    def with_processing(destination: Hook | None, url: str) -> str:
        if destination is None:
            raise BenchError("the processing workspace needs the webhook for its filters")
        return plain(destination, url) + processing_yaml()

    delivery.workspace_yaml = with_processing
    try:
        yield
    finally:
        delivery.workspace_yaml = plain


# --- a copy of src/ -----------------------------------------------------------------------


def snapshot_source(python: str, directory: Path) -> Path:
    """``src/`` as it is now, copied into ``directory``, and a ``headwater`` command that
    runs the copy on the venv's interpreter (bench/delivery.py's --at does the same from a
    commit; the processing code may not be committed yet)."""
    shutil.copytree(ingest.REPO_DIR / "src", directory / "src",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    command = directory / "headwater"
    command.write_text(
        f'#!/bin/sh\nPYTHONPATH="{directory / "src"}" exec "{python}" -m headwater.cli "$@"\n'
    )
    command.chmod(0o755)
    return command


# --- is (b) what it says? -------------------------------------------------------------


def admin_json(server: Server, path: str) -> Any:
    request = urllib.request.Request(
        server.base_url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with LOCAL_HTTP.open(request, timeout=10) as response:
        return orjson.loads(response.read())


def batch_body(prefix: str) -> bytes:
    """The load's batch body with its own messageId in each event."""
    events = [ingest.track_event(f"{prefix}-{n}", with_type=True) for n in range(100)]
    return orjson.dumps({"batch": events, "sentAt": ingest.TIMESTAMP})


def check_processing(options: delivery.Options, hook: Hook, workdir: Path) -> dict[str, Any]:
    """One (b) server: the load's events pass the plan and the filters keep them; an invalid
    event is counted (the plan is live). Raises BenchError when not."""
    run_dir = Path(tempfile.mkdtemp(prefix="check-", dir=workdir))
    headers = {"Content-Type": "application/json", "Authorization": basic_auth(ingest.WRITE_KEY)}
    with (
        processing_workspace(),
        delivery.receiver(run_dir, options) as sink,
        delivery.headwater(run_dir, options, hook, sink.base_url + "/hook") as server,
    ):
        post(server.base_url + "/v1/batch", batch_body("check"), headers)
        if not delivery.wait_for_delivery(sink, EVENTS_PER_REQUEST, delivery.QUIESCE_S):
            raise BenchError(f"(b): the check's events were not delivered\n{log_tail(server)}")
        report_path = f"/api/v1/destinations/{DESTINATION}/delivery"
        deadline = time.monotonic() + delivery.QUIESCE_S
        while time.monotonic() < deadline:  # the delivery store records outcomes in groups
            report = admin_json(server, report_path)
            if sum(report["counts"].values()) >= EVENTS_PER_REQUEST:
                break
            time.sleep(0.1)
        violations = admin_json(server, f"/api/v1/sources/{SOURCE}/violations")
        trace = admin_json(server, "/api/v1/events/check-0")
        bad = ingest.track_event("check-invalid", with_type=True)
        bad["properties"] = {**bad["properties"], "price": "free"}  # type: ignore[dict-item]
        post(server.base_url + "/v1/batch", orjson.dumps({"batch": [bad]}), headers)
        invalid = admin_json(server, f"/api/v1/sources/{SOURCE}/violations")
    found = {
        "plan": violations["plan"],
        "violations": violations["total"],
        "blocked": violations["blockedKept"],
        "filtered": report["counts"]["filtered"],
        "delivered": report["counts"]["delivered"],
        "plan_stage": [s for s in trace["stages"] if s["stage"] == "tracking plan"],
        "invalid_counted": invalid["total"],
    }
    if (found["plan"], found["violations"], found["blocked"]) != (PLAN_NAME, 0, 0):
        raise BenchError(f"(b): the load's events do not pass the plan cleanly: {found}")
    if found["filtered"] or found["delivered"] != EVENTS_PER_REQUEST or found["plan_stage"]:
        raise BenchError(f"(b): the filters should keep every event unchanged by the plan: {found}")
    if found["invalid_counted"] != 1:
        raise BenchError(f"(b): an invalid event was not counted; is the plan live? {found}")
    return found


# --- the rounds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One round: (a) and (b) measured back to back."""

    plain: Throughput
    processing: Throughput
    order: str  # which ran first: "ab" or "ba"

    @property
    def ratio(self) -> float:
        plain = self.plain.sustained_events_per_s
        return self.processing.sustained_events_per_s / plain if plain else 0.0


def measure(
    processing: bool, hook: Hook, spec: Any, options: delivery.Options, workdir: Path
) -> Throughput:
    label = "processing" if processing else "plain"
    hook = replace(hook, label=f"{hook.label}-{label}")
    with processing_workspace() if processing else nullcontext():
        try:
            return delivery.measure_throughput(hook, spec, options, workdir)
        except BenchError as exc:  # a hiccup of the VM: once more on fresh servers
            progress(f"{label} failed, so run once more: {str(exc).splitlines()[0]}")
            return delivery.measure_throughput(hook, spec, options, workdir)


def run_rounds(
    options: delivery.Options, hook: Hook, spec: Any, workdir: Path, rounds: int
) -> list[Pair]:
    pairs = []
    for number in range(1, rounds + 1):
        order = "ab" if number % 2 else "ba"  # alternate, so a drift of the VM cancels out
        results: dict[str, Throughput] = {}
        for step in order:
            what = "(a) plain" if step == "a" else "(b) plan + filters"
            progress(f"round {number}/{rounds}: {what}, {hook.label} webhook …")
            results[step] = measure(step == "b", hook, spec, options, workdir)
            rate = results[step].sustained_events_per_s
            progress(f"  delivered {rate:,.0f} events/s")
        pairs.append(Pair(results["a"], results["b"], order))
    return pairs


# --- report ------------------------------------------------------------------------------


def format_report(
    pairs: Sequence[Pair], machine: Machine, options: delivery.Options, hook: Hook,
    check: dict[str, Any], source: str,
) -> str:  # fmt: skip
    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    def column(attr: str, pick: str) -> list[float]:
        return [float(getattr(getattr(p, pick), attr)) for p in pairs]

    ratio = median([p.ratio for p in pairs])
    rows = []
    names = {"plain": "(a) no plan, no filters", "processing": "(b) 20-rule plan + 3 filters"}
    for pick, name in names.items():
        sustained = median(column("sustained_events_per_s", pick))
        rows.append((
            name,
            f"{sustained:,.0f}",
            f"{median(column('loaded_events_per_s', pick)):,.0f}",
            f"{median(column('headwater_cpu_pct', pick)):.0f}%",
            f"{median(column('loop_cpu_pct', pick)):.0f}%",
            f"{median(column('other_cpu_pct', pick)):.0f}%",
        ))  # fmt: skip
    table = render_table(
        ("workspace", "delivered events/s", "under full ingest", "Headwater CPU",
         "event loop", "other CPU"),
        rows,
    )  # fmt: skip
    host = f"{machine.cpus} CPUs ({machine.cpu_model}), Linux {machine.kernel}"
    host += f", Python {machine.python}"
    disk = f"fsync p50 {machine.fsync.p50_ms:.2f} ms, p99 {machine.fsync.p99_ms:.2f} ms"
    lines = [
        "",
        "Headwater processing: delivery with a tracking plan and filters vs without",
        f"load:    {machine.loadgen}; POST /v1/batch × {EVENTS_PER_REQUEST}, paced to what"
        f" delivery sustains; {hook.label} webhook ({hook.batch_events} events a request,"
        f" concurrency {hook.concurrency}); measured windows {options.duration_s} s;"
        f" median of {len(pairs)} round(s)",
        f"machine: {host}; {disk}",
        f"source:  {source}",
        f"check:   (b) the load's events pass the plan ({check['violations']} violations,"
        f" {check['blocked']} blocked) and the filters keep them ({check['filtered']} filtered"
        f" of {check['delivered'] + check['filtered']}); an invalid event was counted",
        "",
        table,
        "",
        "rounds: delivered events/s of (a) and (b) [offered; other CPU], ratio. '*': the"
        " backlog ran dry (a lower bound); '~': delivered more than"
        f" {CONVERGED_GAP:.0%} off offered (not converged); other CPU above"
        f" {BUSY_MACHINE_PCT:g}%: a neighbour was busy",
    ]
    for n, p in enumerate(pairs, start=1):
        cells = [
            f"{t.sustained_events_per_s:,.0f}{mark(t)} [{t.offered_events_per_s:,.0f};"
            f" {t.other_cpu_pct:.0f}%]"
            for t in (p.plain, p.processing)
        ]
        lines.append(f"  {n} ({p.order}): {cells[0]}  {cells[1]}  {p.ratio:.2f}")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    lines += [
        "",
        f"ratio (b) / (a), median of the rounds: {ratio:.2f}",
        f"target: (b) ≥ {TARGET_RATIO:.2f} × (a)   {verdict}",
    ]
    return "\n".join(lines)


def mark(t: Throughput) -> str:
    """The caveats of one measured window (see the report's legend)."""
    offered = t.offered_events_per_s
    gap = abs(t.sustained_events_per_s - offered) / offered if offered else 0.0
    return ("" if t.backlog_kept else "*") + ("~" if gap > CONVERGED_GAP else "")


def write_json(
    path: Path, pairs: Sequence[Pair], machine: Machine, check: dict[str, Any], source: str
) -> None:
    doc = {
        "benchmark": "processing",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": asdict(machine),
        "source": source,
        "check": check,
        "target_ratio": TARGET_RATIO,
        "median_ratio": statistics.median([p.ratio for p in pairs]),
        "rounds": [
            {
                "order": p.order,
                "ratio": p.ratio,
                "plain": asdict(p.plain),
                "processing": asdict(p.processing),
            }
            for p in pairs
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def run_fql(snapshot_src: Path, seconds: float, rounds: int) -> None:
    """bench/fql.py's figures, on the same copy of src/ as the servers."""
    if importlib.util.find_spec("fql") is None:
        print("\n(bench/fql.py is not there: no FQL figures)")
        return
    sys.path.insert(0, str(snapshot_src))  # before fql imports headwater
    fql = importlib.import_module("fql")
    fql.main(["--seconds", str(seconds), "--rounds", str(rounds)])


# --- command line -----------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, delivery.Options]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--rounds", type=int, default=3, help="pairs of (a), (b) runs; the median ratio counts")
    add("--quick", action="store_true", help="short windows (bench/delivery.py's --quick)")
    add("--duration", type=int, help="measured seconds of each run (default 10; quick 3)")
    add("--hook", choices=["batching", "per-event"], default="batching")
    add("--fql-seconds", type=float, default=0.5, help="bench/fql.py's --seconds; 0 skips it")
    add("--fql-rounds", type=int, default=3)
    add("--json", type=Path, help="also write the results to this JSON file")
    add("--data-root", type=Path, help="parent of the fresh data dirs (default: system temp)")
    add("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args(argv)
    passed = ["--figure", "batching", "--loadgen", args.loadgen]
    passed += ["--quick"] if args.quick else []
    passed += ["--duration", str(args.duration)] if args.duration else []
    passed += ["--data-root", str(args.data_root)] if args.data_root else []
    return args, delivery.parse_options(passed)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    hook = options.batching if args.hook == "batching" else options.per_event
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    try:
        ingest.check_prerequisites(options.ingest_options())
        with tempfile.TemporaryDirectory(
            prefix="headwater-processing-", dir=options.data_root
        ) as tmp:
            workdir = Path(tmp)
            commit = delivery.git("rev-parse", "--short", "HEAD") or "?"
            changed = delivery.git("status", "--porcelain", "--", "src").splitlines()
            source = f"working tree at commit {commit} ({len(changed)} files of src/ changed),"
            source += " copied at the start"
            options = replace(
                options, headwater=snapshot_source(options.python, workdir / "source")
            )
            machine = Machine.describe(measure_fsync(workdir), ingest.loadgen_name(options.use_wrk))
            spec = delivery.write_bodies(workdir, options).batch
            progress("checking (b): the plan passes the load's events, the filters keep them …")
            check = check_processing(options, hook, workdir)
            pairs = run_rounds(options, hook, spec, workdir, args.rounds)
            print(format_report(pairs, machine, options, hook, check, source))
            if args.json:
                write_json(args.json, pairs, machine, check, source)
                print(f"\nwrote {args.json}")
            if args.fql_seconds > 0:
                run_fql(workdir / "source" / "src", args.fql_seconds, args.fql_rounds)
    except BenchError as exc:
        print(f"bench/processing.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/processing.py: interrupted; servers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
