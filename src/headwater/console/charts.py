"""Charts as server-rendered SVG: the geometry is computed here, the markup is a template.

Event Delivery's chart stacks, per time bucket of the report's ``series``, the events
delivered (bottom), retried (middle) and failed for good (top), on a y axis with round
ticks and a time axis in UTC. Every column carries a ``<title>`` (a tooltip and what a
screen reader reads), and the whole chart a title and a description with the totals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

KINDS = ("delivered", "retried", "failed")
COLOURS = {"delivered": "#2f8f5b", "retried": "#d89b00", "failed": "#c8382b"}
WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 36  # margins: room for the axis labels
X_LABELS = 6


@dataclass(frozen=True, slots=True)
class Bar:
    kind: str
    x: float
    y: float
    width: float
    height: float
    colour: str


@dataclass(frozen=True, slots=True)
class Column:
    at_ms: int
    title: str
    bars: list[Bar]


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # y for the value axis, x for the time axis
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    right: int  # x of the plot's right edge
    bottom: int  # y of the plot's bottom edge (the x axis)
    columns: list[Column]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    title: str
    description: str
    totals: dict[str, int]
    bucket_label: str


def nice_max(value: int) -> tuple[int, int]:
    """The axis top and its step: 1, 2 or 5 × 10ⁿ, in at most 4 steps covering ``value``."""
    if value <= 0:
        return 4, 1
    raw = value / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for factor in (1, 2, 5):
        step = max(1, int(factor * magnitude))
        if step * 4 >= value:
            return step * math.ceil(value / step), step
    step = 10 * magnitude
    return step * math.ceil(value / step), step


def bucket_text(bucket_ms: int) -> str:
    minutes = bucket_ms // 60_000
    if minutes < 60:
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    hours = minutes // 60
    if hours < 24:
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{hours // 24} day" + ("s" if hours // 24 != 1 else "")


def _time_label(at_ms: int, span_ms: int) -> str:
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.strftime("%H:%M" if span_ms <= 86_400_000 else "%m-%d %H:%M")


def delivery_chart(series: Sequence[dict[str, Any]], window_label: str) -> Chart:
    """The chart of a delivery report's ``series`` (``atMs``, delivered, failed, retried)."""
    points = sorted(series, key=lambda p: int(p["atMs"]))
    bucket_ms = int(points[1]["atMs"]) - int(points[0]["atMs"]) if len(points) > 1 else 60_000
    totals = {k: sum(int(p.get(k, 0)) for p in points) for k in KINDS}
    peak = max((sum(int(p.get(k, 0)) for k in KINDS) for p in points), default=0)
    top_value, step = nice_max(peak)
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    plot_w, plot_h = right - LEFT, bottom - TOP
    slot = plot_w / max(1, len(points))
    bar_w = max(1.0, slot * 0.8)
    span = bucket_ms * max(1, len(points))

    columns = []
    for i, point in enumerate(points):
        x = LEFT + i * slot + (slot - bar_w) / 2
        base = float(bottom)
        bars = []
        for kind in KINDS:
            count = int(point.get(kind, 0))
            if not count:
                continue
            height = count / top_value * plot_h
            base -= height
            bars.append(Bar(kind, round(x, 2), round(base, 2), round(bar_w, 2),
                            round(height, 2), COLOURS[kind]))  # fmt: skip
        if bars:
            at = int(point["atMs"])
            counts = ", ".join(f"{int(point.get(k, 0)):,} {k}" for k in KINDS)
            title = f"{_time_label(at, span)} UTC ({bucket_text(bucket_ms)}): {counts}"
            columns.append(Column(at, title, bars))

    y_ticks = [
        Tick(round(bottom - v / top_value * plot_h, 2), f"{v:,}")
        for v in range(0, top_value + 1, step)
    ]
    x_ticks = []
    if points:
        every = max(1, math.ceil(len(points) / X_LABELS))
        for i in range(0, len(points), every):
            x = LEFT + i * slot + slot / 2
            x_ticks.append(Tick(round(x, 2), _time_label(int(points[i]["atMs"]), span)))

    per = bucket_text(bucket_ms)
    title = f"Events delivered, retried and failed per {per}, last {window_label}"
    if any(totals.values()):
        description = (
            f"In all: {totals['delivered']:,} delivered, {totals['retried']:,} retried, "
            f"{totals['failed']:,} failed; at most {peak:,} in one {bucket_text(bucket_ms)}."
        )
    else:
        description = "No delivery attempts in this window."
    return Chart(
        WIDTH, HEIGHT, LEFT, TOP, right, bottom, columns, y_ticks, x_ticks, title,
        description, totals, bucket_text(bucket_ms),
    )  # fmt: skip
