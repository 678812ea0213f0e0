"""One table's share of a sync batch, in columns, ready for the warehouse to load.

:func:`plan_table` takes the rows :class:`~headwater.warehouses.schema.Shaper` made for one
table and the table's columns as the warehouse has them, and decides: the new columns and
their types (from the first value each gets, at most ``MAX_COLUMNS`` per table), each value
converted to its column's type or sent to ``_discards`` (a conflict), and one row per ``id``
(``users``: the latest traits of each user merged over the batch, later values winning).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from headwater.warehouses.schema import (
    CONFLICT,
    CONVERTERS,
    MAX_COLUMNS,
    USERS,
    ColumnType,
    Discard,
    Row,
    as_text,
    infer,
)


@dataclass
class TablePlan:
    """What to load into ``schema.table``: ``columns`` (name → type, every one of them in the
    table once ``new_columns`` are added) and ``data`` (name → values, one per row)."""

    schema: str
    table: str
    columns: dict[str, ColumnType]
    new_columns: dict[str, ColumnType]
    data: dict[str, list[Any]]
    rows: int
    exists: bool
    offsets: list[int] = field(default_factory=list)

    @property
    def upsert(self) -> bool:
        return self.table == USERS


def plan_table(
    schema: str,
    table: str,
    rows: list[Row],
    known: dict[str, ColumnType] | None,
    uuid_ts: datetime,
) -> tuple[TablePlan, list[Discard]]:
    """The plan for one table and the values it could not take; see the module docstring."""
    rows = _merge_users(rows) if table == USERS else _first_per_id(rows)
    existing = dict(known or {})
    columns: dict[str, ColumnType] = {}
    new: dict[str, ColumnType] = {}
    discards: list[Discard] = []
    data: dict[str, list[Any]] = {}
    n = len(rows)
    for name, kind in row_fixed(rows).items():  # the fixed columns first, even when empty
        columns[name] = existing.get(name, kind)
        data[name] = [None] * n
        if name not in existing:
            new[name] = kind
    for index, row in enumerate(rows):
        for name, value in row.values.items():
            column = data.get(name)
            if column is None:
                found = existing.get(name) or row.fixed.get(name)
                if found is None:
                    if len(existing) + len(new) >= MAX_COLUMNS:
                        discards.append(_discard(table, name, value, row, "column limit "
                                                 f"({MAX_COLUMNS} columns per table)"))  # fmt: skip
                        continue
                    found = infer(value)
                if name not in existing:
                    new[name] = found
                columns[name] = found
                column = data[name] = [None] * n
            column[index] = value
    for name, values in data.items():
        kind = columns[name]
        for index, value in convert_column(kind, values):
            discards.append(
                _discard(table, name, value, rows[index], f"type conflict: the column is {kind}")
            )
    data["uuid_ts"] = [uuid_ts] * n
    columns.setdefault("uuid_ts", "timestamp")
    plan = TablePlan(schema, table, columns, new, data, n, known is not None,
                     [r.offset for r in rows])  # fmt: skip
    return plan, discards


_NOT_NONE = functools.partial(operator.is_not, None)
_PLAIN: Final[dict[ColumnType, type]] = {"text": str, "bigint": int, "double": float,
                                         "boolean": bool, "timestamp": datetime}  # fmt: skip
_BIGINT = range(-(2**63), 2**63)


def convert_column(kind: ColumnType, values: list[Any]) -> list[tuple[int, Any]]:
    """``values`` converted in place to ``kind``; the (index, value) of each conflict, whose
    place becomes None. A column whose values all have the column's Python type already (the
    usual case) is checked in C-level passes, not value by value."""
    types = set(map(type, values))
    types.discard(type(None))
    if not types:
        return []
    if types == {_PLAIN[kind]}:
        if kind == "text":
            if "\x00" not in "".join(filter(_NOT_NONE, values)):
                return []
        elif kind == "bigint":
            present = list(filter(_NOT_NONE, values))
            if min(present) in _BIGINT and max(present) in _BIGINT:
                return []
        else:
            return []
    convert = CONVERTERS[kind]
    conflicts: list[tuple[int, Any]] = []
    for index, value in enumerate(values):
        if value is None:
            continue
        converted = convert(value)
        if converted is CONFLICT:
            conflicts.append((index, value))
            values[index] = None
        else:
            values[index] = converted
    return conflicts


def row_fixed(rows: Iterable[Row]) -> dict[str, ColumnType]:
    for row in rows:
        return row.fixed
    return {}


def _discard(table: str, column: str, value: Any, row: Row, reason: str) -> Discard:
    received = CONVERTERS["timestamp"](row.values.get("received_at"))
    return Discard(table, column, as_text(value), row.id, reason,
                   received if isinstance(received, datetime) else None)  # fmt: skip


def _first_per_id(rows: list[Row]) -> list[Row]:
    """A batch may hold an id twice (sent again after the log's 24 h dedupe): keep the first."""
    seen: set[str] = set()
    kept: list[Row] = []
    for row in rows:
        if row.id not in seen:
            seen.add(row.id)
            kept.append(row)
    return kept


def _merge_users(rows: list[Row]) -> list[Row]:
    """One row per user: the traits of all its identifies in the batch, later ones winning."""
    merged: dict[str, Row] = {}
    for row in rows:
        seen = merged.get(row.id)
        if seen is None:
            merged[row.id] = Row(row.schema, row.table, row.id, dict(row.values), row.fixed,
                                 row.offset)  # fmt: skip
        else:
            seen.values.update(row.values)
            seen.offset = row.offset
    return list(merged.values())
