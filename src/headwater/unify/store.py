"""The profile store of one space: the identity graph, traits, event references, history.

The interface (:class:`ProfileStore`) is what the graph, the traits engine, the consumer and
the Profile API use; :class:`SqliteProfileStore` is the embedded backend (one file per
space, ``<data-dir>/unify/<space>.sqlite``, WAL: one writer — the consumer — and readers in
the gateway and the CLI). A PostgreSQL backend implements the same methods on the same
tables.

Layout:

- ``profiles``: one row per ``segment_id`` ever made. ``canonical`` is NULL for a live
  profile and names the survivor for one merged away (always the final survivor: a merge
  re-points the rows that pointed at the loser), so any old id still resolves.
- ``identifiers``: (type, value) → segment_id of the live profile, with when, where and by
  which message it was first seen. ``id_counts`` keeps the count per type per profile, so a
  limit check reads one row, never counts a thousand.
- ``traits``: per profile and name the latest value (JSON), its time, source and message;
  ``computed`` marks computed traits. ``trait_state``: each computed trait's partial
  aggregates (traits.py), with the hour its window next drops a bucket (``expires_hour``).
- ``events``: references into the log (offset, messageId, type, name, time), not copies.
- ``links``: the accounts a profile belongs to (each ``groupId`` its group calls named),
  with when, where and by which message the link was first seen (``/links``).
- ``history``: created / merged / refused / limit rows with the messageId and offset that
  caused them and the identifiers involved (JSON ``detail``). ``counters``: blocked values
  and refusals per kind, identifier type and value.
- ``position``: the last log offset applied, committed with the batch it ends.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import psycopg

from headwater.sqlite_files import open_store
from headwater.state import postgres
from headwater.state.sql import SCHEMA_LOCK_KEY, PostgresConn
from headwater.unify.identifiers import Identifier

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

SCHEMA_VERSION = 1
AUDIENCE_SOURCE = "audience"
"""The ``source`` of a member's ``<key>: true`` trait: how the Profile API tells its class."""
UNIFY_DIR = "unify"
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # in ASCII order
_KSUID_EPOCH = 1_400_000_000  # KSUID's epoch (2014-05-13), in seconds

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1), offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    segment_id TEXT PRIMARY KEY, canonical TEXT, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, first_message_id TEXT, first_source TEXT,
    last_message_id TEXT, last_source TEXT, merges INTEGER NOT NULL DEFAULT 0,
    identifiers INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS profiles_canonical ON profiles (canonical) WHERE canonical IS NOT NULL;
CREATE TABLE IF NOT EXISTS identifiers (
    type TEXT NOT NULL, value TEXT NOT NULL, segment_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL, source TEXT, first_message_id TEXT,
    PRIMARY KEY (type, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identifiers_profile ON identifiers (segment_id, type);
CREATE TABLE IF NOT EXISTS id_counts (
    segment_id TEXT NOT NULL, type TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (segment_id, type)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traits (
    segment_id TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    updated_ms INTEGER NOT NULL, source TEXT, message_id TEXT, computed INTEGER NOT NULL,
    PRIMARY KEY (segment_id, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trait_state (
    segment_id TEXT NOT NULL, trait TEXT NOT NULL, state BLOB NOT NULL, expires_hour INTEGER,
    PRIMARY KEY (segment_id, trait)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trait_state_expiry ON trait_state (expires_hour)
    WHERE expires_hour IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    offset INTEGER PRIMARY KEY, segment_id TEXT NOT NULL, message_id TEXT NOT NULL,
    type TEXT NOT NULL, name TEXT, ts_ms INTEGER NOT NULL, source TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_profile ON events (segment_id, offset);
DROP INDEX IF EXISTS events_message;
CREATE TABLE IF NOT EXISTS links (
    segment_id TEXT NOT NULL, collection TEXT NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL,
    created_ms INTEGER NOT NULL, source TEXT, first_message_id TEXT,
    PRIMARY KEY (segment_id, collection, type, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    segment_id TEXT, other_id TEXT, message_id TEXT, offset INTEGER, detail BLOB);
CREATE INDEX IF NOT EXISTS history_profile ON history (segment_id);
CREATE INDEX IF NOT EXISTS history_other ON history (other_id) WHERE other_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS history_message ON history (message_id);
CREATE INDEX IF NOT EXISTS history_kind ON history (kind, id);
CREATE TABLE IF NOT EXISTS audience_members (
    segment_id TEXT NOT NULL, audience TEXT NOT NULL, since_ms INTEGER NOT NULL,
    message_id TEXT, PRIMARY KEY (segment_id, audience)) WITHOUT ROWID;
DROP INDEX IF EXISTS audience_members_audience;
CREATE INDEX IF NOT EXISTS audience_members_since
    ON audience_members (audience, since_ms, segment_id);
CREATE TABLE IF NOT EXISTS audience_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, audience TEXT NOT NULL,
    segment_id TEXT NOT NULL, entered INTEGER NOT NULL, message_id TEXT);
CREATE INDEX IF NOT EXISTS audience_changes_audience ON audience_changes (audience, id);
CREATE TABLE IF NOT EXISTS counters (
    kind TEXT NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL,
    last_message_id TEXT, last_ms INTEGER, PRIMARY KEY (kind, type, value)) WITHOUT ROWID;
"""


_OWNERS: dict[int, str] = {}  # the lookup of n identifiers at once, by n


def new_segment_id(now: float | None = None) -> str:
    """``use_`` and a KSUID, as Segment's profile ids: 27 base-62 digits of 4 bytes of
    seconds since 2014-05-13 then 16 random bytes. The ids sort by creation time, so the
    rows of profiles made together (keyed by segment_id in every table) sit together on
    disk: a batch of events touches a few pages, not one per profile."""
    seconds = int(time.time() if now is None else now) - _KSUID_EPOCH
    number = (seconds & 0xFFFFFFFF) << 128 | int.from_bytes(secrets.token_bytes(16))
    digits = []
    for _ in range(27):  # 160 bits need 27 base-62 digits; most significant first
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "use_" + "".join(reversed(digits))


@dataclass(frozen=True, slots=True)
class Profile:
    segment_id: str
    created_ms: int
    updated_ms: int
    first_message_id: str | None
    first_source: str | None
    last_message_id: str | None
    last_source: str | None
    merges: int
    identifiers: int
    seq: int  # the order profiles were made in (the oldest survives a merge)


@dataclass(frozen=True, slots=True)
class ExternalId:
    type: str
    value: str
    created_ms: int
    source: str | None
    first_message_id: str | None


@dataclass(frozen=True, slots=True)
class Link:
    """A profile's link to a profile of another collection (a user's account)."""

    collection: str
    type: str
    value: str
    created_ms: int
    source: str | None
    first_message_id: str | None


@dataclass(frozen=True, slots=True)
class Trait:
    name: str
    value: Any
    updated_ms: int
    source: str | None
    message_id: str | None
    computed: bool


@dataclass(frozen=True, slots=True)
class EventRef:
    offset: int
    message_id: str
    type: str
    name: str | None
    ts_ms: int
    source: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    at_ms: int
    kind: str  # created | merged | refused | limit
    segment_id: str | None
    other_id: str | None
    message_id: str | None
    offset: int | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "at_ms": self.at_ms, "segment_id": self.segment_id,
            "other_id": self.other_id, "message_id": self.message_id, "offset": self.offset,
            **self.detail,
        }  # fmt: skip


class ProfileStore(Protocol):
    """What the graph, the traits engine, the consumer and the Profile API need of a store.

    Writes happen between ``begin()`` and ``commit()``, from one writer (the consumer);
    reads may come from any process."""

    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def position(self) -> int: ...
    def set_position(self, offset: int) -> None: ...
    def owners(self, identifiers: Sequence[Identifier]) -> dict[Identifier, str]: ...
    def id_counts(self, segment_id: str) -> dict[str, int]: ...
    def profile(self, segment_id: str) -> Profile | None: ...
    def create(self, segment_id: str, at_ms: int, message_id: str, source: str) -> None: ...
    def attach(self, segment_id: str, identifiers: Sequence[Identifier], at_ms: int,
               message_id: str, source: str) -> None: ...  # fmt: skip
    def merge(self, survivor: str, loser: str, at_ms: int) -> None: ...
    def touch(self, touched: Sequence[tuple[str, int, str, str]]) -> None: ...
    def record(self, kind: str, segment_id: str | None, other_id: str | None, message_id: str,
               offset: int, at_ms: int, detail: dict[str, Any]) -> None: ...  # fmt: skip
    def count(self, kind: str, id_type: str, value: str, message_id: str, at_ms: int) -> None: ...
    def set_traits(self, segment_id: str, traits: dict[str, Any], at_ms: int, source: str,
                   message_id: str, computed: bool = False) -> None: ...  # fmt: skip
    def add_events(self, refs: Sequence[tuple[str, EventRef]]) -> None: ...
    def add_links(self, links: Sequence[tuple[str, Link]]) -> None: ...
    def set_computed(self, rows: Sequence[tuple[str, str, Any, int, str, str]]) -> None: ...
    def trait_states(self, segment_id: str) -> dict[str, tuple[Any, int | None]]: ...
    def put_trait_states(self, rows: Sequence[tuple[str, str, Any, int | None]]) -> None: ...
    def drop_trait_states(self, segment_id: str) -> None: ...
    def expiring(self, hour: int, limit: int) -> list[str]: ...
    def resolve(self, segment_id: str) -> str | None: ...
    def find(self, identifier: Identifier) -> str | None: ...
    def external_ids(self, segment_id: str) -> list[ExternalId]: ...
    def links(self, segment_id: str, limit: int, skip: int = 0) -> list[Link]: ...
    def traits(self, segment_id: str) -> list[Trait]: ...
    def events(self, segment_id: str, limit: int, before: int | None,
               after: int | None) -> list[EventRef]: ...  # fmt: skip
    def history(self, segment_id: str) -> list[HistoryEntry]: ...
    def history_of_message(self, message_id: str) -> list[HistoryEntry]: ...
    def profile_of_event(self, offset: int) -> str | None: ...
    def problems(self, since_ms: int, limit: int) -> list[HistoryEntry]: ...
    def counters(self) -> list[tuple[str, str, str, int, str | None]]: ...
    def counter_totals(self) -> list[tuple[str, str, int]]: ...
    def delete(self, segment_id: str) -> int: ...
    def live_profiles(self, after: str, limit: int) -> list[str]: ...
    def trait_values(self, segment_id: str, names: Sequence[str]) -> dict[str, Any]: ...
    def states_with_prefix(self, segment_id: str, prefix: str) -> dict[str, Any]: ...
    def audience_hourly(self, audience: str, since_ms: int) -> list[tuple[int, int, int]]: ...
    def meta(self, key: str) -> Any: ...
    def set_meta(self, key: str, value: Any) -> None: ...
    def meta_keys(self, prefix: str) -> list[str]: ...
    def forget(self, meta_keys: Sequence[str], traits: Sequence[str]) -> None: ...
    def rename_states(self, old: str, new: str) -> None: ...
    def memberships(self, segment_id: str) -> dict[str, int]: ...
    def change_memberships(
        self,
        entered: Sequence[tuple[str, str, int, str | None]],
        exited: Sequence[tuple[str, str, int, str | None]],
    ) -> None: ...
    def audience_sizes(self) -> dict[str, int]: ...
    def audience_members(
        self, audience: str, limit: int, after: tuple[int, str] = (-1, "")
    ) -> list[tuple[str, int]]: ...
    def audience_flow(self, audience: str, since_ms: int) -> tuple[int, int]: ...
    def changes_after(
        self, after: int, limit: int
    ) -> list[tuple[int, int, str, str, bool, str | None]]: ...
    def audience_changes(
        self, audience: str, limit: int
    ) -> list[tuple[int, str, bool, str | None]]: ...
    def close(self) -> None: ...


def store_path(data_dir: Path, space: str) -> Path:
    return data_dir / UNIFY_DIR / f"{space}.sqlite"


class NotTheWriter(RuntimeError):
    """Another node holds the space's store for writing (PostgreSQL: one writer per space)."""


class PositionMoved(RuntimeError):
    """The stored position is not the one the batch was read after: another writer (or a
    COMMIT whose answer was lost) moved it; read it again."""


class SqliteProfileStore:
    """The embedded backend. Not thread-safe: each thread (the consumer's, a reader's) opens
    its own."""

    shared = False  # several nodes' processes use the store (PostgreSQL)
    _SEQ = "rowid"  # the order profiles were made in
    _GREATEST = "max"  # the larger of two values
    _TRUE = "'true'"  # an audience trait's stored value (JSON ``true``)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Any = open_store(path, SCHEMA, what="profile store", version=SCHEMA_VERSION)

    def try_writer(self) -> bool:
        """Whether this process may write the store (always, for a file: one process opens
        it for writing)."""
        return True

    def interrupt(self) -> None:
        """Make a call waiting for the store give up (nothing waits on a file)."""

    # the savepoint of one event (SQLite and PostgreSQL both read these statements)
    def savepoint(self) -> None:
        self._db.execute("SAVEPOINT event")

    def rollback_to_savepoint(self) -> None:
        self._db.execute("ROLLBACK TO SAVEPOINT event")
        self._db.execute("RELEASE SAVEPOINT event")

    def release_savepoint(self) -> None:
        self._db.execute("RELEASE SAVEPOINT event")

    def derive_audience_traits(self) -> None:
        """Drop the audience traits that stores written before 2026-12-07 kept in ``traits``
        (they are read from the members now); once per store, by its writer."""
        if self.meta("audience_traits") == "derived":
            return
        self.begin()
        self._db.execute("DELETE FROM traits WHERE computed = 1 AND source = ?",
                         (AUDIENCE_SOURCE,))  # fmt: skip
        self.set_meta("audience_traits", "derived")
        self.commit()

    # -------------------------------------------------------------- transactions, position

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def position(self) -> int:
        row = self._db.execute('SELECT "offset" FROM position WHERE id = 1').fetchone()
        return int(row[0]) if row else 0

    def set_position(self, offset: int) -> None:
        self._db.execute('INSERT INTO position VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET '
                         '"offset" = excluded."offset"', (offset,))  # fmt: skip

    # -------------------------------------------------------------- the graph

    def owners(self, identifiers: Sequence[Identifier]) -> dict[Identifier, str]:
        if len(identifiers) == 1:
            row = self._db.execute("SELECT segment_id FROM identifiers WHERE type = ? AND "
                                   "value = ?", identifiers[0]).fetchone()  # fmt: skip
            return {identifiers[0]: row[0]} if row else {}
        sql = _OWNERS.get(len(identifiers))
        if sql is None:
            one = "SELECT type, value, segment_id FROM identifiers WHERE type = ? AND value = ?"
            sql = _OWNERS[len(identifiers)] = " UNION ALL ".join([one] * len(identifiers))
        args = [part for ident in identifiers for part in ident]
        return {(t, v): s for t, v, s in self._db.execute(sql, args)}

    def id_counts(self, segment_id: str) -> dict[str, int]:
        rows = self._db.execute("SELECT type, n FROM id_counts WHERE segment_id = ?",
                                (segment_id,))  # fmt: skip
        return dict(rows.fetchall())

    def profile(self, segment_id: str) -> Profile | None:
        row = self._db.execute(
            "SELECT segment_id, created_ms, updated_ms, first_message_id, first_source, "
            f"last_message_id, last_source, merges, identifiers, {self._SEQ} FROM profiles "
            "WHERE segment_id = ? AND canonical IS NULL", (segment_id,)
        ).fetchone()  # fmt: skip
        return Profile(*row) if row else None

    def create(self, segment_id: str, at_ms: int, message_id: str, source: str) -> None:
        self._db.execute(
            "INSERT INTO profiles (segment_id, created_ms, updated_ms, first_message_id, "
            "first_source, last_message_id, last_source) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (segment_id, at_ms, at_ms, message_id, source, message_id, source),
        )

    def attach(self, segment_id: str, identifiers: Sequence[Identifier], at_ms: int,
               message_id: str, source: str) -> None:  # fmt: skip
        db = self._db
        db.executemany(
            "INSERT INTO identifiers VALUES (?, ?, ?, ?, ?, ?)",
            [(t, v, segment_id, at_ms, source, message_id) for t, v in identifiers],
        )
        db.executemany(
            "INSERT INTO id_counts VALUES (?, ?, 1) ON CONFLICT (segment_id, type) "
            "DO UPDATE SET n = id_counts.n + 1", [(segment_id, t) for t, _ in identifiers],
        )  # fmt: skip
        db.execute("UPDATE profiles SET identifiers = identifiers + ? WHERE segment_id = ?",
                   (len(identifiers), segment_id))  # fmt: skip

    def merge(self, survivor: str, loser: str, at_ms: int) -> None:
        db = self._db
        db.execute("UPDATE identifiers SET segment_id = ? WHERE segment_id = ?", (survivor, loser))
        db.execute(
            "INSERT INTO id_counts SELECT ?, type, n FROM id_counts WHERE segment_id = ? AND "
            "true ON CONFLICT (segment_id, type) DO UPDATE SET n = id_counts.n + excluded.n",
            (survivor, loser),
        )
        db.execute("DELETE FROM id_counts WHERE segment_id = ?", (loser,))
        db.execute(
            "INSERT INTO traits SELECT ?, name, value, updated_ms, source, message_id, computed "
            "FROM traits WHERE segment_id = ? AND computed = 0 AND true "
            "ON CONFLICT (segment_id, name) DO UPDATE SET value = excluded.value, "
            "updated_ms = excluded.updated_ms, source = excluded.source, "
            "message_id = excluded.message_id WHERE excluded.updated_ms > traits.updated_ms",
            (survivor, loser),
        )
        db.execute("DELETE FROM traits WHERE segment_id = ?", (loser,))
        db.execute("UPDATE events SET segment_id = ? WHERE segment_id = ?", (survivor, loser))
        db.execute(
            "INSERT INTO links SELECT ?, collection, type, value, created_ms, source, "
            "first_message_id FROM links WHERE segment_id = ? AND true ON CONFLICT (segment_id, "
            "collection, type, value) DO UPDATE SET "
            "created_ms = excluded.created_ms, source = excluded.source, first_message_id = "
            "excluded.first_message_id WHERE excluded.created_ms < links.created_ms",
            (survivor, loser),
        )
        db.execute("DELETE FROM links WHERE segment_id = ?", (loser,))
        # the loser's memberships end with it (not as exits: it is the survivor now, whose
        # memberships are worked out again)
        db.execute("DELETE FROM audience_members WHERE segment_id = ?", (loser,))
        row = db.execute("SELECT merges, identifiers, created_ms, first_message_id, first_source "
                         "FROM profiles WHERE segment_id = ?", (loser,)).fetchone()  # fmt: skip
        db.execute(
            "UPDATE profiles SET merges = merges + ? + 1, identifiers = identifiers + ?, "
            f"updated_ms = {self._GREATEST}(updated_ms, ?) WHERE segment_id = ?",
            (row[0], row[1], at_ms, survivor),
        )
        db.execute("UPDATE profiles SET canonical = ? WHERE canonical = ? OR segment_id = ?",
                   (survivor, loser, loser))  # fmt: skip

    def touch(self, touched: Sequence[tuple[str, int, str, str]]) -> None:
        """(segment_id, time, messageId, source) of the last event each profile took, oldest
        first; a profile merged away since hands them to its survivor."""
        self._db.executemany(
            f"UPDATE profiles SET updated_ms = {self._GREATEST}(updated_ms, ?), "
            "last_message_id = ?, last_source = ? WHERE segment_id = (SELECT "
            "coalesce(canonical, segment_id) FROM profiles WHERE segment_id = ?)",
            [(at, mid, source, seg) for seg, at, mid, source in touched],
        )  # fmt: skip

    def record(self, kind: str, segment_id: str | None, other_id: str | None, message_id: str,
               offset: int, at_ms: int, detail: dict[str, Any]) -> None:  # fmt: skip
        self._db.execute(
            'INSERT INTO history (at_ms, kind, segment_id, other_id, message_id, "offset", '
            "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at_ms, kind, segment_id, other_id, message_id, offset, orjson.dumps(detail)),
        )

    def count(self, kind: str, id_type: str, value: str, message_id: str, at_ms: int) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (kind, type, value) "
            "DO UPDATE SET n = counters.n + 1, last_message_id = excluded.last_message_id, "
            "last_ms = excluded.last_ms", (kind, id_type, value, message_id, at_ms)
        )  # fmt: skip

    # -------------------------------------------------------------- traits and events

    def set_traits(self, segment_id: str, traits: dict[str, Any], at_ms: int, source: str,
                   message_id: str, computed: bool = False) -> None:  # fmt: skip
        """Each trait is replaced unless the stored one is newer; ``None`` removes it (an
        identify with the trait set to null, as Segment does)."""
        db = self._db
        removed = [(segment_id, k, at_ms) for k, v in traits.items() if v is None]
        kept = [
            (segment_id, k, orjson.dumps(v), at_ms, source, message_id, int(computed))
            for k, v in traits.items() if v is not None
        ]  # fmt: skip
        if removed:
            db.executemany("DELETE FROM traits WHERE segment_id = ? AND name = ? AND "
                           "updated_ms <= ?", removed)  # fmt: skip
        db.executemany(
            "INSERT INTO traits VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (segment_id, name) "
            "DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms, "
            "source = excluded.source, message_id = excluded.message_id, "
            "computed = excluded.computed WHERE excluded.updated_ms >= traits.updated_ms",
            kept,
        )

    def set_computed(self, rows: Sequence[tuple[str, str, Any, int, str, str]]) -> None:
        """Computed values: (segment_id, key, value, time, source, messageId); None removes."""
        db = self._db
        gone = [(seg, key) for seg, key, value, *_ in rows if value is None]
        if gone:
            db.executemany("DELETE FROM traits WHERE segment_id = ? AND name = ?", gone)
        db.executemany(
            "INSERT INTO traits VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (segment_id, name) "
            "DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms, "
            "source = excluded.source, message_id = excluded.message_id, computed = 1",
            [(seg, key, orjson.dumps(value), at, source, mid)
             for seg, key, value, at, source, mid in rows if value is not None],
        )  # fmt: skip

    def add_events(self, refs: Sequence[tuple[str, EventRef]]) -> None:
        """(segment_id, reference) pairs, each segment_id a live profile (the caller maps
        the profiles merged away in its transaction to their survivors)."""
        self._db.executemany(
            'INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT ("offset") DO UPDATE '
            "SET segment_id = excluded.segment_id, message_id = excluded.message_id, "
            "type = excluded.type, name = excluded.name, ts_ms = excluded.ts_ms, "
            "source = excluded.source",
            [(r.offset, s, r.message_id, r.type, r.name, r.ts_ms, r.source) for s, r in refs],
        )

    def add_links(self, links: Sequence[tuple[str, Link]]) -> None:
        """(segment_id, link) pairs, oldest first: a link already known keeps its first
        sighting; a profile merged away since hands them to its survivor."""
        self._db.executemany(
            "INSERT INTO links VALUES ((SELECT coalesce(canonical, segment_id) FROM "
            "profiles WHERE segment_id = ?), ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(s, k.collection, k.type, k.value, k.created_ms, k.source, k.first_message_id)
             for s, k in links],
        )  # fmt: skip

    def trait_states(self, segment_id: str) -> dict[str, tuple[Any, int | None]]:
        rows = self._db.execute("SELECT trait, state, expires_hour FROM trait_state "
                                "WHERE segment_id = ?", (segment_id,))  # fmt: skip
        return {t: (orjson.loads(s), e) for t, s, e in rows}

    def put_trait_states(self, rows: Sequence[tuple[str, str, Any, int | None]]) -> None:
        """(segment_id, trait, state, the hour it next drops a bucket) for each row."""
        self._db.executemany(
            "INSERT INTO trait_state VALUES (?, ?, ?, ?) ON CONFLICT (segment_id, trait) "
            "DO UPDATE SET state = excluded.state, expires_hour = excluded.expires_hour",
            [(g, t, orjson.dumps(s), e) for g, t, s, e in rows],
        )

    def drop_trait_states(self, segment_id: str) -> None:
        self._db.execute("DELETE FROM trait_state WHERE segment_id = ?", (segment_id,))

    def expiring(self, hour: int, limit: int) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT segment_id FROM trait_state WHERE expires_hour <= ? LIMIT ?",
            (hour, limit),
        )
        return [r[0] for r in rows]

    # -------------------------------------------------------------- reads

    def resolve(self, segment_id: str) -> str | None:
        row = self._db.execute("SELECT coalesce(canonical, segment_id) FROM profiles "
                               "WHERE segment_id = ?", (segment_id,)).fetchone()  # fmt: skip
        return row[0] if row else None

    def find(self, identifier: Identifier) -> str | None:
        row = self._db.execute("SELECT segment_id FROM identifiers WHERE type = ? AND value = ?",
                               identifier).fetchone()  # fmt: skip
        return row[0] if row else None

    def external_ids(self, segment_id: str) -> list[ExternalId]:
        rows = self._db.execute(
            "SELECT type, value, created_ms, source, first_message_id FROM identifiers "
            "WHERE segment_id = ? ORDER BY created_ms, type, value", (segment_id,)
        )  # fmt: skip
        return [ExternalId(*r) for r in rows]

    def links(self, segment_id: str, limit: int, skip: int = 0) -> list[Link]:
        """Oldest first, ``limit`` of them after the first ``skip``."""
        rows = self._db.execute(
            "SELECT collection, type, value, created_ms, source, first_message_id FROM links "
            "WHERE segment_id = ? ORDER BY created_ms, value LIMIT ? OFFSET ?",
            (segment_id, limit, skip),
        )
        return [Link(*r) for r in rows]

    def traits(self, segment_id: str) -> list[Trait]:
        """The profile's traits by name, its audiences' among them (``<key>: true``, from
        the members: not stored twice)."""
        rows = self._db.execute(
            "SELECT name, value, updated_ms, source, message_id, computed FROM traits "
            f"WHERE segment_id = ? UNION ALL SELECT audience, {self._TRUE}, since_ms, ?, "
            "message_id, 1 FROM audience_members WHERE segment_id = ? ORDER BY 1, 6",
            (segment_id, AUDIENCE_SOURCE, segment_id),
        )  # fmt: skip
        return [Trait(n, orjson.loads(v), u, s, m, bool(c)) for n, v, u, s, m, c in rows]

    def events(self, segment_id: str, limit: int, before: int | None = None,
               after: int | None = None) -> list[EventRef]:  # fmt: skip
        """Newest first below ``before``, or oldest first above ``after``."""
        if after is not None:
            sql = ('SELECT "offset", message_id, type, name, ts_ms, source FROM events WHERE '
                   'segment_id = ? AND "offset" > ? ORDER BY "offset" LIMIT ?')  # fmt: skip
            args: tuple[Any, ...] = (segment_id, after, limit)
        else:
            sql = ('SELECT "offset", message_id, type, name, ts_ms, source FROM events WHERE '
                   'segment_id = ? AND "offset" < ? ORDER BY "offset" DESC LIMIT ?')  # fmt: skip
            args = (segment_id, before if before is not None else 2**62, limit)
        return [EventRef(*r) for r in self._db.execute(sql, args)]

    def _entries(self, sql: str, args: Iterable[Any]) -> list[HistoryEntry]:
        rows = self._db.execute(sql, tuple(args))
        return [HistoryEntry(i, a, k, s, o, m, off, orjson.loads(d) if d else {})
                for i, a, k, s, o, m, off, d in rows]  # fmt: skip

    def history(self, segment_id: str) -> list[HistoryEntry]:
        """Every entry of the profile and of the profiles merged into it, oldest first."""
        ids = [segment_id, *(r[0] for r in self._db.execute(
            "SELECT segment_id FROM profiles WHERE canonical = ?", (segment_id,)))]  # fmt: skip
        marks = ",".join("?" * len(ids))
        return self._entries(
            'SELECT id, at_ms, kind, segment_id, other_id, message_id, "offset", detail FROM '
            f"history WHERE segment_id IN ({marks}) OR other_id IN ({marks}) ORDER BY id",
            [*ids, *ids],
        )

    def history_of_message(self, message_id: str) -> list[HistoryEntry]:
        return self._entries('SELECT id, at_ms, kind, segment_id, other_id, message_id, "offset", '
                             "detail FROM history WHERE message_id = ? ORDER BY id",
                             (message_id,))  # fmt: skip

    def profile_of_event(self, offset: int) -> str | None:
        """The profile the event at this log offset joined (events are keyed by offset: an
        index of messageIds would cost a random page write per event)."""
        row = self._db.execute('SELECT segment_id FROM events WHERE "offset" = ?',
                               (offset,)).fetchone()  # fmt: skip
        return row[0] if row else None

    def problems(self, since_ms: int, limit: int) -> list[HistoryEntry]:
        return self._entries(
            'SELECT id, at_ms, kind, segment_id, other_id, message_id, "offset", detail FROM '
            "history WHERE kind IN ('refused', 'limit') AND at_ms >= ? ORDER BY id DESC LIMIT ?",
            (since_ms, limit),
        )

    def counters(self) -> list[tuple[str, str, str, int, str | None]]:
        rows = self._db.execute("SELECT kind, type, value, n, last_message_id FROM counters "
                                "ORDER BY n DESC")  # fmt: skip
        return [tuple(r) for r in rows]

    def counter_totals(self) -> list[tuple[str, str, int]]:
        """(kind, identifier type, how many times) over every value: what /metrics shows."""
        rows = self._db.execute("SELECT kind, type, sum(n) FROM counters GROUP BY kind, type "
                                "ORDER BY kind, type")  # fmt: skip
        return [(str(k), str(t), int(n)) for k, t, n in rows]

    # -------------------------------------------------------------- deletion

    def delete(self, segment_id: str) -> int:
        """Remove a live profile, the profiles merged into it, their identifiers, traits
        (computed ones too), trait states, event references, links and history. The events stay
        in the log. Returns how many identifiers went."""
        db = self._db
        ids = [segment_id, *(r[0] for r in db.execute(
            "SELECT segment_id FROM profiles WHERE canonical = ?", (segment_id,)))]  # fmt: skip
        marks = ",".join("?" * len(ids))
        gone = db.execute(f"DELETE FROM identifiers WHERE segment_id IN ({marks})", ids).rowcount
        for table in (
            "id_counts",
            "traits",
            "trait_state",
            "events",
            "links",
            "audience_members",
            "audience_changes",
        ):
            db.execute(f"DELETE FROM {table} WHERE segment_id IN ({marks})", ids)
        db.execute(f"DELETE FROM history WHERE segment_id IN ({marks}) OR other_id IN ({marks})",
                   [*ids, *ids])  # fmt: skip
        db.execute(f"DELETE FROM profiles WHERE segment_id IN ({marks})", ids)
        return int(gone)

    # ------------------------------------------------------------------------ audiences

    def live_profiles(self, after: str, limit: int) -> list[str]:
        """Live profiles' segment_ids above ``after``, in order (an audience's sweep)."""
        rows = self._db.execute(
            "SELECT segment_id FROM profiles WHERE canonical IS NULL AND segment_id > ? "
            "ORDER BY segment_id LIMIT ?", (after, limit))  # fmt: skip
        return [r[0] for r in rows]

    def trait_values(self, segment_id: str, names: Sequence[str]) -> dict[str, Any]:
        """The values of these traits of the profile (the ones an audience reads)."""
        marks = ",".join("?" * len(names))
        rows = self._db.execute(f"SELECT name, value FROM traits WHERE segment_id = ? AND "
                                f"name IN ({marks})", (segment_id, *names))  # fmt: skip
        return {n: orjson.loads(v) for n, v in rows}

    def states_with_prefix(self, segment_id: str, prefix: str) -> dict[str, Any]:
        """The trait states whose keys start with ``prefix`` (an audience's counters)."""
        rows = self._db.execute(
            "SELECT trait, state FROM trait_state WHERE segment_id = ? AND trait >= ? AND "
            "trait < ?", (segment_id, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))  # fmt: skip
        return {t: orjson.loads(s) for t, s in rows}

    def audience_hourly(self, audience: str, since_ms: int) -> list[tuple[int, int, int]]:
        """(hour, entries, exits) since ``since_ms``, oldest first, hours without a change
        left out."""
        rows = self._db.execute(
            "SELECT at_ms / 3600000, sum(entered), sum(1 - entered) FROM audience_changes "
            "WHERE audience = ? AND at_ms >= ? GROUP BY 1 ORDER BY 1",
            (audience, since_ms))  # fmt: skip
        return [(int(h), int(e), int(x)) for h, e, x in rows]

    def meta(self, key: str) -> Any:
        """A value kept with the store (JSON), None when never set."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                         "value = excluded.value", (key, orjson.dumps(value).decode()))  # fmt: skip

    def meta_keys(self, prefix: str) -> list[str]:
        rows = self._db.execute("SELECT key FROM meta WHERE substr(key, 1, ?) = ?",
                                (len(prefix), prefix))  # fmt: skip
        return [k for (k,) in rows]

    def forget(self, meta_keys: Sequence[str], traits: Sequence[str]) -> None:
        """Drop these meta values, and every profile's state of these (hidden) traits."""
        self._db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in meta_keys])
        if traits:  # one pass over the table (it has no index by trait: this runs rarely)
            marks = ", ".join("?" * len(traits))
            self._db.execute(f"DELETE FROM trait_state WHERE trait IN ({marks})", list(traits))

    def rename_states(self, old: str, new: str) -> None:
        """Every profile's state of the (hidden) trait ``old`` becomes ``new``'s."""
        self._db.execute("DELETE FROM trait_state WHERE trait = ? AND segment_id IN (SELECT "
                         "segment_id FROM trait_state WHERE trait = ?)", (new, old))  # fmt: skip
        self._db.execute("UPDATE trait_state SET trait = ? WHERE trait = ?", (new, old))

    def memberships(self, segment_id: str) -> dict[str, int]:
        """The audiences the profile is in, each with the time it entered."""
        rows = self._db.execute("SELECT audience, since_ms FROM audience_members WHERE "
                                "segment_id = ?", (segment_id,))  # fmt: skip
        return dict(rows.fetchall())

    def change_memberships(self, entered: Sequence[tuple[str, str, int, str | None]],
                           exited: Sequence[tuple[str, str, int, str | None]]) -> None:  # fmt: skip
        """(audience, segment_id, time, messageId) entries and exits: the members, and each
        change in ``audience_changes`` (what activation and the figures read)."""
        db = self._db
        db.executemany("INSERT INTO audience_members VALUES (?, ?, ?, ?) ON CONFLICT "
                       "(segment_id, audience) DO UPDATE SET since_ms = excluded.since_ms, "
                       "message_id = excluded.message_id",
                       [(seg, aud, at, mid) for aud, seg, at, mid in entered])  # fmt: skip
        db.executemany("DELETE FROM audience_members WHERE segment_id = ? AND audience = ?",
                       [(seg, aud) for aud, seg, _, _ in exited])  # fmt: skip
        db.executemany(
            "INSERT INTO audience_changes (at_ms, audience, segment_id, entered, message_id) "
            "VALUES (?, ?, ?, ?, ?)",
            [(at, aud, seg, 1, mid) for aud, seg, at, mid in entered]
            + [(at, aud, seg, 0, mid) for aud, seg, at, mid in exited],
        )

    def audience_sizes(self) -> dict[str, int]:
        rows = self._db.execute("SELECT audience, count(*) FROM audience_members GROUP BY audience")
        return dict(rows.fetchall())

    def audience_members(self, audience: str, limit: int,
                         after: tuple[int, str] = (-1, "")) -> list[tuple[str, int]]:  # fmt: skip
        """(segment_id, since) of members in the order they entered, after ``after`` (a
        member's (since, segment_id)). Kept in that order, the index takes a batch's entries
        at its end: by segment_id, each entry would land on a page of its own."""
        rows = self._db.execute(
            "SELECT segment_id, since_ms FROM audience_members WHERE audience = ? AND "
            "(since_ms, segment_id) > (?, ?) ORDER BY since_ms, segment_id LIMIT ?",
            (audience, *after, limit))  # fmt: skip
        return [(str(seg), int(since)) for seg, since in rows]

    def audience_flow(self, audience: str, since_ms: int) -> tuple[int, int]:
        """Entries and exits since ``since_ms``."""
        row = self._db.execute(
            "SELECT coalesce(sum(entered), 0), coalesce(sum(1 - entered), 0) FROM "
            "audience_changes WHERE audience = ? AND at_ms >= ?", (audience, since_ms)
        ).fetchone()  # fmt: skip
        return int(row[0]), int(row[1])

    def changes_after(self, after: int, limit: int
                      ) -> list[tuple[int, int, str, str, bool, str | None]]:  # fmt: skip
        """Every audience's entries and exits after change ``after``, oldest first: (id,
        time, audience, segment_id, entered, messageId) — what activation sends."""
        rows = self._db.execute(
            "SELECT id, at_ms, audience, segment_id, entered, message_id FROM audience_changes "
            "WHERE id > ? ORDER BY id LIMIT ?", (after, limit))  # fmt: skip
        return [(i, at, aud, seg, bool(e), mid) for i, at, aud, seg, e, mid in rows]

    def audience_changes(
        self, audience: str, limit: int
    ) -> list[tuple[int, str, bool, str | None]]:
        """The latest entries and exits, newest first: (time, segment_id, entered, messageId)."""
        rows = self._db.execute(
            "SELECT at_ms, segment_id, entered, message_id FROM audience_changes WHERE "
            "audience = ? ORDER BY id DESC LIMIT ?", (audience, limit))  # fmt: skip
        return [(at, seg, bool(e), mid) for at, seg, e, mid in rows]

    def close(self) -> None:
        self._db.close()


# ---------------------------------------------------------------------------- PostgreSQL

_PG_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS position (
    id integer PRIMARY KEY CHECK (id = 1), "offset" bigint NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    segment_id text PRIMARY KEY, canonical text, created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL, first_message_id text, first_source text,
    last_message_id text, last_source text, merges bigint NOT NULL DEFAULT 0,
    identifiers bigint NOT NULL DEFAULT 0, seq bigserial NOT NULL);
CREATE INDEX IF NOT EXISTS profiles_canonical ON profiles (canonical) WHERE canonical IS NOT NULL;
CREATE TABLE IF NOT EXISTS identifiers (
    type text NOT NULL, value text NOT NULL, segment_id text NOT NULL,
    created_ms bigint NOT NULL, source text, first_message_id text, PRIMARY KEY (type, value));
CREATE INDEX IF NOT EXISTS identifiers_profile ON identifiers (segment_id, type);
CREATE TABLE IF NOT EXISTS id_counts (
    segment_id text NOT NULL, type text NOT NULL, n bigint NOT NULL,
    PRIMARY KEY (segment_id, type));
CREATE TABLE IF NOT EXISTS traits (
    segment_id text NOT NULL, name text NOT NULL, value bytea NOT NULL,
    updated_ms bigint NOT NULL, source text, message_id text, computed integer NOT NULL,
    PRIMARY KEY (segment_id, name));
CREATE TABLE IF NOT EXISTS trait_state (
    segment_id text NOT NULL, trait text NOT NULL, state bytea NOT NULL, expires_hour bigint,
    PRIMARY KEY (segment_id, trait));
CREATE INDEX IF NOT EXISTS trait_state_expiry ON trait_state (expires_hour)
    WHERE expires_hour IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    "offset" bigint PRIMARY KEY, segment_id text NOT NULL, message_id text NOT NULL,
    type text NOT NULL, name text, ts_ms bigint NOT NULL, source text NOT NULL);
CREATE INDEX IF NOT EXISTS events_profile ON events (segment_id, "offset");
CREATE TABLE IF NOT EXISTS links (
    segment_id text NOT NULL, collection text NOT NULL, type text NOT NULL, value text NOT NULL,
    created_ms bigint NOT NULL, source text, first_message_id text,
    PRIMARY KEY (segment_id, collection, type, value));
CREATE TABLE IF NOT EXISTS history (
    id bigserial PRIMARY KEY, at_ms bigint NOT NULL, kind text NOT NULL,
    segment_id text, other_id text, message_id text, "offset" bigint, detail bytea);
CREATE INDEX IF NOT EXISTS history_profile ON history (segment_id);
CREATE INDEX IF NOT EXISTS history_other ON history (other_id) WHERE other_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS history_message ON history (message_id);
CREATE INDEX IF NOT EXISTS history_kind ON history (kind, id);
CREATE TABLE IF NOT EXISTS audience_members (
    segment_id text NOT NULL, audience text NOT NULL, since_ms bigint NOT NULL,
    message_id text, PRIMARY KEY (segment_id, audience));
CREATE INDEX IF NOT EXISTS audience_members_since
    ON audience_members (audience, since_ms, segment_id);
CREATE TABLE IF NOT EXISTS audience_changes (
    id bigserial PRIMARY KEY, at_ms bigint NOT NULL, audience text NOT NULL,
    segment_id text NOT NULL, entered integer NOT NULL, message_id text);
CREATE INDEX IF NOT EXISTS audience_changes_audience ON audience_changes (audience, id);
CREATE TABLE IF NOT EXISTS counters (
    kind text NOT NULL, type text NOT NULL, value text NOT NULL, n bigint NOT NULL,
    last_message_id text, last_ms bigint, PRIMARY KEY (kind, type, value));
"""
PG_SCHEMA = re.sub(r"\btext\b", 'text COLLATE "C"', _PG_TABLES)
"""The same tables as :data:`SCHEMA`, in PostgreSQL's types; made by the first connection
(under the state schema's lock) and versioned by ``meta``'s ``schema_version`` as the file is.
Text is ``COLLATE "C"``: byte order, as SQLite compares, which the prefix ranges over trait
keys and the cursors over segment_ids rely on (a database's default collation may not)."""


def pg_schema_of(state: StateConfig, space: str) -> str:
    """The PostgreSQL schema of a space's store: ``<state schema>_unify_<space>``, shortened
    with a hash past PostgreSQL's 63 bytes (which it would cut silently)."""
    name = f"{state.schema_name}_unify_{space}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    return f"{name.encode()[:50].decode(errors='ignore')}_{digest}"


class _PgDb:
    """What :class:`SqliteProfileStore`'s methods ask of their connection, on PostgreSQL."""

    def __init__(self, conn: PostgresConn) -> None:
        self.conn = conn

    def execute(self, query: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(query, args)

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        listed = list(rows)
        if listed:
            self.conn.executemany(query, listed)


class PostgresProfileStore(SqliteProfileStore):
    """A space's store in a PostgreSQL schema of its own (``state: {backend: postgres}``):
    the same methods and SQL as the file; every node's Profile API and activation read it.

    One writer per space: the consumer that writes holds a session advisory lock on the
    schema (:meth:`try_writer`); the others stand by and take over when its session ends (a
    node stopped or cut off: PostgreSQL ends the session within ~15 s, the keepalives set at
    connect). Each batch checks, in its transaction, that the stored position is the one it
    was read after (:class:`PositionMoved` otherwise), so a writer that took over, or a
    COMMIT whose answer was lost, never applies a batch twice."""

    shared = True
    _SEQ = "seq"
    _GREATEST = "greatest"
    _TRUE = "'true'::bytea"

    def __init__(self, state: StateConfig, space: str, *, writer: bool = False) -> None:
        self.writer = writer  # the consumer's: its transactions need the writer's lock
        self.path = None  # type: ignore[assignment]
        self.schema = pg_schema_of(state, space)
        self._lock_key = int.from_bytes(hashlib.blake2b(self.schema.encode(), digest_size=8)
                                        .digest(), "big", signed=True)  # fmt: skip
        self._locked_on: object = None  # the connection whose session holds the lock
        self.conn = postgres.connect(state, schema=self.schema, on_connect=self._prepare)
        self._db = _PgDb(self.conn)

    @staticmethod
    def _prepare(conn: psycopg.Connection[Any]) -> None:
        # the server notices a vanished client within ~15 s, ending its session and lock
        conn.execute("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; "
                     "SET tcp_keepalives_count = 3")  # fmt: skip
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            conn.execute(PG_SCHEMA)
            conn.execute("INSERT INTO position VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', %s)",
                             (str(SCHEMA_VERSION),))  # fmt: skip
            elif int(row[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"profile store schema {row[0]} in PostgreSQL, this "
                                   f"Headwater reads {SCHEMA_VERSION}")  # fmt: skip

    def try_writer(self) -> bool:
        conn = self.conn.raw
        if conn is self._locked_on:
            return True
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()
        got = bool(row and row[0])
        if got:
            self._locked_on = conn
        return got

    def begin(self) -> None:
        """A reader's transaction (a profile deleted through the API) takes no lock: the
        rows it touches are locked by PostgreSQL as the writer's are."""
        if self.writer and not self.try_writer():
            raise NotTheWriter(f"another node writes the profile store {self.conn.where}")
        self.conn.begin()
        # every transaction on the store takes the position row first: a batch and a
        # profile deleted through the API run one after the other, as on SQLite
        try:
            self._db.execute("SELECT 1 FROM position WHERE id = 1 FOR UPDATE")
        except BaseException:
            self.conn.rollback()
            raise

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()  # the session ends, and the writer's lock with it


def open_profile_store(data_dir: Path, space: str, state: StateConfig | None, *,
                       writer: bool = False) -> SqliteProfileStore:  # fmt: skip
    """A space's store: its file in the data directory, or its schema in PostgreSQL (for
    its one ``writer``, the consumer, or a reader)."""
    if postgres.uses_postgres(state):
        return PostgresProfileStore(state, space, writer=writer)
    return SqliteProfileStore(store_path(data_dir, space))


def profile_store_exists(data_dir: Path, space: str, state: StateConfig | None) -> bool:
    """Whether a reader will find the store (a file is made by its writer only)."""
    if postgres.uses_postgres(state):
        return True
    return store_path(data_dir, space).exists()
