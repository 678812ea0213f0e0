"""Results of bench/ingest.py: the rows, the issue's targets, the table and the JSON file.

``Machine`` and ``render_table`` also serve bench/delivery.py.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import orjson

from fsync_probe import FsyncStats

# Targets from the issue (2-core machine, fsync durability, 32 connections).
SINGLE_RATIO_MIN = 0.7
BATCH_EVENTS_PER_S_MIN = 60_000
P99_MS_MAX = 25.0
RSS_MB_MAX = 200.0
OPEN_LOOP_EVENTS_PER_S = 60_000  # the rate at which the open-loop batch p99 is checked
OPEN_LOOP_RATE_MIN = 0.98  # achieved / asked rate below which the open-loop run fails
LOADGEN_BUSY_PCT = 80.0  # open-loop generator CPU (of one core) above which it may be the limit

FLOOR = "floor"
BUSY_MACHINE_PCT = 10.0  # other processes' CPU, in % of one core, above which results are suspect


@dataclass(frozen=True)
class Row:
    """One server under one scenario. Rates count only 2xx answers."""

    server: str  # "floor", "headwater" or "floor-copy" (harness self-test)
    scenario: str  # "single" or "batch"
    req_per_s: float
    events_per_s: float
    ratio_to_floor: float  # events/s over the floor's events/s in the same scenario
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float  # VmHWM of the server process (and any children)
    errors: int  # non-2xx answers + socket errors + timeouts
    error_detail: dict[str, int]
    server_cpu_pct: float  # of one core, during the measured run
    loadgen_cpu_pct: float  # of one core: near 100% per wrk thread means wrk was the limit
    other_cpu_pct: float  # everything else on the machine (incl. VM steal): should be near 0
    p90_ms: float = 0.0
    max_ms: float = 0.0
    # "closed": wrk's closed loop, as fast as answers come back; "open": a fixed request
    # rate (loadgen.py --rate), latency timed from each request's scheduled send time.
    loop: str = "closed"
    target_events_per_s: float = 0.0  # open loop: the rate asked for
    late_starts: int = 0  # open loop: requests sent > 1 ms behind schedule
    late_max_ms: float = 0.0

    @property
    def label(self) -> str:
        if self.loop == "open":
            return f"{self.server} {self.scenario} @{self.target_events_per_s / 1000:g}k/s"
        return f"{self.server} {self.scenario}"


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    kernel: str
    python: str
    loadgen: str
    fsync: FsyncStats

    @classmethod
    def describe(cls, fsync: FsyncStats, loadgen: str) -> Machine:
        return cls(
            cpus=os.cpu_count() or 0,
            cpu_model=_cpu_model(),
            kernel=platform.release(),
            python=platform.python_version(),
            loadgen=loadgen,
            fsync=fsync,
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def with_ratio(row: Row, floor: Row) -> Row:
    ratio = row.events_per_s / floor.events_per_s if floor.events_per_s else 0.0
    return replace(row, ratio_to_floor=ratio)


def evaluate_targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's targets, checked on the non-floor rows."""
    measured = {r.scenario: r for r in rows if r.server != FLOOR and r.loop == "closed"}
    open_loop = [r for r in rows if r.server != FLOOR and r.loop == "open"]
    targets: list[Target] = []
    if single := measured.get("single"):
        name = f"single /v1/track ≥ {SINGLE_RATIO_MIN}× floor"
        detail = f"{single.ratio_to_floor:.2f}× ({single.events_per_s:,.0f} events/s)"
        targets.append(Target(name, single.ratio_to_floor >= SINGLE_RATIO_MIN, detail))
    if batch := measured.get("batch"):
        name = f"/v1/batch ≥ {BATCH_EVENTS_PER_S_MIN:,} events/s"
        detail = f"{batch.events_per_s:,.0f} events/s ({batch.ratio_to_floor:.2f}× floor)"
        targets.append(Target(name, batch.events_per_s >= BATCH_EVENTS_PER_S_MIN, detail))
    for row in measured.values():
        name = f"p99 ≤ {P99_MS_MAX:g} ms, {row.scenario} (closed loop)"
        targets.append(Target(name, row.p99_ms <= P99_MS_MAX, f"{row.p99_ms:.1f} ms"))
    for row in open_loop:
        name = f"p99 ≤ {P99_MS_MAX:g} ms for /v1/batch at {row.target_events_per_s:,.0f} events/s"
        kept_up = row.events_per_s >= OPEN_LOOP_RATE_MIN * row.target_events_per_s
        passed = row.p99_ms <= P99_MS_MAX and kept_up and row.errors == 0
        detail = f"p99 {row.p99_ms:.1f} ms, p50 {row.p50_ms:.1f} ms"
        detail += f", {row.events_per_s:,.0f} events/s achieved, {row.errors:,} errors"
        targets.append(Target(name + " (open loop)", passed, detail))
    if measured or open_loop:
        peak = max(r.peak_rss_mb for r in [*measured.values(), *open_loop])
        name = f"peak RSS ≤ {RSS_MB_MAX:g} MB"
        targets.append(Target(name, peak <= RSS_MB_MAX, f"{peak:.0f} MB"))
    return targets


COLUMNS: tuple[str, ...] = ("run", "req/s", "events/s", "ratio", "p50 ms", "p99 ms", "RSS MB")
COLUMNS += ("errors", "srv CPU", "load CPU", "other CPU")


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.label,
        f"{row.req_per_s:,.0f}",
        f"{row.events_per_s:,.0f}",
        f"{row.ratio_to_floor:.2f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        f"{row.peak_rss_mb:.0f}",
        f"{row.errors:,}",
        f"{row.server_cpu_pct:.0f}%",
        f"{row.loadgen_cpu_pct:.0f}%",
        f"{row.other_cpu_pct:.0f}%",
    )


def format_table(rows: Sequence[Row]) -> str:
    return render_table(COLUMNS, [_cells(r) for r in rows])


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others (numbers) right-aligned."""
    lines = [header, *rows]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]

    def render(cells: Sequence[str]) -> str:
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([cells[0].ljust(widths[0]), *rest])

    return "\n".join(render(line) for line in lines)


def format_report(
    settings: dict[str, object], machine: Machine, rows: Sequence[Row], targets: Sequence[Target]
) -> str:
    ids = "unique per event" if settings["message_ids"] else "none (server assigns)"
    load = (
        f"{machine.loadgen}, {settings['threads']} thread(s), {settings['connections']} connections"
        f", {settings['duration_s']:g} s per run after {settings['warmup_s']:g} s warm-up"
    )
    if settings["rounds"] != 1:
        load += f", median of {settings['rounds']} rounds"
    host = (
        f"{machine.cpus} CPUs ({machine.cpu_model}), Linux {machine.kernel}"
        f", Python {machine.python}"
    )
    disk = f"fsync p50 {machine.fsync.p50_ms:.2f} ms, p99 {machine.fsync.p99_ms:.2f} ms"
    lines = ["", "Headwater ingestion vs floor", f"load:    {load}; messageIds {ids}"]
    lines += [f"machine: {host}; {disk}", "", format_table(rows)]
    lines += [
        f"  ! {r.label}: {r.error_detail} (rates count only 2xx answers)" for r in rows if r.errors
    ]
    lines += [
        f"  ! {r.label}: other processes used {r.other_cpu_pct:.0f}% of a core;"
        " the machine was not quiet"
        for r in rows
        if r.other_cpu_pct > BUSY_MACHINE_PCT
    ]
    open_rows = [r for r in rows if r.loop == "open"]
    if open_rows:
        lines += [
            "",
            f"open loop: {settings['open_loop_events_per_s']:,} events/s of /v1/batch at a fixed"
            f" rate (bench/loadgen.py --rate), a pool of {settings['connections']} connections,"
            " latency from each request's scheduled send time",
        ]
    lines += [_open_loop_note(r) for r in open_rows]
    lines += ["", "targets (issue: 2-core machine, fsync durability, 32 connections):"]
    lines += [f"  {'PASS' if t.passed else 'FAIL'}  {t.name}: {t.detail}" for t in targets]
    return "\n".join(lines)


def _open_loop_note(row: Row) -> str:
    note = (
        f"  {row.label}: p90 {row.p90_ms:.2f} ms, max {row.max_ms:.1f} ms;"
        f" {row.late_starts:,} requests sent > 1 ms behind schedule"
        f" (max {row.late_max_ms:.1f} ms); generator CPU {row.loadgen_cpu_pct:.0f}%"
    )
    if row.loadgen_cpu_pct > LOADGEN_BUSY_PCT:
        note += " ! the generator may have been the limit"
    return note


def write_json(
    path: Path,
    settings: dict[str, object],
    machine: Machine,
    rows: Sequence[Row],
    targets: Sequence[Target],
) -> None:
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": asdict(machine),
        "settings": settings,
        "rows": [asdict(r) for r in rows],
        "targets": [asdict(t) for t in targets],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
