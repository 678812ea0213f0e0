"""Segment's warehouse schema: which rows an event becomes, and the types of their columns.

An event of source ``website`` becomes rows of schema ``website`` (docs/warehouses.md):

- ``track``: a row in ``tracks`` (the common columns, no properties) and one in the event's
  own table (``Order Completed`` → ``order_completed``: the common columns + properties);
- ``identify``: a row in ``identifies`` (+ traits) and, with a ``userId``, the user's latest
  traits in ``users`` (upserted on ``id`` = the user id);
- ``page``/``screen``: ``pages``/``screens`` (+ ``name``, ``category``, properties);
- ``group``: ``groups`` (+ ``group_id``, traits); ``alias``: ``aliases`` (+ ``previous_id``).

Common columns: ``id`` (the messageId), ``received_at``, ``sent_at``, ``timestamp``,
``original_timestamp``, ``uuid_ts`` (when Headwater loaded the row), ``user_id``,
``anonymous_id`` and ``context_*``. Nested objects flatten with ``_`` (``address.city`` →
``address_city``), arrays are stored as JSON text. A property whose name is a common column
(``user_id``) or starts with ``context_`` is discarded, as Segment does: it goes to
``_discards`` so it is not lost.

Types are inferred from the first value a new column gets: ``boolean``, ``bigint``,
``double``, ``timestamp`` (ISO-8601 strings) or ``text``; a column's type never changes. A
later value is converted where nothing is lost (any value into ``text``, an integer into
``double``, a whole float into ``bigint``); any other value is a conflict: the row gets NULL
there and the value goes to ``_discards`` with the reason.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from headwater.warehouses.names import fit, identifier, snake_case

ColumnType = Literal["boolean", "bigint", "double", "timestamp", "text"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("boolean", "bigint", "double", "timestamp", "text")

MAX_COLUMNS = 400
"""Columns per table at most; later columns' values go to ``_discards`` (reason ``column
limit``), so 10,000 distinct properties cannot break a sync. PostgreSQL allows 1,600 columns,
but a row must fit its 8 KB page even when every value is moved out of line (18 bytes each):
400 columns always fit."""

DISCARDS = "_discards"
USERS = "users"
TRACKS = "tracks"
TABLE_OF_TYPE = {"identify": "identifies", "page": "pages", "screen": "screens",
                 "group": "groups", "alias": "aliases"}  # fmt: skip
FIXED_TABLES = frozenset({TRACKS, USERS, DISCARDS, "accounts", *TABLE_OF_TYPE.values()})

_TS: ColumnType = "timestamp"
COMMON: Final[dict[str, ColumnType]] = {
    "id": "text", "received_at": _TS, "sent_at": _TS, "timestamp": _TS,
    "original_timestamp": _TS, "uuid_ts": _TS, "user_id": "text", "anonymous_id": "text",
}  # fmt: skip
EXTRA: Final[dict[str, dict[str, ColumnType]]] = {
    "track": {"event": "text", "event_text": "text"},
    "page": {"name": "text", "category": "text"},
    "screen": {"name": "text", "category": "text"},
    "group": {"group_id": "text"},
    "alias": {"previous_id": "text"},
    "identify": {},
}
USERS_FIXED: Final[dict[str, ColumnType]] = {"id": "text", "received_at": _TS, "uuid_ts": _TS}
DISCARDS_COLUMNS: Final[dict[str, ColumnType]] = {
    "id": "text", "table_name": "text", "column_name": "text", "column_value": "text",
    "row_id": "text", "reason": "text", "received_at": _TS, "uuid_ts": _TS,
}  # fmt: skip
_NEVER_PROPERTIES = frozenset({"uuid", "loaded_at"})
_FIXED: Final[dict[str, dict[str, ColumnType]]] = {
    kind: dict(COMMON) | extra for kind, extra in EXTRA.items()
}  # shared by every row of the kind: nothing changes them

ISO_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)


def parse_timestamp(text: str) -> datetime | None:
    """An ISO-8601 string as an aware UTC datetime (naive ones are UTC), None otherwise."""
    if not ISO_TIMESTAMP.match(text):
        return None
    if "." in text:  # Python takes at most 6 fractional digits
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[: min(digits, 6)].ljust(6, "0") + rest[digits:]
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def infer(value: Any) -> ColumnType:
    """The type of a new column whose first non-null value is ``value``."""
    kind = type(value)
    if kind is bool:
        return "boolean"
    if kind is int:
        return "bigint" if -(2**63) <= value < 2**63 else "double"
    if kind is float:
        return "double"
    if kind is str and parse_timestamp(value) is not None:
        return "timestamp"
    return "text"


class Conflict:
    """What a converter answers for a value its column's type cannot hold."""


CONFLICT: Final = Conflict()


def _to_text(v: Any) -> Any:
    if type(v) is str:  # PostgreSQL's text cannot hold NUL: it is dropped (docs/warehouses.md)
        return v.replace("\x00", "") if "\x00" in v else v
    if v is None:
        return v
    if type(v) is bool:
        return "true" if v else "false"
    return str(v)


def _to_bigint(v: Any) -> Any:
    kind = type(v)
    if kind is int and -(2**63) <= v < 2**63:
        return v
    if kind is float and v.is_integer() and abs(v) < 2**63:
        return int(v)
    return CONFLICT


def _to_double(v: Any) -> Any:
    kind = type(v)
    if kind is float or kind is int:
        return float(v)
    return CONFLICT


def _to_boolean(v: Any) -> Any:
    return v if type(v) is bool else CONFLICT


def _to_timestamp(v: Any) -> Any:
    if type(v) is datetime:
        return v
    if type(v) is str:
        parsed = parse_timestamp(v)
        if parsed is not None:
            return parsed
    return CONFLICT


CONVERTERS: Final[dict[ColumnType, Callable[[Any], Any]]] = {
    "text": _to_text, "bigint": _to_bigint, "double": _to_double,
    "boolean": _to_boolean, "timestamp": _to_timestamp,
}  # fmt: skip
"""Per column type: a value as the column holds it, or CONFLICT (never None for a value)."""


@dataclass(slots=True)
class Discard:
    """A value that could not be loaded where it belonged, kept in ``_discards``."""

    table: str
    column: str
    value: str
    row_id: str
    reason: str
    received_at: datetime | None


@dataclass(slots=True)
class Row:
    """One row on its way to ``schema.table``: column → value as the event had it."""

    schema: str
    table: str
    id: str
    values: dict[str, Any]
    fixed: dict[str, ColumnType]


@dataclass
class Shaped:
    """What one event becomes."""

    rows: list[Row] = field(default_factory=list)
    discards: list[tuple[str, Discard]] = field(default_factory=list)  # (schema, discard)


def flatten(
    obj: dict[str, Any], prefix: str, out: dict[str, Any], problems: list[tuple[str, str, Any]]
) -> None:
    """``obj``'s leaves into ``out`` as ``prefix_key_subkey`` → value (arrays as JSON text):
    first an object's own values, then those of the objects nested in it. Keys without a
    usable name, and a key whose column name is taken already, go to ``problems`` as (raw
    path, reason, value)."""
    values = tuple(obj.values())
    level = _level_of(prefix, tuple(obj), tuple(map(type, values)))
    if level is not None and out.keys().isdisjoint(level.names):
        if level.names:
            out.update(zip(level.names, level.pick(values), strict=True))
        for position, path in level.nested:
            flatten(values[position], path, out, problems)
        return
    nested: list[tuple[str, dict[str, Any]]] = []
    for key, value in obj.items():
        part, path, name = _column_of(prefix, key)
        if isinstance(value, dict):
            if part:
                nested.append((path, value))
            else:
                problems.append((f"{prefix}.{key}", "no usable name", value))
            continue
        if value is None:
            continue
        if name is None:
            problems.append((f"{prefix}.{key}" if prefix else str(key), "no usable name", value))
        elif name in out:
            problems.append((str(key), f"same column name as another key ({name})", value))
        elif isinstance(value, list):
            out[name] = orjson.dumps(value).decode()
        else:
            out[name] = value
    for path, value in nested:
        flatten(value, path, out, problems)


@dataclass(frozen=True, slots=True)
class _Level:
    """How to flatten an object of one shape (keys and value types) at one prefix."""

    names: tuple[str, ...]  # the column of each scalar value, in order
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # those values, from obj.values()
    nested: tuple[tuple[int, str], ...]  # (position, path) of each nested object


_SCALARS = frozenset({str, int, float, bool})


@functools.lru_cache(maxsize=16384)  # SDK events repeat their shapes exactly: plan each once
def _level_of(prefix: str, keys: tuple[str, ...], types: tuple[type, ...]) -> _Level | None:
    """The plan for objects of this shape, or None when they need the key-by-key path
    (a list value, a key without a usable name, two keys with one column name)."""
    names: list[str] = []
    positions: list[int] = []
    nested: list[tuple[int, str]] = []
    for position, (key, kind) in enumerate(zip(keys, types, strict=True)):
        part, path, name = _column_of(prefix, key)
        if kind is dict and part:
            nested.append((position, path))
        elif kind is type(None):
            continue
        elif kind not in _SCALARS or name is None or name in names:
            return None
        else:
            names.append(name)
            positions.append(position)
    return _Level(tuple(names), _picker(positions), tuple(nested))


def _picker(positions: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    if len(positions) < 2:  # itemgetter answers a tuple for two positions or more
        return lambda values: tuple(values[p] for p in positions)
    return operator.itemgetter(*positions)


@functools.lru_cache(maxsize=65536)  # the same keys in every event: name each once
def _column_of(prefix: str, key: str) -> tuple[str, str, str | None]:
    """(key snake_cased, the flattened path, its column name or None)."""
    part = snake_case(str(key))
    path = f"{prefix}_{part}" if prefix else part
    return part, path, fit(path) if part else None


class Shaper:
    """Events → rows, for one warehouse's selection (its sources, ``tables`` and
    ``exclude_events``)."""

    def __init__(
        self,
        sources: Iterable[str],
        tables: Iterable[str] | None = None,
        exclude_events: Iterable[str] = (),
    ) -> None:
        self.sources = frozenset(sources)
        self.tables = frozenset(tables) if tables is not None else None
        self.exclude_events = frozenset(exclude_events)

    def wants(self, table: str) -> bool:
        return self.tables is None or table in self.tables

    def shape(self, schema: str, event: dict[str, Any]) -> Shaped:
        shaped = Shaped()
        kind = event.get("type")
        if kind not in EXTRA:
            return shaped
        if kind == "track" and event.get("event") in self.exclude_events:
            return shaped
        row_id = str(event.get("messageId") or "")
        fixed = _FIXED[kind]
        common = _common_values(event, kind)
        received = common.get("received_at")  # text: parsed only for a discard
        context = event.get("context")
        if isinstance(context, dict):
            problems: list[tuple[str, str, Any]] = []
            flatten(context, "context", common, problems)
            self._discard_all(shaped, schema, "tracks" if kind == "track" else
                              TABLE_OF_TYPE[kind], row_id, received, problems)  # fmt: skip
        if kind == "track":
            self._track(shaped, schema, event, row_id, received, common, fixed)
            return shaped
        table = TABLE_OF_TYPE[kind]
        payload_key = "properties" if kind in ("page", "screen") else "traits"
        values = self._custom(shaped, schema, table, event.get(payload_key), kind, common,
                              row_id, received)  # fmt: skip
        if self.wants(table):
            shaped.rows.append(Row(schema, table, row_id, values, fixed))
        user_id = common.get("user_id")
        if kind == "identify" and user_id and self.wants(USERS):
            traits = {k: v for k, v in values.items() if k not in fixed and
                      not k.startswith("context_")}  # fmt: skip
            traits["id"] = user_id
            traits["received_at"] = common.get("received_at")
            shaped.rows.append(Row(schema, USERS, user_id, traits, dict(USERS_FIXED)))
        return shaped

    def _track(
        self,
        shaped: Shaped,
        schema: str,
        event: dict[str, Any],
        row_id: str,
        received: Any,
        common: dict[str, Any],
        fixed: dict[str, ColumnType],
    ) -> None:
        if self.wants(TRACKS):
            shaped.rows.append(Row(schema, TRACKS, row_id, common, fixed))
        table = event_table(str(common.get("event_text") or ""))
        if table is None:
            shaped.discards.append(
                (
                    schema,
                    Discard(
                        TRACKS,
                        "event",
                        str(event.get("event")),
                        row_id,
                        "event name has no usable table name",
                        received_time(received),
                    ),
                )
            )
            return  # fmt: skip
        values = self._custom(shaped, schema, table, event.get("properties"), "track", common,
                              row_id, received)  # fmt: skip
        if self.wants(table):
            shaped.rows.append(Row(schema, table, row_id, values, fixed))

    def _custom(
        self,
        shaped: Shaped,
        schema: str,
        table: str,
        payload: Any,
        kind: str,
        common: dict[str, Any],
        row_id: str,
        received: Any,
    ) -> dict[str, Any]:
        """The common values plus the flattened properties or traits that may have columns."""
        values = dict(common)
        if not isinstance(payload, dict):
            return values
        flat: dict[str, Any] = {}
        problems: list[tuple[str, str, Any]] = []
        flatten(payload, "", flat, problems)
        for name in _reserved(kind, tuple(flat)):
            problems.append((name, "reserved column name", flat.pop(name)))
        values.update(flat)
        self._discard_all(shaped, schema, table, row_id, received, problems)
        return values

    def _discard_all(
        self,
        shaped: Shaped,
        schema: str,
        table: str,
        row_id: str,
        received: Any,
        problems: list[tuple[str, str, Any]],
    ) -> None:
        if not problems:
            return
        at = received_time(received)
        for column, reason, value in problems:
            shaped.discards.append((schema, Discard(table, column, as_text(value), row_id,
                                                    reason, at)))  # fmt: skip


@functools.lru_cache(maxsize=16384)
def _reserved(kind: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The property or trait names that would overwrite a fixed or ``context_`` column."""
    fixed = _FIXED[kind]
    return tuple(n for n in names if n in fixed or n in _NEVER_PROPERTIES or
                 n.startswith("context_"))  # fmt: skip


def event_table(event_name: str) -> str | None:
    """The table of a track event: its name snake_cased; ``_`` before a name that is one of
    the fixed tables' (an event named ``Users`` goes to ``_users``); None when unusable."""
    name = identifier(event_name)
    if name is None:
        return None
    return "_" + name if name in FIXED_TABLES else name


def _common_values(event: dict[str, Any], kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": event.get("messageId"),
        "received_at": event.get("receivedAt"),
        "sent_at": event.get("sentAt"),
        "timestamp": event.get("timestamp"),
        "original_timestamp": event.get("originalTimestamp"),
        "user_id": event.get("userId"),
        "anonymous_id": event.get("anonymousId"),
    }
    if kind == "track":
        name = event.get("event")
        values["event"] = identifier(str(name)) if name is not None else None
        values["event_text"] = name
    elif kind in ("page", "screen"):
        values["name"] = event.get("name")
        values["category"] = event.get("category")
    elif kind == "group":
        values["group_id"] = event.get("groupId")
    elif kind == "alias":
        values["previous_id"] = event.get("previousId")
    return {k: v for k, v in values.items() if v is not None}


def received_time(value: Any) -> datetime | None:
    """A row's ``received_at`` as a datetime, for its discards (timestamps stay text until
    their column is converted at once: :func:`~headwater.warehouses.batch.convert_column`)."""
    converted = _to_timestamp(value)
    return converted if type(converted) is datetime else None


def as_text(value: Any) -> str:
    """A value as ``_discards.column_value`` keeps it."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def iter_discard_rows(
    schema_discards: Iterable[Discard], uuid_ts: datetime
) -> Iterator[dict[str, Any]]:
    """``_discards`` rows; ``id`` is stable per (row, table, column) so reloads dedupe."""
    for d in schema_discards:
        yield {
            "id": f"{d.row_id}/{d.table}/{d.column}",
            "table_name": d.table,
            "column_name": d.column,
            "column_value": d.value,
            "row_id": d.row_id,
            "reason": d.reason,
            "received_at": d.received_at,
            "uuid_ts": uuid_ts,
        }
