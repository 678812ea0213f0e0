"""Results of bench/delivery.py: what each step measured, the figures, the table, the JSON.

Each figure is checked against the Connections issue's target and set beside its floor,
measured in the same run (bench/delivery.py says which floor and why).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from report import BUSY_MACHINE_PCT, Machine, Row, render_table

# Targets of the Connections issue (2-core machine).
BATCHING_EVENTS_PER_S_MIN = 20_000
PER_EVENT_EVENTS_PER_S_MIN = 5_000
LATENCY_EVENTS_PER_S = 1_000
LATENCY_P50_MS_MAX = 50.0
LATENCY_P99_MS_MAX = 500.0
DEAD_EVENTS = 1_000_000
DEAD_RSS_MB_MAX = 250.0
CONVERGED_GAP = 0.10  # a paced window whose delivered rate is this far from offered is flagged


@dataclass(frozen=True)
class Hook:
    """A webhook destination as one step configures it."""

    label: str
    batch_events: int
    concurrency: int


@dataclass(frozen=True)
class Throughput:
    """One webhook under load: what reached the receiver, and what limited it."""

    hook: Hook
    sustained_events_per_s: float  # delivered in the measured paced window
    offered_events_per_s: float  # the open-loop rate of that window
    accepted_events_per_s: float  # 2xx'd by Headwater in that window
    min_backlog: int  # accepted - delivered, lowest during that window
    backlog_kept: bool  # never below one second of delivery: delivery was the bottleneck
    loaded_events_per_s: float  # delivered under wrk's closed loop (full ingest)
    loaded_accepted_events_per_s: float
    drain_events_per_s: float  # delivered after the load stopped (delivery alone)
    events_per_request: float  # at the receiver, measured window
    headwater_cpu_pct: float  # of one core, measured window (its writer process included)
    loop_cpu_pct: float  # of which its main thread, the event loop (Python, under the GIL)
    receiver_cpu_pct: float
    loadgen_cpu_pct: float
    other_cpu_pct: float
    windows: list[tuple[float, float]]  # (offered, delivered) of every paced window
    load_errors: int
    trace: list[tuple[float, int, int]] = field(default_factory=list)  # (s, accepted, delivered)


@dataclass(frozen=True)
class Latency:
    hook: Hook
    sent_p50_ms: float  # from the load generator's due time
    sent_p99_ms: float
    received_p50_ms: float  # from the event's receivedAt
    received_p99_ms: float
    sent_max_ms: float
    events: int  # with a latency recorded, measured run
    expected_events: int  # accepted in the measured run
    ack_p50_ms: float  # Headwater's answer to the load generator, same run
    ack_p99_ms: float
    achieved_events_per_s: float


@dataclass(frozen=True)
class Memory:
    label: str
    peak_rss_mb: float  # VmHWM, summed over the server and its writer process
    sampled_max_mb: float  # the highest summed VmRSS seen
    trajectory_mb: list[float]  # VmRSS at 25/50/75/100% of the push and after the settle
    accepted: int
    push_events_per_s: float
    push_headwater_cpu_pct: float  # of one core, while pushing
    delivered_ledger: int | None = None  # dead destination: from the delivery store
    backlog: int | None = None  # log after the cursor + events waiting for a retry
    retry_events: int | None = None
    cursor: int | None = None
    received: int | None = None  # events at any receiver: none listens, so 0 by construction
    marker_state: str | None = None  # GET /api/v1/events/{id}, when the server has it


@dataclass(frozen=True)
class Figure:
    """One line of the table."""

    name: str
    value: float
    unit: str
    target: str
    passed: bool | None  # None: no target (a floor)
    floor_name: str = ""
    floor_value: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if not self.floor_value:
            return None
        return self.value / self.floor_value


@dataclass
class Round:
    ingest_only: Row | None = None
    ingest_ack: Row | None = None  # open loop at the latency rate, no destination
    throughput: dict[str, Throughput] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)  # steps that failed once, and why


def figures_of(round_: Round, settings: dict[str, Any]) -> list[Figure]:
    out: list[Figure] = []
    floor = round_.ingest_only
    if floor is not None:
        notes = [
            f"p50 {floor.p50_ms:.0f} ms, p99 {floor.p99_ms:.0f} ms (closed loop,"
            f" {settings['connections']} connections); Headwater CPU {floor.server_cpu_pct:.0f}%,"
            f" wrk {floor.loadgen_cpu_pct:.0f}%, other {floor.other_cpu_pct:.0f}%"
        ]
        out.append(
            Figure(
                "ingest only: /v1/batch ×100, no destination",
                floor.events_per_s,
                "events/s",
                "(floor)",
                None,
                notes=notes,
            )
        )
    targets = {"batching": BATCHING_EVENTS_PER_S_MIN, "per-event": PER_EVENT_EVENTS_PER_S_MIN}
    for name, result in round_.throughput.items():
        hook = result.hook
        title = f"{name} webhook ({hook.batch_events}/request, concurrency {hook.concurrency})"
        out.append(
            Figure(
                title,
                result.sustained_events_per_s,
                "events/s",
                f"≥ {targets[name]:,}",
                result.sustained_events_per_s >= targets[name],
                "ingest only",
                floor.events_per_s if floor else None,
                throughput_notes(result),
            )
        )
    ack = round_.ingest_ack
    for label, result in round_.latency.items():
        complete = result.events >= result.expected_events
        note = latency_notes(result)
        for pct, value, limit, ack_value in (
            ("p50", result.sent_p50_ms, LATENCY_P50_MS_MAX, ack.p50_ms if ack else None),
            ("p99", result.sent_p99_ms, LATENCY_P99_MS_MAX, ack.p99_ms if ack else None),
        ):
            out.append(
                Figure(
                    f"latency {pct} @{settings['latency_events_per_s']:,}/s, {label} webhook",
                    value,
                    "ms",
                    f"≤ {limit:g} ms",
                    value <= limit and complete,
                    f"ingest ack {pct}",
                    ack_value,
                    note if pct == "p50" else [],
                )
            )
    dead, none = round_.memory.get("dead-destination"), round_.memory.get("no-destination")
    if dead is not None:
        out.append(
            Figure(
                f"dead webhook, {settings['dead_events']:,} events pushed: peak RSS",
                dead.peak_rss_mb,
                "MB",
                f"≤ {DEAD_RSS_MB_MAX:g} MB",
                dead.peak_rss_mb <= DEAD_RSS_MB_MAX,
                "no destination",
                none.peak_rss_mb if none else None,
                memory_notes(dead, none),
            )
        )
        kept = (
            dead.backlog is not None and dead.backlog >= dead.accepted and not dead.delivered_ledger
        )
        out.append(
            Figure(
                "dead webhook: events in the backlog (not delivered)",
                float(dead.backlog or 0),
                "events",
                "= accepted",
                kept,
                "accepted",
                float(dead.accepted),
                backlog_notes(dead),
            )
        )
    return out


def throughput_notes(t: Throughput) -> list[str]:
    windows = ", ".join(f"{o / 1000:.1f}k→{d / 1000:.1f}k" for o, d in t.windows)
    notes = [
        f"offered {t.offered_events_per_s:,.0f}/s open loop,"
        f" accepted {t.accepted_events_per_s:,.0f}/s; "
        f"backlog ≥ {t.min_backlog:,} events throughout"
        + (
            "" if t.backlog_kept else " ! it ran low: delivery kept up, the figure is a lower bound"
        ),
        f"CPU (of one core): Headwater {t.headwater_cpu_pct:.0f}%"
        f" (event-loop thread {t.loop_cpu_pct:.0f}%),"
        f" receiver {t.receiver_cpu_pct:.0f}%, "
        f"load generator {t.loadgen_cpu_pct:.0f}%, other {t.other_cpu_pct:.0f}%; "
        f"{t.events_per_request:,.1f} events/request at the receiver",
        f"under full ingest (closed loop): {t.loaded_events_per_s:,.0f}/s delivered while "
        f"{t.loaded_accepted_events_per_s:,.0f}/s accepted; delivery alone (drain):"
        f" {t.drain_events_per_s:,.0f}/s",
        f"paced windows (offered→delivered): {windows}",
    ]
    gap = abs(t.sustained_events_per_s - t.offered_events_per_s) / t.offered_events_per_s
    if gap > CONVERGED_GAP:
        notes.append(
            f"! delivered and offered differ by {gap:.0%} in the measured window: not yet the"
            " rate where they meet (more --rounds, or a quieter machine)"
        )
    if t.other_cpu_pct > BUSY_MACHINE_PCT:
        notes.append(
            f"! other processes used {t.other_cpu_pct:.0f}% of a core: the machine was not quiet"
        )
    if t.load_errors:
        notes.append(f"! {t.load_errors:,} load errors (non-2xx or socket)")
    return notes


def latency_notes(r: Latency) -> list[str]:
    notes = [
        f"from receivedAt: p50 {r.received_p50_ms:.1f} ms, p99 {r.received_p99_ms:.1f} ms; "
        f"from the send: max {r.sent_max_ms:.0f} ms; Headwater's own ack"
        f" p50 {r.ack_p50_ms:.1f} ms, "
        f"p99 {r.ack_p99_ms:.1f} ms",
        f"{r.events:,} of {r.expected_events:,} events delivered;"
        f" {r.achieved_events_per_s:,.0f}/s accepted",
    ]
    if r.events < r.expected_events:
        notes.append(
            "! not every event was delivered within the wait: the latencies miss the slowest"
        )
    return notes


def memory_notes(dead: Memory, none: Memory | None) -> list[str]:
    def path(m: Memory) -> str:
        return " → ".join(f"{v:.0f}" for v in m.trajectory_mb)

    notes = [
        f"RSS (MB) at 25/50/75/100% of the push and after the settle: {path(dead)}; "
        f"highest sampled {dead.sampled_max_mb:.0f} MB;"
        f" pushed at {dead.push_events_per_s:,.0f} events/s"
        f" (Headwater CPU {dead.push_headwater_cpu_pct:.0f}%)"
    ]
    if none is not None:
        notes.append(
            f"no destination: peak {none.peak_rss_mb:.0f} MB, {path(none)}; "
            f"pushed at {none.push_events_per_s:,.0f} events/s"
            f" (Headwater CPU {none.push_headwater_cpu_pct:.0f}%)"
        )
    return notes


def backlog_notes(dead: Memory) -> list[str]:
    return [
        f"delivery store: cursor at offset {dead.cursor:,}, {dead.retry_events:,} events waiting "
        f"for a retry, {dead.delivered_ledger:,} delivered; nothing listens on the port, so no "
        f"receiver got any; the marker event's state: {dead.marker_state or '(no events API)'}"
    ]


def median_figures(rounds: Sequence[list[Figure]]) -> list[Figure]:
    """Per figure, the round with the median value (the lower middle one for an even count)."""
    out = []
    for index, figure in enumerate(rounds[0]):
        runs = sorted((r[index] for r in rounds if len(r) > index), key=lambda f: f.value)
        chosen = runs[(len(runs) - 1) // 2]
        if len(runs) > 1:
            spread = f"rounds: {', '.join(f'{f.value:,.1f}' for f in runs)} (median kept)"
            chosen = replace(chosen, notes=[*chosen.notes, spread])
        out.append(replace(chosen, name=figure.name))
    return out


# --- report -------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:,.0f}" + ("/s" if unit == "events/s" else "")


def format_report(
    settings: dict[str, Any],
    machine: Machine,
    figures: Sequence[Figure],
    retried: Sequence[str] = (),
) -> str:
    rows = []
    for f in figures:
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "—"
        floor = f"{f.floor_name} {fmt(f.floor_value, f.unit)}" if f.floor_name else "—"
        verdict = "" if f.passed is None else ("PASS" if f.passed else "FAIL")
        rows.append((f.name, fmt(f.value, f.unit), f.target, floor, ratio, verdict))
    table = render_table(("figure", "result", "target", "floor (same run)", "ratio", ""), rows)
    host = f"{machine.cpus} CPUs ({machine.cpu_model}), Linux {machine.kernel}"
    host += f", Python {machine.python}"
    disk = f"fsync p50 {machine.fsync.p50_ms:.2f} ms, p99 {machine.fsync.p99_ms:.2f} ms"
    load = (
        f"{machine.loadgen}, {settings['threads']} thread(s), {settings['connections']}"
        f" connections; measured windows {settings['duration_s']} s after"
        f" {settings['warmup_s']} s warm-up"
    )
    if settings["rounds"] > 1:
        load += (
            f"; each figure the median of {settings['rounds']} rounds, beside that round's floor"
        )
    lines = ["", "Headwater delivery: end to end to a local webhook receiver", f"load:    {load}"]
    lines += [f"machine: {host}; {disk}"]
    source = settings["source"]
    changed = (
        f", {len(source['changed_src'])} files of src/ changed" if source["changed_src"] else ""
    )
    lines += [f"source:  commit {source['commit']}{changed}"]
    if settings["profiled"]:
        lines += [
            "! py-spy sampled Headwater in the measured throughput windows:"
            " rates are lower than without"
        ]
    lines += ["", table, ""]
    for f in figures:
        if f.notes:
            lines.append(f"{f.name}:")
            lines += [f"    {n}" for n in f.notes]
    lines += [f"! run once more after a failure: {reason}" for reason in retried]
    return "\n".join(lines)


def write_json(
    path: Path,
    settings: dict[str, Any],
    machine: Machine,
    figures: Sequence[Figure],
    rounds: Sequence[Round],
) -> None:
    def plain(value: Any) -> Any:
        return asdict(value) if value is not None else None

    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": asdict(machine),
        "settings": settings,
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
        "rounds": [
            {
                "ingest_only": plain(r.ingest_only),
                "ingest_ack": plain(r.ingest_ack),
                "throughput": {k: asdict(v) for k, v in r.throughput.items()},
                "latency": {k: asdict(v) for k, v in r.latency.items()},
                "memory": {k: asdict(v) for k, v in r.memory.items()},
                "retried": r.retried,
            }
            for r in rounds
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
