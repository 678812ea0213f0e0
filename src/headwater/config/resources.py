"""The workspace cut into resources: what the write API, the config store and
``headwater diff`` address one at a time.

A :class:`Kind` names a list section of the workspace (``destinations``,
``alerts.rules``, ...) and how its items are keyed. Everything else in the workspace
(``log``, ``gateway``, ``status``, the workspace's name, ...) is one resource of the kind
``settings``. :func:`split` and :func:`join` turn a workspace document into resources and
back, so that the store keeps one row per resource with its own version while validation
always runs on the whole candidate workspace (``parse_workspace``).

A new list section of the workspace becomes resources with one :func:`register` call. A
space's computed traits and audiences are part of the space's document.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

SETTINGS = "settings"
"""The kind of the one resource holding every section that is not a list of resources."""


@dataclass(frozen=True)
class Kind:
    """One list section of the workspace, addressed as ``/api/v1/<plural>/<name>``."""

    plural: str
    """The URL segment and the resource's kind in the store, e.g. ``alert-rules``."""

    path: tuple[str, ...]
    """Where the list is in the workspace document, e.g. ``("alerts", "rules")``."""

    singular: str
    """For messages: ``destination``, ``alert rule``."""

    toggles: bool = False
    """Has an ``enabled`` field: served ``/enable`` and ``/disable``."""

    read: str = "workspace:read"
    write: str = "workspace:write"
    """The permissions its routes need (api/permissions.py)."""

    def key(self, doc: dict[str, Any], index: int) -> str:
        """The item's name; items that may go unnamed (alert rules) get one by position."""
        name = doc.get("name")
        return str(name) if name else f"{self.singular.replace(' ', '-')}-{index + 1}"

    @property
    def where(self) -> str:
        return ".".join(self.path)


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Serve a workspace section as resources (one call per section)."""
    KINDS[kind.plural] = kind
    return kind


register(Kind("sources", ("sources",), "source", True, "sources:read", "sources:write"))
register(
    Kind("destinations", ("destinations",), "destination", True, "destinations:read",
         "destinations:write")
)  # fmt: skip
register(Kind("transformations", ("transformations",), "transformation"))
register(
    Kind("tracking-plans", ("tracking_plans",), "tracking plan", False, "tracking-plans:read",
         "tracking-plans:write")
)  # fmt: skip
register(Kind("alert-rules", ("alerts", "rules"), "alert rule"))
register(Kind("alert-notifiers", ("alerts", "notifiers"), "notifier"))
register(Kind("watch", ("watch",), "watch target"))

register(Kind("warehouses", ("warehouses",), "warehouse", True, "warehouses:read"))
register(Kind("spaces", ("spaces",), "space", toggles=True))
# functions stay in the ``settings`` resource: their code is files beside the workspace,
# deployed with the files (``headwater functions reload``), not through the API


Resources = dict[tuple[str, str], dict[str, Any]]
"""(kind, name) → the resource's document, in the order of the workspace."""


def section(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    """What ``doc`` holds at ``path`` (None where it holds nothing)."""
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)  # type: ignore[assignment]
    return doc


def split(workspace: dict[str, Any]) -> Resources:
    """A workspace document (as ``model_dump(mode="json", by_alias=True)`` or YAML gives
    it) as resources; the order of each list is the order of the resources."""
    rest = copy.deepcopy(workspace)
    out: Resources = {}
    for kind in KINDS.values():
        items = section(workspace, kind.path)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if isinstance(item, dict):
                out[(kind.plural, kind.key(item, i))] = copy.deepcopy(item)
        parent = section(rest, kind.path[:-1]) if len(kind.path) > 1 else rest
        if isinstance(parent, dict):
            parent.pop(kind.path[-1], None)
    out[(SETTINGS, SETTINGS)] = rest
    return out


def join(resources: Resources) -> dict[str, Any]:
    """The workspace document again (lists in the order of ``resources``)."""
    doc = copy.deepcopy(resources.get((SETTINGS, SETTINGS), {}))
    for kind in KINDS.values():
        # an empty list is written out: deleting the last alert rule leaves none, not the
        # model's default rule (sources refuse an empty list themselves)
        items = [copy.deepcopy(v) for (k, _), v in resources.items() if k == kind.plural]
        parent = doc
        for part in kind.path[:-1]:
            parent = parent.setdefault(part, {})
        parent[kind.path[-1]] = items
    return doc
