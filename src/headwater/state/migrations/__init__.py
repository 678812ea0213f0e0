"""Versioned migrations of the PostgreSQL state schema: plain SQL files run in order.

Each file here is ``NNNN_name.sql``; ``NNNN`` is its version. :func:`migrate` runs, in one
transaction per file, every file newer than what the schema's ``schema_migrations`` table
records, and records it. Several nodes starting at once take turns on an advisory lock, so a
file runs once. A schema that records a version this Headwater does not have (a newer
Headwater migrated it) is refused rather than used: a downgrade would write rows the newer
code does not expect.

A file is never edited once released; a change is a new file.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from headwater.state.sql import SCHEMA_LOCK_KEY

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class MigrationError(RuntimeError):
    """The schema cannot be brought to this Headwater's version."""


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {versions}")
    return found


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Bring the schema on ``conn``'s ``search_path`` up to date; the files it ran."""
    known = migrations()
    ran: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations(version integer PRIMARY KEY,"
                     " name text NOT NULL, applied_ms bigint NOT NULL)")  # fmt: skip
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        newest = max((m.version for m in known), default=0)
        ahead = sorted(v for v in done if v > newest)
        if ahead:
            raise MigrationError(
                f"the state schema has migrations {ahead} that this Headwater does not know "
                f"(it knows up to {newest}): a newer Headwater wrote it; run that version"
            )
        for migration in known:
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                (migration.version, migration.name, int(time.time() * 1000)),
            )
            ran.append(migration.name)
    return ran
