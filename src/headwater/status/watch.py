"""Watching the services Headwater depends on: other Statuspage pages and plain endpoints.

A ``statuspage`` target is any page serving Statuspage's ``/api/v2/summary.json`` (a
destination vendor's, Segment's own, or another Headwater); each of its components becomes a
watched component ``watch:<target>:<component id>`` with the status the page gives it. An
``http`` target is up when a GET answers 2xx within the timeout. A target that cannot be
read is one watched component in ``major_outage`` with the reason.

Watched components feed the same alert rules as Headwater's own (rules match them by id,
e.g. ``watch:*``, or name); they are not Headwater components, so they never appear on
Headwater's own status page or change its indicator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from headwater.config.workspace import WatchTarget
from headwater.status.alerts import Dispatcher, Outgoing
from headwater.status.model import Component, ComponentState, Status

SUMMARY_PATH = "/api/v2/summary.json"
USER_AGENT = "Headwater-watch"


def summary_url(url: str) -> str:
    """The summary.json of a status page given by its base URL or the JSON itself."""
    if url.endswith(".json"):
        return url
    return url.rstrip("/") + SUMMARY_PATH


def _page_component(target: WatchTarget) -> Component:
    return Component(f"watch:{target.name}", f"{target.name} (watched)", target.url)


async def poll(target: WatchTarget, client: httpx.AsyncClient) -> list[ComponentState]:
    """The watched components of one target, as it answers now."""
    if target.type == "http":
        return [await _poll_http(target, client)]
    return await _poll_statuspage(target, client)


async def _poll_http(target: WatchTarget, client: httpx.AsyncClient) -> ComponentState:
    component = _page_component(target)
    started = time.monotonic()
    try:
        response = await client.get(target.url, timeout=target.timeout_secs)
    except httpx.HTTPError as exc:
        return ComponentState(component, Status.MAJOR, f"{target.url}: {type(exc).__name__} {exc}")
    took = time.monotonic() - started
    if not response.is_success:
        reason = f"{target.url} answered HTTP {response.status_code}"
        return ComponentState(component, Status.MAJOR, reason)
    if took > target.slow_secs:
        reason = f"{target.url} took {took:.1f} s (slow above {target.slow_secs:g} s)"
        return ComponentState(component, Status.DEGRADED, reason)
    return ComponentState(component, Status.OPERATIONAL, "")


async def _poll_statuspage(target: WatchTarget, client: httpx.AsyncClient) -> list[ComponentState]:
    url = summary_url(target.url)
    try:
        response = await client.get(url, timeout=target.timeout_secs)
        response.raise_for_status()
        summary: dict[str, Any] = response.json()
        components = summary["components"]
        if not isinstance(components, list):
            raise TypeError("'components' is not a list")
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        reason = f"cannot read the status page {url}: {type(exc).__name__} {exc}"
        return [ComponentState(_page_component(target), Status.MAJOR, reason)]
    out = []
    page = summary.get("page", {}).get("name") or target.name
    for c in components:
        if not isinstance(c, dict) or c.get("group"):
            continue  # a group's status is its children's
        try:
            status = Status(c.get("status", ""))
        except ValueError:
            status = Status.DEGRADED  # a status this version does not know: look at it
        component = Component(
            f"watch:{target.name}:{c.get('id', c.get('name'))}",
            f"{target.name} · {c.get('name', '?')}",
            f"{page} at {target.url}",
        )
        reason = "" if status is Status.OPERATIONAL else f"{page} reports {status.value}"
        out.append(ComponentState(component, status, reason))
    return out


async def poll_all(
    targets: Sequence[WatchTarget], client: httpx.AsyncClient
) -> list[ComponentState]:
    results = await asyncio.gather(*(poll(t, client) for t in targets))
    return [state for states in results for state in states]


class WatchAlerts:
    """Alerts for watched components: each spell outside ``operational`` is one incident
    (watched services have no incident store, so the spell is named by when it began)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._spells: dict[str, str] = {}  # component id -> its current incident id

    def observe(self, states: Sequence[ComponentState], now: datetime) -> list[Outgoing]:
        outgoing: list[Outgoing] = []
        for state in states:
            cid = state.component.id
            if state.status.severity == 0:
                self._spells.pop(cid, None)
            else:
                self._spells.setdefault(cid, f"{cid}@{now.isoformat(timespec='seconds')}")
            outgoing += self.dispatcher.observe(
                state.component, state.status, now, incident_id=self._spells.get(cid),
                incident_title=f"{state.component.name}: {state.status.value}",
                message=state.reason,
            )  # fmt: skip
        return outgoing


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=True)
