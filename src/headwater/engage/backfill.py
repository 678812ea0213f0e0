"""Backfill: a new or edited audience computed over the history the log still holds.

When a space starts with an audience it has not seen, or whose condition changed:

1. **counters** — each of its ``performed`` counters that is new counts the events of the
   log up to the offset the space had reached when the counter appeared (``upto``); events
   after it are the live consumer's, so none is counted twice. An unchanged counter (another
   audience's, or the audience's before an edit of something else) is complete already.
2. **sweep** — once its counters are complete, every live profile of the space is evaluated
   once, in ``segment_id`` order.
3. **ready** — from then on it is evaluated as events arrive.

Until it is ready an audience is not evaluated at all: no entry nor exit is written (and
none activated) from a half-counted history. Progress is kept in the store's ``meta``
(``counter:<key>``, ``audience:<key>``), committed with each step, so a restart goes on
where it was. A space with no history yet (a new store) has nothing to backfill. An audience
deleted or disabled loses its progress and counts at the next start: nothing counted for it
meanwhile, so when it comes back, even unchanged, it is backfilled again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from headwater.engage.audiences import AudienceEngine, legacy_key
from headwater.engage.config import AudienceConfig
from headwater.unify.store import ProfileStore

SWEEP_BATCH = 1000


def fingerprint(audience: AudienceConfig) -> str:
    """The audience's condition, hashed: a change of it is a new audience to backfill."""
    where = audience.where.model_dump(by_alias=True, exclude_none=True)
    return hashlib.sha256(orjson.dumps(where)).hexdigest()[:16]


def adopt_legacy(engine: AudienceEngine, store: ProfileStore) -> None:
    """Stores written before audiences shared their counters keep one counter per audience
    (:func:`~headwater.engage.audiences.legacy_key`): each shared counter takes over the
    counts and progress of the first such counter found, in the caller's transaction; the
    others (the same counts again) are then dropped by :func:`forget_removed`."""
    for audience in engine.audiences:
        for key in engine.counters_of(audience):
            old = legacy_key(audience.key, key)
            progress = store.meta(f"counter:{old}")
            if progress is None or store.meta(f"counter:{key}") is not None:
                continue
            store.rename_states(old, key)
            store.set_meta(f"counter:{key}", progress)
            store.forget([f"counter:{old}"], [])


def forget_removed(engine: AudienceEngine, store: ProfileStore) -> None:
    """Drop the progress and counts of audiences and counters that are gone (deleted or
    disabled), in the caller's transaction: nobody kept their counts while they were, so one
    that comes back is a new one, backfilled from the log."""
    counters = {f"counter:{c.key}" for c in engine.computations}
    audiences = {f"audience:{a.key}" for a in engine.audiences}
    gone = [k for k in store.meta_keys("counter:") if k not in counters]
    store.forget(gone + [k for k in store.meta_keys("audience:") if k not in audiences],
                 [k.removeprefix("counter:") for k in gone])  # fmt: skip


class Backfills:
    """The backfill state of a space's audiences and counters."""

    def __init__(self, engine: AudienceEngine, store: ProfileStore) -> None:
        self.engine = engine
        self.counters: dict[str, dict[str, int]] = {}  # counter key → {"upto", "done"}
        self.audiences: dict[str, dict[str, Any]] = {}  # key → {"fp", "state", "after"}
        position = store.position()
        store.begin()
        try:
            adopt_legacy(engine, store)
            forget_removed(engine, store)
            for comp in engine.computations:
                found = store.meta(f"counter:{comp.key}")
                if found is None:
                    found = {"upto": position, "done": 0}
                    store.set_meta(f"counter:{comp.key}", found)
                self.counters[comp.key] = found
            for audience in engine.audiences:
                fp = fingerprint(audience)
                found = store.meta(f"audience:{audience.key}")
                if found is None or found.get("fp") != fp:
                    state = "counters" if position else "ready"  # a new store: no history
                    found = {"fp": fp, "state": state, "after": ""}
                    store.set_meta(f"audience:{audience.key}", found)
                self.audiences[audience.key] = found
            self._advance(store)  # an audience with no new counter goes straight to its sweep
            store.commit()
        except BaseException:
            store.rollback()
            raise

    def waiting(self) -> frozenset[str]:
        """The audiences not to evaluate yet."""
        return frozenset(k for k, a in self.audiences.items() if a["state"] != "ready")

    def pending_counters(self) -> dict[str, dict[str, int]]:
        return {k: c for k, c in self.counters.items() if c["done"] < c["upto"]}

    def read_after(self) -> int | None:
        """The log offset to read history after, None when no counter needs history."""
        pending = self.pending_counters()
        return min(c["done"] for c in pending.values()) if pending else None

    def counting(self, offset: int) -> frozenset[str]:
        """The counters an event at ``offset`` of the history is for."""
        return frozenset(k for k, c in self.counters.items() if c["done"] < offset <= c["upto"])

    def counted(self, store: ProfileStore, last: int) -> None:
        """History up to ``last`` was counted (in the caller's transaction)."""
        for key, c in self.pending_counters().items():
            c["done"] = min(max(c["done"], last), c["upto"])
            store.set_meta(f"counter:{key}", c)
        self._advance(store)

    def _advance(self, store: ProfileStore) -> None:
        pending = self.pending_counters()
        for audience in self.engine.audiences:
            state = self.audiences[audience.key]
            if state["state"] != "counters":
                continue
            mine = self.engine.counters_of(audience)
            if not any(k in pending for k in mine):
                state["state"] = "sweep"
                store.set_meta(f"audience:{audience.key}", state)

    def sweeping(self) -> list[str]:
        return [k for k, a in self.audiences.items() if a["state"] == "sweep"]

    def swept(self, store: ProfileStore, keys: Iterable[str], after: str, done: bool) -> None:
        for key in keys:
            state = self.audiences[key]
            state["after"] = after
            if done:
                state["state"] = "ready"
            store.set_meta(f"audience:{key}", state)


def progress_of(store: ProfileStore, engine: AudienceEngine, audience: AudienceConfig
                ) -> dict[str, Any]:  # fmt: skip
    """:meth:`Backfills.progress` read from the store (the API's readers)."""
    state = store.meta(f"audience:{audience.key}")
    if state is None or state.get("fp") != fingerprint(audience):
        return {"state": "pending"}  # the consumer has not started with this definition
    counters = [store.meta(f"counter:{k}") or {"upto": 0, "done": 0}
                for k in engine.counters_of(audience)]  # fmt: skip
    return {"state": state["state"],
            "history_offsets": sum(c["upto"] for c in counters),
            "counted_offsets": sum(min(c["done"], c["upto"]) for c in counters)}  # fmt: skip
