"""One table's share of a sync batch, in columns, ready for the warehouse to load.

:func:`plan_table` takes the rows :class:`~headwater.warehouses.schema.Shaper` made for one
table and the table's columns as the warehouse has them, and decides: the new columns and
their types (from the first value each gets, at most ``MAX_COLUMNS`` per table), each value
converted to its column's type or sent to ``_discards`` (a conflict), and one row per ``id``
(``users``: the latest traits of each user merged over the batch, later values winning).
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from headwater.warehouses.schema import (
    CONFLICT,
    CONVERTERS,
    ISO_TIMESTAMP,
    MAX_COLUMNS,
    USERS,
    ColumnType,
    Discard,
    Row,
    as_text,
    infer,
    received_time,
)

Column: TypeAlias = list[Any] | pa.Array
"""A column's values: a list, or an Arrow array where it was converted in Arrow."""
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")


@dataclass
class TablePlan:
    """What to load into ``schema.table``: ``columns`` (name → type, every one of them in the
    table once ``new_columns`` are added) and ``data`` (name → values, one per row)."""

    schema: str
    table: str
    columns: dict[str, ColumnType]
    new_columns: dict[str, ColumnType]
    data: dict[str, Column]
    rows: int
    exists: bool

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
    original = _merge_users(rows) if table == USERS else _first_per_id(rows)
    groups = _by_keys(original)  # rows with the same columns are transposed at once
    rows = [original[i] for indexes in groups.values() for i in indexes]  # the order loaded
    n = len(rows)
    existing = dict(known or {})
    columns: dict[str, ColumnType] = {}
    new: dict[str, ColumnType] = {}
    discards: list[Discard] = []
    data: dict[str, Column] = {}
    for name, kind in row_fixed(rows).items():  # the fixed columns first, even when empty
        columns[name] = existing.get(name, kind)
        if name not in existing:
            new[name] = kind
    pieces: dict[str, list[_Piece]] = {}
    starts: list[int] = []
    start = 0
    for keys, indexes in groups.items():
        starts.append(start)
        matrix = [tuple(original[i].values.values()) for i in indexes]
        for name, column in zip(keys, zip(*matrix, strict=True), strict=True):
            pieces.setdefault(name, []).append(_Piece(start, indexes[0], column))
        start += len(indexes)
    for name, found_pieces in pieces.items():
        found = columns.get(name) or existing.get(name)
        if found is None:
            if len(existing) + len(new) >= MAX_COLUMNS:
                reason = f"column limit ({MAX_COLUMNS} columns per table)"
                discards.extend(_discard(table, name, value, rows[piece.start + offset], reason)
                                for piece in found_pieces
                                for offset, value in enumerate(piece.values))  # fmt: skip
                continue
            first = min(found_pieces, key=_ARRIVAL)  # the type of the column's first value
            found = new[name] = infer(first.values[0])
        columns[name] = found
        data[name] = _concatenate(found_pieces, starts, n)
    for name in columns:
        if name not in data:
            data[name] = [None] * n
    for name, values in data.items():
        kind = columns[name]
        data[name], conflicts = convert_column(kind, values)
        for index, value in conflicts:
            discards.append(
                _discard(table, name, value, rows[index], f"type conflict: the column is {kind}")
            )
    data["uuid_ts"] = [uuid_ts] * n
    columns.setdefault("uuid_ts", "timestamp")
    plan = TablePlan(schema, table, columns, new, data, n, known is not None)
    return plan, discards


_NOT_NONE = functools.partial(operator.is_not, None)
_PLAIN: Final[dict[ColumnType, type]] = {"text": str, "bigint": int, "double": float,
                                         "boolean": bool, "timestamp": datetime}  # fmt: skip
_BIGINT = range(-(2**63), 2**63)


def convert_column(kind: ColumnType, values: list[Any]) -> tuple[Column, list[tuple[int, Any]]]:
    """``values`` converted to ``kind`` (in place, or as an Arrow array) and the (index, value)
    of each conflict, whose place becomes None. A column whose values all have the column's
    Python type already (the usual case) is checked in C-level passes, not value by value;
    ISO-8601 text into a timestamp column is matched and parsed by Arrow."""
    types = set(map(type, values))
    types.discard(type(None))
    if not types:
        return values, []
    if types == {_PLAIN[kind]}:
        if kind == "text":
            if "\x00" not in "".join(filter(_NOT_NONE, values)):
                return values, []
        elif kind == "bigint":
            present = list(filter(_NOT_NONE, values))
            if min(present) in _BIGINT and max(present) in _BIGINT:
                return values, []
        else:
            return values, []
    elif kind == "timestamp" and types == {str}:
        parsed = _parse_timestamps(values)
        if parsed is not None:
            return parsed, []
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
    return values, conflicts


def _parse_timestamps(values: list[str | None]) -> pa.Array | None:
    """Text that is all ISO-8601 with a zone (what SDKs send), parsed in one Arrow pass; None
    when any value needs the value-by-value path (no zone, more than 6 fractional digits, not
    a timestamp: a conflict)."""
    text = pa.array(values, pa.string())
    if not pc.all(pc.match_substring_regex(text, ISO_TIMESTAMP.pattern)).as_py():
        return None
    try:
        return pc.cast(text, TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


@dataclass(slots=True)
class _Piece:
    """A column's values in one group of rows: from ``start`` in the loaded order; the
    group's first row arrived ``arrival``-th."""

    start: int
    arrival: int
    values: tuple[Any, ...]


_ARRIVAL = operator.attrgetter("arrival")


def _concatenate(pieces: list[_Piece], starts: list[int], n: int) -> list[Any]:
    """A column's values over all groups, None in the groups that lack it."""
    if len(pieces) == len(starts):
        return list(itertools.chain.from_iterable(p.values for p in pieces))
    by_start = {p.start: p.values for p in pieces}
    ends = [*starts[1:], n]
    return list(
        itertools.chain.from_iterable(
            by_start.get(start) or (None,) * (end - start)
            for start, end in zip(starts, ends, strict=True)
        )
    )


def _by_keys(rows: list[Row]) -> dict[tuple[str, ...], list[int]]:
    """Row indexes by their columns (in order), groups in the order each first appears."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, row in enumerate(rows):
        keys = tuple(row.values)
        group = groups.get(keys)
        if group is None:
            groups[keys] = [index]
        else:
            group.append(index)
    return groups


def row_fixed(rows: Iterable[Row]) -> dict[str, ColumnType]:
    for row in rows:
        return row.fixed
    return {}


def _discard(table: str, column: str, value: Any, row: Row, reason: str) -> Discard:
    return Discard(table, column, as_text(value), row.id, reason,
                   received_time(row.values.get("received_at")))  # fmt: skip


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
            merged[row.id] = Row(row.schema, row.table, row.id, dict(row.values), row.fixed)
        else:
            seen.values.update(row.values)
    return list(merged.values())
