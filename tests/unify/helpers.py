"""Building a space and feeding it events as the log holds them."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson

from headwater.config.workspace import StateConfig
from headwater.gateway.normalize import iso_ms
from headwater.log.base import StoredRecord
from headwater.unify.config import SpaceConfig
from headwater.unify.consumer import SpaceProcessor
from headwater.unify.store import open_profile_store

T0 = 1_796_000_000_000  # 2026-11-30, a fixed clock for windows
STATE: StateConfig | None = None
"""Where Feeders keep their stores: None for the space's SQLite file, else PostgreSQL (set
by the ``profile_backend`` fixture, which the tests using Feeder run under)."""
OPENED: list[Any] = []  # the Feeders' stores, closed by the fixture after each test


class Feeder:
    """A space's processor and a counter of offsets, on a real store (SQLite or PostgreSQL:
    :data:`STATE`)."""

    def __init__(self, tmp: Path, space: dict[str, Any], now: list[int] | None = None) -> None:
        self.config = SpaceConfig.model_validate(space)
        self.now = now if now is not None else [T0]
        self.store = open_profile_store(tmp, self.config.name, STATE, writer=True)
        OPENED.append(self.store)
        self.processor = SpaceProcessor(self.config, self.store, lambda: self.now[0])
        self._offsets = itertools.count(self.store.position() + 1)  # a reopened store goes on
        self._ids = itertools.count(1)
        self.records: list[StoredRecord] = []  # what a log would hold

    def send(self, *events: dict[str, Any], source: str = "website") -> list[Any]:
        records = []
        for event in events:
            ev = dict(event)
            ev.setdefault("type", "track")
            ev.setdefault("messageId", f"m-{next(self._ids)}")
            ev.setdefault("timestamp", iso_ms(ev.pop("at", self.now[0])))
            ev.setdefault("properties", {})
            offset = next(self._offsets)
            records.append(StoredRecord(offset, ev["messageId"], ev.pop("_source", source),
                                        ev["type"], self.now[0], orjson.dumps(ev)))  # fmt: skip
        self.records += records
        return self.processor.apply(records)

    def profile_of(self, id_type: str, value: str) -> str | None:
        return self.store.find((id_type, value))

    def ids(self, segment_id: str) -> set[str]:
        return {f"{e.type}:{e.value}" for e in self.store.external_ids(segment_id)}

    def traits(self, segment_id: str) -> dict[str, Any]:
        return {t.name: t.value for t in self.store.traits(segment_id)}

    def kinds(self, segment_id: str) -> list[str]:
        return [h.kind for h in self.store.history(segment_id)]


def space(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "main",
        "sources": ["website", "backend", "mobile"],
        "identity": {
            "identifiers": [
                {"type": "user_id", "limit": 1},
                {"type": "email", "limit": 5},
                {"type": "anonymous_id", "limit": 1000},
            ],
            "blocked_values": ["test@example.com", "null", "undefined", "0"],
        },
    }
    base.update(overrides)
    return base
