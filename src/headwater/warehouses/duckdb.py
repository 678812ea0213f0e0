"""The embedded warehouse: a DuckDB file, loaded from Arrow tables.

Each table's batch becomes an Arrow table registered as a view, and one ``INSERT ... SELECT``
takes the rows whose ``id`` is not in the table yet (a hash anti-join; no index, which
would slow every append). The file is opened for a sync and closed after it, so readers (an
analyst's ``duckdb`` shell, a notebook, a BI tool) can open it between syncs; while one of
them holds it, the sync fails with ``locked`` and is retried at the next interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from headwater.warehouses.base import (
    STATE_SCHEMA,
    STATE_TABLE,
    StalePosition,
    WarehouseError,
    classify,
)
from headwater.warehouses.batch import TIMESTAMP, Column, TablePlan
from headwater.warehouses.names import qualified, quote
from headwater.warehouses.schema import ColumnType

SQL_TYPES: dict[ColumnType, str] = {"boolean": "BOOLEAN", "bigint": "BIGINT",
                                    "double": "DOUBLE", "timestamp": "TIMESTAMPTZ",
                                    "text": "VARCHAR"}  # fmt: skip
ARROW_TYPES: dict[ColumnType, pa.DataType] = {"boolean": pa.bool_(), "bigint": pa.int64(),
                                              "double": pa.float64(),
                                              "timestamp": TIMESTAMP,
                                              "text": pa.string()}  # fmt: skip
_FROM_SQL = {"BOOLEAN": "boolean", "BIGINT": "bigint", "DOUBLE": "double",
             "TIMESTAMP WITH TIME ZONE": "timestamp", "VARCHAR": "text"}  # fmt: skip
_STATE = qualified(STATE_SCHEMA, STATE_TABLE)
_STAGE = "_headwater_stage"


class DuckDBWarehouse:
    """A :class:`~headwater.warehouses.base.Warehouse` on the DuckDB file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: duckdb.DuckDBPyConnection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open {self.path}: {exc}", classify(str(exc))) from exc
        self._run(f"CREATE SCHEMA IF NOT EXISTS {quote(STATE_SCHEMA)}")
        self._run(f"CREATE TABLE IF NOT EXISTS {_STATE} (warehouse VARCHAR PRIMARY KEY,"
                  " position BIGINT, synced_at TIMESTAMPTZ)")  # fmt: skip

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            raise WarehouseError(f"{self.path} is not open")
        return self._conn

    def _run(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"DuckDB {self.path}: {exc}", classify(str(exc))) from exc

    def position(self, warehouse: str) -> int | None:
        rows = self._run(f"SELECT position FROM {_STATE} WHERE warehouse = ?", [warehouse])
        return int(rows[0][0]) if rows else None

    def set_position(self, warehouse: str, position: int) -> None:
        self._run(f"INSERT OR REPLACE INTO {_STATE} VALUES (?, ?, now())", [warehouse, position])

    def columns(self, schema: str) -> dict[str, dict[str, ColumnType]]:
        rows = self._run(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = ? ORDER BY table_name, ordinal_position",
            [schema],
        )
        found: dict[str, dict[str, ColumnType]] = {}
        for table, column, kind in rows:
            found.setdefault(table, {})[column] = _FROM_SQL.get(kind, "text")  # type: ignore[assignment]
        return found

    def load(self, warehouse: str, plans: list[TablePlan], after: int, position: int) -> None:
        conn = self.conn
        try:
            conn.begin()
            current = self.position(warehouse)
            if (current or 0) != after:
                raise StalePosition(f"the committed position is {current}, not {after}: "
                                    "another loader synced this warehouse")  # fmt: skip
            for plan in plans:
                self._load_table(conn, plan)
            self.set_position(warehouse, position)
            conn.commit()
        except duckdb.Error as exc:
            conn.rollback()
            raise WarehouseError(f"DuckDB {self.path}: {exc}", classify(str(exc))) from exc
        except BaseException:
            conn.rollback()
            raise

    def _load_table(self, conn: duckdb.DuckDBPyConnection, plan: TablePlan) -> None:
        target = qualified(plan.schema, plan.table)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(plan.schema)}")
        if not plan.exists:
            cols = ", ".join(f"{quote(c)} {SQL_TYPES[t]}" for c, t in plan.new_columns.items())
            conn.execute(f"CREATE TABLE IF NOT EXISTS {target} ({cols})")
        else:
            for column, kind in plan.new_columns.items():
                conn.execute(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {quote(column)} "
                             f"{SQL_TYPES[kind]}")  # fmt: skip
        names = list(plan.columns)
        # stage columns are _c0, _c1...: no loaded column starts with "_" and a letter
        arrow = pa.table({f"_c{i}": _arrow(plan.data[n], ARROW_TYPES[plan.columns[n]])
                          for i, n in enumerate(names)})  # fmt: skip
        conn.register(_STAGE, arrow)
        try:
            into = ", ".join(quote(n) for n in names)
            select = ", ".join(f"s._c{i}" for i in range(len(names)))
            id_col = f"_c{names.index('id')}"
            if plan.upsert:
                self._update_users(conn, target, names)
            conn.execute(
                f"INSERT INTO {target} ({into}) SELECT {select} FROM {_STAGE} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE t.id = s.{id_col})"
            )
        finally:
            conn.unregister(_STAGE)

    def _update_users(self, conn: duckdb.DuckDBPyConnection, target: str, names: list[str]) -> None:
        """The users already there take the batch's traits (a trait it lacks is kept), unless
        the batch's identify is older than what the row holds (a backfill)."""
        sets = ", ".join(
            f"{quote(n)} = coalesce(s._c{i}, {quote(n)})" for i, n in enumerate(names) if n != "id"
        )
        idx, rec = names.index("id"), names.index("received_at")
        conn.execute(
            f"UPDATE {target} SET {sets} FROM {_STAGE} s WHERE {target}.id = s._c{idx}"
            f" AND (s._c{rec} >= {target}.received_at OR {target}.received_at IS NULL)"
        )


def _arrow(values: Column, kind: pa.DataType) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values, kind)
