"""Computed traits, kept up to date as events arrive (not in a nightly batch).

Each trait keeps, per profile, partial aggregates in hourly buckets (Segment's lookback
precision is hourly): a counter's count, a sum, ``[sum, n]`` for an average, a minimum or
maximum, value counts for most-frequent, ``[time, value]`` for first and last, a set for the
unique lists. An event adds to its hour's bucket; the trait's value combines the buckets
still inside the window (all of them without a window). Partials combine, so merging two
profiles merges their states without reading any event again, and a window that moves past
a bucket is recomputed from the buckets alone (:meth:`TraitEngine.expire`, on a schedule;
the store indexes the hour each state next drops a bucket).

The engine is written to be reused (Engage's audiences build on it): a
:class:`Computation` is one thing evaluated per profile from events. Events add to the
states; the values are worked out once per profile and trait per batch
(:meth:`TraitEngine.settle`), and a value that changed since the last batch is announced
to the listeners in ``on_change`` with the old and new value — a batch announces a trait's
final value once per profile, not each event's (nothing downstream needs the steps in
between: audiences are evaluated after the batch, the store keeps only the final value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.processor.fql import compile_condition, compile_value
from headwater.unify.config import ComputedTraitConfig
from headwater.unify.store import ProfileStore

HOUR_MS = 3_600_000
MAX_DISTINCT_VALUES = 1000
"""Distinct values a most-frequent or unique-list trait keeps per profile; new ones past it
are not counted (Segment keeps 10,000 per trait; a profile never grows without bound)."""

Partial = Any
State = dict[str, Any]  # {"b": {hour: partial}, "v": current value}


@dataclass(frozen=True, slots=True)
class Change:
    """A computed value that changed on a profile."""

    segment_id: str
    key: str
    old: Any
    new: Any
    message_id: str | None  # the batch's last event that added to it (None: a window moved)


Listener = Callable[[Change], None]


def event_name(event: dict[str, Any]) -> str | None:
    """The name audiences and traits know an event by (Segment: pages are ``Page Viewed``)."""
    kind = event.get("type")
    if kind == "track":
        name = event.get("event")
        return name if isinstance(name, str) else None
    return {"page": "Page Viewed", "screen": "Screen Viewed", "identify": "Identify"}.get(str(kind))


def _key(value: Any) -> str:
    return orjson.dumps(value).decode()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _tidy(x: float) -> float | int:
    return int(x) if x.is_integer() else x


class Computation:
    """One computed trait: which events count, what each adds, how partials combine."""

    def __init__(self, config: ComputedTraitConfig, key: str | None = None,
                 hidden: bool = False) -> None:  # fmt: skip
        """``hidden``: a value kept only in its state, for another computation to read (an
        audience's counters, under their own ``key``), never a trait of the profile."""
        self.config = config
        self.key = key or config.key
        self.hidden = hidden
        self.kind = config.type if config.type != "aggregation" else config.aggregation or "sum"
        self.event = config.event
        self.events: tuple[str, ...] = (config.event,)  # what it is dispatched by
        self.condition = compile_condition(config.condition) if config.condition else None
        prop = config.property
        self._read: Callable[[dict[str, Any]], Any] | None = None
        if prop:
            if "." in prop:
                self._read = compile_value(prop)
            else:
                self._read = lambda e: (e.get("properties") or {}).get(prop)
        self.window_hours = config.window // 3600 if config.window else None

    def partial(self, event: dict[str, Any], ts_ms: int) -> Partial | None:
        """What one event adds (None: it adds nothing, e.g. the property is missing)."""
        if self.kind == "event_counter":
            return 1
        assert self._read is not None
        value = self._read(event)
        if value is None:
            return None
        if self.kind in ("sum", "avg", "min", "max"):
            number = _number(value)
            if number is None:
                return None
            return [number, 1] if self.kind == "avg" else number
        if self.kind in ("first", "last"):
            return [ts_ms, value]
        return {_key(value): 1}  # most_frequent, unique_list, unique_list_count

    def combine(self, a: Partial, b: Partial) -> Partial:
        kind = self.kind
        if kind in ("event_counter", "sum"):
            return a + b
        if kind == "avg":
            return [a[0] + b[0], a[1] + b[1]]
        if kind == "min":
            return min(a, b)
        if kind == "max":
            return max(a, b)
        if kind == "first":
            return a if a[0] <= b[0] else b
        if kind == "last":
            return b if b[0] >= a[0] else a
        merged = dict(a)
        for value, n in b.items():
            if value in merged:
                merged[value] += n
            elif len(merged) < MAX_DISTINCT_VALUES:
                merged[value] = n
        return merged

    def live(self, state: State, now_ms: int) -> list[Partial]:
        buckets = state.get("b", {})
        if not self.window_hours:
            return list(buckets.values())
        oldest = now_ms // HOUR_MS - self.window_hours
        return [p for h, p in buckets.items() if int(h) > oldest]

    def value(self, state: State, now_ms: int) -> Any:
        parts = self.live(state, now_ms)
        kind = self.kind
        if not parts:
            return 0 if kind in ("event_counter", "unique_list_count") else None
        total = parts[0]
        for p in parts[1:]:
            total = self.combine(total, p)
        if kind == "event_counter":
            return total
        if kind in ("sum", "min", "max"):
            return _tidy(total)
        if kind == "avg":
            return _tidy(total[0] / total[1])
        if kind in ("first", "last"):
            return total[1]
        if kind == "most_frequent":
            best, count = min(total.items(), key=lambda kv: (-kv[1], kv[0]))
            return orjson.loads(best) if count >= 2 else None
        if kind == "unique_list_count":
            return len(total)  # the values are distinct keys: no need to decode and sort them
        return sorted((orjson.loads(k) for k in total), key=lambda v: (str(type(v)), v))

    def expires_hour(self, state: State) -> int | None:
        """The hour at which the oldest bucket leaves the window (None: never)."""
        if not self.window_hours or not state.get("b"):
            return None
        return min(int(h) for h in state["b"]) + self.window_hours

    def prune(self, state: State, now_ms: int) -> None:
        if self.window_hours:
            oldest = now_ms // HOUR_MS - self.window_hours
            state["b"] = {h: p for h, p in state.get("b", {}).items() if int(h) > oldest}


class TraitEngine:
    """The computations of a space, applied to its profiles in the store."""

    def __init__(self, configs: list[ComputedTraitConfig], now_ms: Callable[[], int],
                 extra: list[Computation] | None = None) -> None:  # fmt: skip
        self.computations = [Computation(c) for c in configs] + list(extra or [])
        self._by_event: dict[str | None, list[Computation]] = {}
        for comp in self.computations:
            for name in comp.events:  # a funnel has several
                self._by_event.setdefault(name, []).append(comp)
        self.now_ms = now_ms
        self.on_change: list[Listener] = []
        # what this transaction read and changed, written once at flush(): a profile's
        # events tend to come together, and each would otherwise rewrite the same rows
        self._states: dict[str, dict[str, State]] = {}
        # states changed, by (segment_id, key): their expiry hours are computed at flush,
        # once per state and batch rather than once per event
        self._dirty: dict[tuple[str, str], tuple[Computation, State]] = {}
        # the traits (not hidden) whose value is to be worked out at settle(), once per
        # profile and batch: (computation, state, the last event that added to it, source)
        self._pending: dict[tuple[str, str], tuple[Computation, State, str | None, str]] = {}
        self._values: dict[str, dict[str, tuple[Any, int, str, str]]] = {}

    def states(self, store: ProfileStore, segment_id: str) -> dict[str, State]:
        found = self._states.get(segment_id)
        if found is None:
            found = self._states[segment_id] = {
                key: state for key, (state, _) in store.trait_states(segment_id).items()
            }
        return found

    def drop(self, store: ProfileStore, segment_id: str) -> None:
        """A profile merged away: its states are gone."""
        self._states.pop(segment_id, None)
        self._values.pop(segment_id, None)
        for held in (self._dirty, self._pending):
            for key in [k for k in held if k[0] == segment_id]:
                del held[key]
        store.drop_trait_states(segment_id)

    def settle(self) -> list[Change]:
        """Work out the values of the traits this transaction added to, once per profile and
        trait; the ones that changed since the last batch, told to the listeners (a batch
        announces a trait's final value once per profile, not each event's)."""
        if not self._pending:
            return []
        now = self.now_ms()
        changes: list[Change] = []
        for (seg, _), (comp, state, message_id, source) in self._pending.items():
            change = self._value(seg, comp, state, now, message_id, source)
            if change is not None:
                changes.append(change)
        self._pending.clear()
        return changes

    def _value(self, seg: str, comp: Computation, state: State, now: int,
               message_id: str | None, source: str) -> Change | None:  # fmt: skip
        """The state's value now, kept in it; its Change if it changed (a hidden
        computation's is neither written nor announced, only returned)."""
        had, old = "v" in state, state.get("v")
        new = comp.value(state, now)
        state["v"] = new
        if had and new == old:
            return None
        change = Change(seg, comp.key, old, new, message_id)
        if not comp.hidden:
            self._values.setdefault(seg, {})[comp.key] = (new, now, source, message_id or "")
            for listener in self.on_change:
                listener(change)
        return change

    def flush(self, store: ProfileStore) -> dict[str, dict[str, State]]:
        """Write what this transaction changed (call before committing; values not settled
        yet are settled first), and forget it; the states it had read, by profile (what an
        audience evaluation of the same transaction can use instead of reading them
        again)."""
        self.settle()
        if self._dirty:
            rows = [(seg, key, state, comp.expires_hour(state))
                    for (seg, key), (comp, state) in self._dirty.items()]  # fmt: skip
            store.put_trait_states(rows)
        if self._values:
            store.set_computed([(seg, key, *v) for seg, values in self._values.items()
                                for key, v in values.items()])  # fmt: skip
        held = self._states
        self._states = {}
        self.reset()
        return held

    def reset(self) -> None:
        """Forget this transaction's reads and writes (after a flush or a rollback)."""
        self._states.clear()
        self._dirty.clear()
        self._pending.clear()
        self._values.clear()

    def observe(self, store: ProfileStore, segment_id: str, event: dict[str, Any], ts_ms: int,
                message_id: str, source: str, name: str | None,
                only: frozenset[str] | None = None) -> None:  # fmt: skip
        """Add an event (known by ``name``, :func:`event_name`) to the profile's traits'
        states; their values are worked out at :meth:`settle`. ``only``: to these
        computations' keys (a backfill of new ones over the log's history)."""
        hits = self._by_event.get(name)
        if hits and only is not None:
            hits = [c for c in hits if c.key in only]
        if not hits:
            return
        states: dict[str, State] | None = None
        hour = ts_ms // HOUR_MS
        current = -1
        for comp in hits:
            if comp.condition is not None and not comp.condition(event):
                continue
            part = comp.partial(event, ts_ms)
            if part is None:
                continue
            if comp.window_hours:
                if current < 0:
                    current = self.now_ms() // HOUR_MS
                if hour <= current - comp.window_hours:
                    continue  # a late event already outside the window
                slot = str(hour)
            else:
                slot = "0"
            if states is None:
                states = self.states(store, segment_id)
            key = comp.key
            state = states.get(key)
            if state is None:
                state = states[key] = {"b": {}}
            buckets = state.setdefault("b", {})
            buckets[slot] = comp.combine(buckets[slot], part) if slot in buckets else part
            self._added(segment_id, comp, state, message_id, source)

    def merge(self, survivor: str, survivor_states: dict[str, State],
              loser_states: dict[str, State], message_id: str) -> None:  # fmt: skip
        """Combine the states of two profiles merged into ``survivor`` (read both before the
        store's merge: it drops the loser's; ``survivor_states`` is :meth:`states`'s, and
        takes the combined ones). The values are worked out at :meth:`settle`."""
        for comp in self.computations:
            theirs = loser_states.get(comp.key)
            if not theirs or not theirs.get("b"):
                continue
            mine = survivor_states.get(comp.key)
            if mine is None:
                mine = survivor_states[comp.key] = {"b": {}}
            buckets = mine.setdefault("b", {})
            for hour, part in theirs["b"].items():
                buckets[hour] = comp.combine(buckets[hour], part) if hour in buckets else part
            self._added(survivor, comp, mine, message_id, "merge")

    def _added(self, seg: str, comp: Computation, state: State, message_id: str,
               source: str) -> None:  # fmt: skip
        """``state`` took a part: written at :meth:`flush`, valued at :meth:`settle` (an
        audience's counter is valued when its audience is evaluated, not here)."""
        self._dirty[(seg, comp.key)] = (comp, state)
        if not comp.hidden:
            self._pending[(seg, comp.key)] = (comp, state, message_id, source)

    def expire(self, store: ProfileStore, batch: int = 500) -> list[Change]:
        """Recompute the traits whose window moved past a bucket (called on a schedule);
        the changes, hidden computations' too (the profiles whose audiences may have
        changed)."""
        now = self.now_ms()
        windowed = [c for c in self.computations if c.window_hours]
        changes: list[Change] = []
        if not windowed:
            return changes
        known = {c.key for c in self.computations}
        for segment_id in store.expiring(now // HOUR_MS, batch):
            states = store.trait_states(segment_id)
            for key, (state, _) in states.items():
                if key not in known:  # a trait no longer declared: its state stops expiring
                    store.put_trait_states([(segment_id, key, state, None)])
            for comp in windowed:
                if comp.key not in states:
                    continue
                state = states[comp.key][0]
                comp.prune(state, now)
                self._dirty[(segment_id, comp.key)] = (comp, state)
                change = self._value(segment_id, comp, state, now, None, "window")
                if change is not None:
                    changes.append(change)
        self.flush(store)
        return changes
