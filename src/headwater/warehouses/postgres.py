"""PostgreSQL as a warehouse: each table's batch goes through ``COPY`` into a temporary
table, then one ``INSERT ... ON CONFLICT (id)`` moves it in (``DO NOTHING``: rows already
loaded stay as they are; ``users``: ``DO UPDATE`` with the latest traits).

``id`` is each table's primary key, so the dedupe is an index probe. The password is never in
the workspace file: ``password_env`` names the environment variable holding it (or use
``PGPASSWORD`` / ``~/.pgpass``, which libpq reads itself). A transaction-level advisory lock
per warehouse keeps two loaders from interleaving.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from headwater.warehouses.base import (
    STATE_SCHEMA,
    STATE_TABLE,
    StalePosition,
    WarehouseError,
    classify,
)
from headwater.warehouses.batch import Column, TablePlan
from headwater.warehouses.schema import ColumnType

SQL_TYPES: dict[ColumnType, str] = {"boolean": "boolean", "bigint": "bigint",
                                    "double": "double precision", "timestamp": "timestamptz",
                                    "text": "text"}  # fmt: skip
_FROM_SQL = {"boolean": "boolean", "bigint": "bigint", "double precision": "double",
             "timestamp with time zone": "timestamp", "text": "text"}  # fmt: skip
CONNECT_TIMEOUT_SECS = 10
_STAGE = sql.Identifier("_headwater_stage")


def _ident(*names: str) -> sql.Composable:
    return sql.Identifier(*names)


class PostgresWarehouse:
    """A :class:`~headwater.warehouses.base.Warehouse` on the database at ``dsn``."""

    def __init__(self, dsn: str, password_env: str | None = None) -> None:
        self.dsn = dsn
        self.password_env = password_env
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECS}
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise WarehouseError(
                    f"the environment variable {self.password_env} (the "
                    "warehouse's password_env) is not set",
                    "authentication",
                )
            extra["password"] = password
        try:
            self._conn = psycopg.connect(self.dsn, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise WarehouseError(
                f"cannot connect to PostgreSQL: {exc}", classify(str(exc))
            ) from exc
        state = _ident(STATE_SCHEMA, STATE_TABLE)
        self._run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(STATE_SCHEMA)))
        self._run(sql.SQL("CREATE TABLE IF NOT EXISTS {} (warehouse text PRIMARY KEY, "
                          "position bigint, synced_at timestamptz)").format(state))  # fmt: skip

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise WarehouseError("the PostgreSQL connection is not open")
        return self._conn

    def _run(self, query: sql.Composed | sql.SQL, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise WarehouseError(f"PostgreSQL: {exc}", classify(str(exc))) from exc

    def position(self, warehouse: str) -> int | None:
        rows = self._run(sql.SQL("SELECT position FROM {} WHERE warehouse = %s").format(
            _ident(STATE_SCHEMA, STATE_TABLE)), [warehouse])  # fmt: skip
        return int(rows[0][0]) if rows else None

    def set_position(self, warehouse: str, position: int) -> None:
        self._run(sql.SQL("INSERT INTO {} VALUES (%s, %s, now()) ON CONFLICT (warehouse) DO "
                          "UPDATE SET position = EXCLUDED.position, synced_at = now()").format(
                  _ident(STATE_SCHEMA, STATE_TABLE)), [warehouse, position])  # fmt: skip

    def columns(self, schema: str) -> dict[str, dict[str, ColumnType]]:
        rows = self._run(
            sql.SQL(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = %s ORDER BY table_name, ordinal_position"
            ),
            [schema],
        )
        found: dict[str, dict[str, ColumnType]] = {}
        for table, column, kind in rows:
            found.setdefault(table, {})[column] = _FROM_SQL.get(kind, "text")  # type: ignore[assignment]
        return found

    def load(self, warehouse: str, plans: list[TablePlan], after: int, position: int) -> None:
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)",
                                  [zlib.crc32(warehouse.encode())])  # fmt: skip
                current = self.position(warehouse)
                if (current or 0) != after:
                    raise StalePosition(f"the committed position is {current}, not {after}: "
                                        "another loader synced this warehouse")  # fmt: skip
                for plan in plans:
                    self._load_table(plan)
                self.set_position(warehouse, position)
        except psycopg.Error as exc:
            raise WarehouseError(f"PostgreSQL: {exc}", classify(str(exc))) from exc

    def _load_table(self, plan: TablePlan) -> None:
        conn = self.conn
        target = _ident(plan.schema, plan.table)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(plan.schema)))
        if not plan.exists:
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}{}").format(_ident(c), sql.SQL(SQL_TYPES[t]),
                                          sql.SQL(" PRIMARY KEY" if c == "id" else ""))
                for c, t in plan.new_columns.items())  # fmt: skip
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(target, cols))
        else:
            for column, kind in plan.new_columns.items():
                conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    target, _ident(column), sql.SQL(SQL_TYPES[kind])))  # fmt: skip
        names = list(plan.columns)
        stage_cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(_ident(n), sql.SQL(SQL_TYPES[plan.columns[n]]))
            for n in names)  # fmt: skip
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(_STAGE, stage_cols))
        into = sql.SQL(", ").join(_ident(n) for n in names)
        columns = [_values(plan.data[n]) for n in names]
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(_STAGE, into)) as copy:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
            cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ").format(
                target, into, into, _STAGE) + self._on_conflict(plan, names))  # fmt: skip
            cur.execute(sql.SQL("DROP TABLE {}").format(_STAGE))

    def _on_conflict(self, plan: TablePlan, names: list[str]) -> sql.Composable:
        if not plan.upsert:
            return sql.SQL("ON CONFLICT (id) DO NOTHING")
        sets = sql.SQL(", ").join(
            sql.SQL("{} = coalesce(EXCLUDED.{}, {}.{})").format(
                _ident(n), _ident(n), _ident(plan.table), _ident(n))
            for n in names if n != "id")  # fmt: skip
        return sql.SQL("ON CONFLICT (id) DO UPDATE SET {} WHERE EXCLUDED.received_at >= "
                       "{}.received_at OR {}.received_at IS NULL").format(
            sets, _ident(plan.table), _ident(plan.table))  # fmt: skip


def _values(column: Column) -> list[Any]:
    """A column as COPY's rows take it; timestamps parsed by Arrow go as ISO text (what
    ``timestamptz`` reads), as fast as that text is made."""
    if isinstance(column, pa.Array):
        if pa.types.is_timestamp(column.type):
            column = pc.cast(column, pa.string())
        return list(column.to_pylist())
    return column
