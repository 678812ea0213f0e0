"""What the workspace file changed since the previous start, as audit entries.

At each start the server compares the workspace it loads with a snapshot of the one the
previous start loaded (``<data-dir>/state/workspace.last.json``; with ``state: {backend:
postgres}``, the cluster's, in the shared schema, swapped under a lock) and records, per resource,
``create``, ``update``, ``enable``, ``disable`` or ``delete`` (actor ``workspace``, origin
``workspace``). So "who turned amplitude off?" has an answer when the answer is "someone
edited the file and restarted".

The snapshot is masked (:func:`~headwater.state.audit.mask_secrets`) before it is written:
no secret is kept on disk twice. The price: a change of a secret alone (a rotated API key in
the file) is not seen as a change. Environment references (``${NAME}``) are kept, so moving
a key to another variable is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from headwater.config.workspace import Workspace
from headwater.state.audit import (
    STATE_DIR,
    AuditEntry,
    AuditLog,
    change_action,
    diff_of,
    mask_secrets,
)
from headwater.state.postgres import ADOPTED_SUFFIX

SNAPSHOT_FILE = "workspace.last.json"
ACTOR = "workspace"

# workspace list fields that hold named resources, and the audit resource kind of each
_NAMED = {
    "sources": "sources",
    "destinations": "destinations",
    "tracking_plans": "tracking-plans",
    "transformations": "transformations",
    "watch": "watch",
}


def resources(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """The workspace as ``{"destinations/amplitude": {...}, "workspace/log": {...}}``,
    masked."""
    from headwater.config.changes import mask_all  # the config layer imports this module's

    # secret-typed settings and header values masked by where they are (a Slack URL, an
    # X-Api-Key header), then what names a secret by its key
    dump = mask_all(workspace.model_dump(mode="json", by_alias=True))
    out: dict[str, dict[str, Any]] = {}
    for field, value in dump.items():
        kind = _NAMED.get(field)
        if kind is not None and isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "name" in item:
                    out[f"{kind}/{item['name']}"] = item
        elif isinstance(value, dict):
            out[f"workspace/{field}"] = value
        else:
            out[f"workspace/{field}"] = {"value": value}
    return mask_secrets(out)  # type: ignore[no-any-return]


def record_workspace_load(
    audit: AuditLog, workspace: Workspace, data_dir: Path
) -> list[AuditEntry]:
    """Record what changed since the previous start and keep this start's snapshot: the
    data directory's, or with a shared trail (PostgreSQL) the cluster's, so that the first
    node started with a new file records its changes and the others find nothing new."""
    current = resources(workspace)
    path = data_dir / STATE_DIR / SNAPSHOT_FILE
    if audit.shared:
        # a node's snapshot from before shared state stands in while the cluster has none
        own = _read(path) if path.exists() else None
        recorded = audit.swap_snapshot(current, lambda previous: changes(previous, current),
                                       ACTOR, "workspace", first=own)  # fmt: skip
        if own is not None:
            path.rename(path.with_name(path.name + ADOPTED_SUFFIX))
        return recorded
    recorded = [audit.record(ACTOR, action, resource, diff, "workspace")
                for action, resource, diff in changes(_read(path), current)]  # fmt: skip
    _write(path, current)
    return recorded


def keep_snapshot(workspace: Workspace, data_dir: Path) -> None:
    """After a change through the API: the snapshot becomes the running workspace, so the
    next start records only what the file changes (the API's changes are recorded already,
    with their token)."""
    _write(data_dir / STATE_DIR / SNAPSHOT_FILE, resources(workspace))


def changes(previous: dict[str, Any], current: dict[str, Any]
            ) -> list[tuple[str, str, dict[str, Any]]]:  # fmt: skip
    """(action, resource, diff) for each resource that differs, in resource order."""
    found = []
    for resource in sorted(current.keys() | previous.keys()):
        before, after = previous.get(resource), current.get(resource)
        if before != after:
            found.append((change_action(before, after), resource, diff_of(before, after)))
    return found


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        loaded = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError:
        return {}  # a torn snapshot: this start is recorded as if it were the first
    return loaded if isinstance(loaded, dict) else {}


def _write(path: Path, snapshot: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
