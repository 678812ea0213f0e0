"""The Statuspage-compatible JSON documents (``/api/v2/*.json``).

The shapes follow Atlassian Statuspage's public API v2 — the one status.segment.com and
many others serve — so status tooling and dashboards read Headwater unchanged. Headwater's
destinations are a group component (``destinations``) whose children are the destinations.
Ids are stable strings: ``tracking-api``, ``sources``, ``destinations``,
``destination:<name>``, ``management-api``; incidents are ``inc-<n>``, maintenances
``mnt-<n>``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from headwater.status.model import Component, Status, worst
from headwater.status.store import Incident, Maintenance

PAGE_ID = "headwater"
DESTINATION_PREFIX = "destination:"

INDICATOR = {0: "none", 1: "minor", 2: "major", 3: "critical"}
DESCRIPTION = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major Service Outage",
}


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def page(name: str, url: str, updated_ms: int) -> dict[str, Any]:
    return {"id": PAGE_ID, "name": name, "url": url, "time_zone": "Etc/UTC",
            "updated_at": iso(updated_ms)}  # fmt: skip


def components_json(
    comps: list[Component], rows: dict[str, dict[str, Any]], now_ms: int
) -> list[dict[str, Any]]:
    children: dict[str, list[str]] = {}
    for c in comps:
        if c.group:
            children.setdefault(c.group, []).append(c.id)
    out = []
    for position, c in enumerate(comps, start=1):
        row = rows.get(c.id, {})
        item: dict[str, Any] = {
            "id": c.id,
            "name": c.name,
            "status": row.get("status", Status.OPERATIONAL.value),
            "created_at": iso(row.get("created_ms", now_ms)),
            "updated_at": iso(row.get("updated_ms", now_ms)),
            "position": position,
            "description": c.description,
            "showcase": True,
            "start_date": None,
            "group_id": c.group,
            "page_id": PAGE_ID,
            "group": c.id in children,
            "only_show_if_degraded": False,
        }
        if c.id in children:
            item["components"] = children[c.id]
        out.append(item)
    return out


def overall(components: list[dict[str, Any]]) -> dict[str, str]:
    """The page's indicator: the worst status among Headwater's own components. A
    destination's endpoint failing is that destination's state, not a Headwater outage: it
    is named in the description but does not raise the indicator."""
    own = [c for c in components if not c["id"].startswith(DESTINATION_PREFIX)]
    status = worst([Status(c["status"]) for c in own])
    indicator = INDICATOR[status.severity]
    failing = [
        c["name"].removeprefix("Destination ")
        for c in components
        if c["id"].startswith(DESTINATION_PREFIX) and Status(c["status"]).severity > 0
    ]
    if status is Status.OPERATIONAL and any(c["status"] == Status.MAINTENANCE.value for c in own):
        result = {"indicator": "maintenance", "description": "Service Under Maintenance"}
    else:
        result = {"indicator": indicator, "description": DESCRIPTION[indicator]}
    if failing:
        result["description"] += f" · destination failing: {', '.join(failing)}"
    return result


def incident_json(incident: Incident, comps: dict[str, Component]) -> dict[str, Any]:
    component = comps.get(incident.component)
    affected = (
        [{"code": incident.component, "name": component.name if component else incident.component}]
        if component or incident.component
        else []
    )
    updates = [
        {
            "id": f"upd-{u.id}",
            "status": u.status,
            "body": u.body,
            "incident_id": f"inc-{incident.id}",
            "created_at": iso(u.created_ms),
            "updated_at": iso(u.created_ms),
            "display_at": iso(u.created_ms),
            "affected_components": [
                {**a, "old_status": u.old_status, "new_status": u.new_status} for a in affected
            ],
            "deliver_notifications": True,
            "custom_tweet": None,
            "tweet_id": None,
        }
        for u in incident.updates
    ]
    return {
        "id": f"inc-{incident.id}",
        "name": incident.name,
        "status": incident.status,
        "created_at": iso(incident.created_ms),
        "updated_at": iso(incident.updated_ms),
        "monitoring_at": None,
        "resolved_at": iso(incident.resolved_ms),
        "impact": incident.impact,
        "shortlink": None,
        "started_at": iso(incident.created_ms),
        "page_id": PAGE_ID,
        "incident_updates": updates,
        "components": [{"id": a["code"], "name": a["name"], "page_id": PAGE_ID} for a in affected],
    }


def maintenance_json(m: Maintenance, now_ms: int) -> dict[str, Any]:
    if now_ms < m.starts_ms:
        status = "scheduled"
    elif now_ms < m.ends_ms:
        status = "in_progress"
    else:
        status = "completed"
    return {
        "id": f"mnt-{m.id}",
        "name": m.name,
        "status": status,
        "created_at": iso(m.created_ms),
        "updated_at": iso(m.created_ms),
        "monitoring_at": None,
        "resolved_at": iso(m.ends_ms) if status == "completed" else None,
        "impact": "maintenance",
        "shortlink": None,
        "started_at": iso(m.starts_ms),
        "page_id": PAGE_ID,
        "scheduled_for": iso(m.starts_ms),
        "scheduled_until": iso(m.ends_ms),
        "incident_updates": [
            {
                "id": f"mnt-{m.id}-1",
                "status": "scheduled",
                "body": m.body or m.name,
                "incident_id": f"mnt-{m.id}",
                "created_at": iso(m.created_ms),
                "updated_at": iso(m.created_ms),
                "display_at": iso(m.created_ms),
                "affected_components": [{"code": c, "name": c} for c in m.components],
            }
        ],
        "components": [{"id": c, "name": c, "page_id": PAGE_ID} for c in m.components],
    }
