"""What a warehouse backend does for the loader (:mod:`headwater.warehouses.loader`).

A backend is synchronous (the loader runs it on a thread of its own, never on an event
loop) and holds its connection only between :meth:`Warehouse.open` and
:meth:`Warehouse.close`: DuckDB allows one writing process per file, so an analyst can open
the file between syncs.

:meth:`Warehouse.load` is one transaction: it creates what is missing (schemas, tables,
columns), inserts each table's rows whose ``id`` the table does not hold yet (``users``:
upserts the latest traits), and moves the warehouse's committed position (table
``_headwater.sync_state``) from ``after`` to ``position`` — refusing with
:class:`StalePosition` when the position is no longer ``after`` (another loader got there
first). A crash before the commit loads nothing; after it, everything and the position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from headwater.errors import HeadwaterError
from headwater.warehouses.schema import ColumnType

if TYPE_CHECKING:  # pyarrow (~40 MB) only in a process that loads a warehouse
    from headwater.warehouses.batch import TablePlan

STATE_SCHEMA = "_headwater"
STATE_TABLE = "sync_state"


class WarehouseError(HeadwaterError):
    """The warehouse refused or failed; ``kind`` names the cause for diagnose."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class StalePosition(WarehouseError):
    """The committed position moved under this loader (two loaders on one warehouse)."""


class Warehouse(Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...

    def position(self, warehouse: str) -> int | None:
        """The committed position, None before the first sync."""
        ...

    def set_position(self, warehouse: str, position: int) -> None:
        """Move the committed position (a backfill moves it back), in its own transaction."""
        ...

    def columns(self, schema: str) -> dict[str, dict[str, ColumnType]]:
        """Table → column → type, of the tables of ``schema``."""
        ...

    def load(self, warehouse: str, plans: list[TablePlan], after: int, position: int) -> None:
        """See the module docstring."""
        ...


def classify(message: str) -> str:
    """The kind of a warehouse failure, for diagnose's finding and its fix."""
    text = message.lower()
    if "connection refused" in text or "could not connect" in text or "timeout" in text:
        return "connection_refused"
    if "password authentication failed" in text or "no password supplied" in text:
        return "authentication"
    if "permission denied" in text or "must be owner" in text or "read-only" in text:
        return "permission_denied"
    if "no space left" in text or "disk full" in text or "could not extend" in text:
        return "disk_full"
    if "could not set lock" in text or "conflicting lock" in text:
        return "locked"
    if "does not exist" in text and "database" in text:
        return "no_database"
    return "error"
