"""The public status page: components, current incidents, 90-day uptime bars.

Server-rendered HTML (Jinja2) with its CSS inline and the bars as inline SVG: no script, no
external asset, so it renders wherever it is opened and leaks nothing to third parties.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2

from headwater.status.model import Status
from headwater.status.store import DAY_MS

UPTIME_DAYS = 90
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("headwater.status", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


@dataclass(frozen=True, slots=True)
class Bar:
    day: str  # YYYY-MM-DD
    uptime: float | None  # share of the recorded time operational (or in maintenance)
    colour: str
    title: str


def _colour(uptime: float | None) -> str:
    if uptime is None:
        return "#d0d4d9"
    if uptime >= 0.9999:
        return "#2fb36d"
    if uptime >= 0.99:
        return "#e6b800"
    if uptime >= 0.95:
        return "#f08c00"
    return "#d9412b"


def bars(uptime: dict[int, dict[str, float]], today: int) -> tuple[list[Bar], float | None]:
    """One bar per day of the last 90, oldest first, and the uptime over them."""
    out: list[Bar] = []
    up_total = recorded_total = 0.0
    good = (Status.OPERATIONAL.value, Status.MAINTENANCE.value)
    for day in range(today - UPTIME_DAYS + 1, today + 1):
        seconds = uptime.get(day, {})
        recorded = sum(seconds.values())
        up = sum(v for k, v in seconds.items() if k in good)
        share = up / recorded if recorded else None
        up_total += up
        recorded_total += recorded
        label = datetime.fromtimestamp(day * DAY_MS / 1000, UTC).strftime("%Y-%m-%d")
        title = f"{label}: no data" if share is None else f"{label}: {share:.2%} up"
        out.append(Bar(label, share, _colour(share), title))
    return out, (up_total / recorded_total if recorded_total else None)


def render(summary: dict[str, Any], uptime: dict[str, tuple[list[Bar], float | None]]) -> str:
    return _ENV.get_template("status.html").render(
        summary=summary, uptime=uptime, days=UPTIME_DAYS,
        style={"operational": "ok", "degraded_performance": "minor",
               "partial_outage": "major", "major_outage": "critical",
               "under_maintenance": "maintenance"},
    )  # fmt: skip
