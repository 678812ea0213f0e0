"""A space's audiences, kept as its profiles change.

Each ``performed`` condition becomes a hidden counter in the space's trait engine
(:class:`~headwater.unify.traits.Computation`: hourly buckets, the window moving on the
space's recompute schedule, merged with the profile when profiles merge). After each batch
of events — and after each recompute of windows — the profiles it touched are evaluated
against every audience, in an order where an audience comes after those it is
``member_of``; an entry or an exit is written with the batch, in the same transaction, to
the space's store (``audience_members``, and ``audience_changes`` for activation and the
figures), and the member carries the trait ``<key>: true`` (Segment's shape: the Profile
API shows it).

:meth:`AudienceEngine.explain` answers "why is this profile in (or not in) this audience"
with the same evaluation, each condition saying what decided it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.engage.config import (
    AudienceConfig,
    Condition,
    Funnel,
    Performed,
    TraitTest,
    order,
)
from headwater.processor.fql import compile_condition
from headwater.unify.config import ComputedTraitConfig
from headwater.unify.store import ProfileStore
from headwater.unify.traits import Computation, event_name

COUNTER_PREFIX = "audience:"
"""Hidden counters' keys (``audience:<key>:<what it counts>``): never a computed trait's key
(those are snake_case), never written as a trait."""


def counter_key(performed: Performed) -> str:
    """The counter of a ``performed`` condition, named by what it counts (event, where,
    window) — not by the threshold, which reads the same counter, nor by the audience: every
    audience counting the same events shares one counter — so that a changed definition
    starts a counter of its own instead of reading one that counted otherwise. (``~`` is not
    in audience keys: these never meet :func:`legacy_key`'s.)"""
    what = orjson.dumps([performed.event, performed.where, performed.within])
    return f"{COUNTER_PREFIX}~count:{hashlib.sha256(what).hexdigest()[:12]}"


def legacy_key(audience: str, key: str) -> str:
    """The name the counter ``key`` had in stores written before counters were shared: one
    per audience (:func:`~headwater.engage.backfill.adopt_legacy` renames them)."""
    kind, digest = key.removeprefix(COUNTER_PREFIX + "~").split(":")
    return f"{COUNTER_PREFIX}{audience}:{'funnel:' if kind == 'funnel' else ''}{digest}"


@dataclass(frozen=True, slots=True)
class Profile:
    """What an evaluation reads of a profile."""

    segment_id: str
    traits: Mapping[str, Any]
    counts: Mapping[str, int]  # hidden counter key → its value now
    states: Mapping[str, Any] = field(default_factory=dict)  # a funnel's, for explain()
    members: dict[str, bool] = field(default_factory=dict)  # this evaluation's verdicts


@dataclass(frozen=True, slots=True)
class Verdict:
    """A condition's outcome for one profile, and why."""

    kind: str
    holds: bool
    says: str
    parts: tuple[Verdict, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"condition": self.kind, "holds": self.holds, "says": self.says}
        if self.parts:
            doc["parts"] = [p.as_dict() for p in self.parts]
        return doc


def funnel_key(funnel: Funnel) -> str:
    what = orjson.dumps(funnel.model_dump())
    return f"{COUNTER_PREFIX}~funnel:{hashlib.sha256(what).hexdigest()[:12]}"


class FunnelComputation:
    """A funnel's state per profile, kept by the trait engine like a counter (hidden, not
    windowed, merged with the profile): ``{"p": [start, ...], "done": bool}`` where ``p[i]``
    is the start time (the first step's time) of the latest run that reached step ``i``. An
    event applies to the steps it matches, the last first (one event never serves two
    consecutive steps); a step extends the run before it only within ``within`` of that
    run's start; the run that reaches the last step completes the funnel for good."""

    kind = "funnel"
    hidden = True
    condition = None
    window_hours = None

    def __init__(self, key: str, funnel: Funnel) -> None:
        self.key = key
        self.funnel = funnel
        self.within_ms = funnel.within * 1000
        self.events = tuple(dict.fromkeys(step.event for step in funnel.steps))
        self.event = self.events[0]
        self._where = [compile_condition(s.where) if s.where else None for s in funnel.steps]

    def partial(self, event: dict[str, Any], ts_ms: int) -> Any:
        name = event_name(event)
        steps = [i for i, (step, where) in enumerate(zip(self.funnel.steps, self._where,
                                                         strict=True))
                 if step.event == name and (where is None or where(event))]  # fmt: skip
        return {"e": steps, "t": ts_ms} if steps else None

    def _progress(self, part: Any) -> dict[str, Any]:
        if "e" in part:  # the first event of a profile: applied to an empty state
            return self._apply({"p": [None] * len(self.funnel.steps), "done": False}, part)
        return {"p": list(part["p"]), "done": bool(part["done"])}

    def _apply(self, state: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        progress, ts, last = state["p"], event["t"], len(self.funnel.steps) - 1
        for step in sorted(event["e"], reverse=True):
            if step == 0:
                progress[0] = ts if progress[0] is None else max(progress[0], ts)
                continue
            start = progress[step - 1]
            if start is not None and 0 <= ts - start <= self.within_ms:
                progress[step] = start if progress[step] is None else max(progress[step], start)
                if step == last:
                    state["done"] = True
        return state

    def combine(self, a: Any, b: Any) -> Any:
        state = self._progress(a)
        if "e" in b:
            return self._apply(state, b)
        other = self._progress(b)  # two profiles merged: the furthest of each
        state["p"] = [x if y is None else y if x is None else max(x, y)
                      for x, y in zip(state["p"], other["p"], strict=True)]  # fmt: skip
        state["done"] = state["done"] or other["done"]
        return state

    def value(self, state: dict[str, Any], now_ms: int) -> int:
        parts = list(state.get("b", {}).values())
        return int(bool(parts) and self._progress(parts[0])["done"])

    def reached(self, state: dict[str, Any] | None) -> int:
        """How many steps the furthest run reached (for the explanation)."""
        parts = list((state or {}).get("b", {}).values())
        if not parts:
            return 0
        progress = self._progress(parts[0])
        return len(progress["p"]) if progress["done"] else sum(p is not None for p in progress["p"])

    def expires_hour(self, state: dict[str, Any]) -> None:
        return None

    def prune(self, state: dict[str, Any], now_ms: int) -> None:
        return None


class AudienceEngine:
    """The enabled audiences of a space: their counters, and their evaluation."""

    def __init__(self, audiences: Iterable[AudienceConfig]) -> None:
        enabled = {a.key: a for a in audiences if a.enabled}
        depends = {k: {c.member_of for c in a.where.walk() if c.member_of} for k, a in
                   enabled.items()}  # fmt: skip
        self.audiences = [enabled[k] for k in order(depends) if k in enabled]
        self._counter: dict[int, str] = {}  # id(Performed) → its counter's key
        self._by_key: dict[str, Computation] = {}
        for audience in self.audiences:
            for funnel in [c.funnel for c in audience.where.walk() if c.funnel]:
                key = funnel_key(funnel)
                self._counter[id(funnel)] = key
                if key not in self._by_key:
                    self._by_key[key] = FunnelComputation(key, funnel)  # type: ignore[assignment]
            performed = [c.performed for c in audience.where.walk() if c.performed]
            for p in performed:
                key = counter_key(p)
                self._counter[id(p)] = key
                if key in self._by_key:
                    continue  # the same count asked twice (at least 1, at most 5): one counter
                config = ComputedTraitConfig(name=key, type="event_counter", event=p.event,
                                             condition=p.where, window=p.within)  # fmt: skip
                self._by_key[key] = Computation(config, key=key, hidden=True)
        self.computations = list(self._by_key.values())
        # what update() runs: each condition compiled to a test (explain() says the why)
        self._tests = {a.key: self._compile(a.where) for a in self.audiences}
        self._trait_names = sorted({c.trait.name for a in self.audiences for c in a.where.walk()
                                    if c.trait})  # fmt: skip

    def _compile(self, condition: Condition) -> Callable[[Profile], bool]:
        kind = condition.kind
        if kind in ("all", "any", "not"):
            parts = [self._compile(c) for c in condition.inner()]
            if kind == "all":
                return lambda p: all(t(p) for t in parts)
            if kind == "any":
                return lambda p: any(t(p) for t in parts)
            (inner,) = parts
            return lambda p: not inner(p)
        if kind == "performed":
            performed = condition.performed
            assert performed is not None
            counter = self._counter[id(performed)]
            return lambda p: performed.holds(p.counts.get(counter, 0))
        if kind == "trait":
            trait = condition.trait
            assert trait is not None
            return lambda p: _trait_holds(trait, p)
        if kind == "funnel":
            counter = self._counter[id(condition.funnel)]
            return lambda p: p.counts.get(counter, 0) >= 1
        key = condition.member_of
        return lambda p: p.members.get(key, False)  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        return bool(self.audiences)

    def counters_of(self, audience: AudienceConfig) -> list[str]:
        """The keys of the audience's counters."""
        return [self._counter[id(c.performed or c.funnel)] for c in audience.where.walk()
                if id(c.performed or c.funnel) in self._counter]  # fmt: skip

    def profile(self, store: ProfileStore, segment_id: str, now_ms: int,
                held: Mapping[str, Any] | None = None) -> Profile:  # fmt: skip
        """What the audiences read of a profile: the traits they name, their counters.
        ``held``: the profile's trait states as the transaction holds them (every one of
        them, by key), instead of reading the counters' from the store."""
        traits = store.trait_values(segment_id, self._trait_names) if self._trait_names else {}
        counts: dict[str, int] = {}
        states: dict[str, Any] = {}
        if self._by_key:
            if held is None:
                found = store.states_with_prefix(segment_id, COUNTER_PREFIX)
            else:
                found = {k: held[k] for k in self._by_key if k in held}
            for key, state in found.items():
                comp = self._by_key.get(key)
                if comp is not None:
                    counts[key] = int(comp.value(state, now_ms))
                    if isinstance(comp, FunnelComputation):
                        states[key] = state
        return Profile(segment_id, traits, counts, states=states)

    def update(
        self,
        store: ProfileStore,
        touched: Mapping[str, str | None],
        now_ms: Callable[[], int],
        waiting: frozenset[str] = frozenset(),
        held: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[int, int]:
        """Evaluate the ``touched`` profiles (live ones: segment_id → the messageId that
        touched it, None for a window that moved) and write who entered and who exited; (entries,
        exits). Audiences ``waiting`` for their backfill keep their members as they are.
        ``held``: trait states the transaction holds, by profile (:meth:`profile`)."""
        if not self.audiences or not touched:
            return 0, 0
        now = now_ms()
        entered: list[tuple[str, str, int, str | None]] = []
        exited: list[tuple[str, str, int, str | None]] = []
        for segment_id, message_id in touched.items():  # live profiles only
            profile = self.profile(store, segment_id, now, held.get(segment_id) if held else None)
            was = store.memberships(segment_id)
            for audience in self.audiences:
                if audience.key in waiting:
                    profile.members[audience.key] = audience.key in was
                    continue
                holds = self._tests[audience.key](profile)
                profile.members[audience.key] = holds
                if holds and audience.key not in was:
                    entered.append((audience.key, segment_id, now, message_id))
                elif not holds and audience.key in was:
                    exited.append((audience.key, segment_id, now, message_id))
        if entered or exited:  # the members are the profiles' audience traits too (store.traits)
            store.change_memberships(entered, exited)
        return len(entered), len(exited)

    def explain(self, store: ProfileStore, audience: AudienceConfig, segment_id: str,
                now_ms: int) -> Verdict:  # fmt: skip
        """Why the profile is in the audience or not: the evaluation, condition by
        condition (the audiences it is ``member_of`` evaluated first)."""
        profile = self.profile(store, segment_id, now_ms)
        for other in self.audiences:
            verdict = self.evaluate(other.where, profile)
            if other.key == audience.key:
                return verdict
            profile.members[other.key] = verdict.holds
        return self.evaluate(audience.where, profile)  # a disabled audience

    def evaluate(self, condition: Condition, profile: Profile) -> Verdict:
        kind = condition.kind
        if kind in ("all", "any"):
            parts = tuple(self.evaluate(c, profile) for c in condition.inner())
            held = sum(p.holds for p in parts)
            holds = held == len(parts) if kind == "all" else held > 0
            return Verdict(kind, holds, f"{held} of {len(parts)} hold", parts)
        if kind == "not":
            (inner,) = (self.evaluate(c, profile) for c in condition.inner())
            return Verdict("not", not inner.holds, "the condition inside "
                           + ("holds" if inner.holds else "does not hold"), (inner,))  # fmt: skip
        if kind == "performed":
            assert condition.performed is not None
            return self._performed(condition.performed, profile)
        if kind == "trait":
            assert condition.trait is not None
            return _trait(condition.trait, profile)
        if kind == "funnel":
            assert condition.funnel is not None
            return self._funnel(condition.funnel, profile)
        key = condition.member_of
        assert key is not None
        member = profile.members.get(key, False)
        return Verdict("member_of", member, f"{'a' if member else 'not a'} member of {key}")

    def _funnel(self, funnel: Funnel, profile: Profile) -> Verdict:
        steps = " → ".join(s.event + (f" where {s.where}" if s.where else "")
                           for s in funnel.steps)  # fmt: skip
        what = f"{steps} within {_duration(funnel.within)}"
        key = self._counter.get(id(funnel))
        comp = self._by_key.get(key or "")
        if key is None or not isinstance(comp, FunnelComputation):
            return Verdict("funnel", False, f"{what}: not kept (the audience is disabled)")
        reached = comp.reached(profile.states.get(key))
        done = reached == len(funnel.steps)
        return Verdict("funnel", done, f"{what}: " + (
            "completed" if done else f"reached step {reached} of {len(funnel.steps)}"))  # fmt: skip

    def _performed(self, p: Performed, profile: Profile) -> Verdict:
        what = f"{p.event} {p.wants()} times"
        if p.within:
            what += f" within {_duration(p.within)}"
        if p.where:
            what += f" where {p.where}"
        key = self._counter.get(id(p))
        if key is None:  # an audience that is not enabled keeps no counter
            return Verdict("performed", False, f"{what}: not counted (the audience is disabled)")
        count = profile.counts.get(key, 0)
        return Verdict("performed", p.holds(count), f"{what}: {count} time{'s' * (count != 1)}")


def _trait_holds(t: TraitTest, profile: Profile) -> bool:
    present = t.name in profile.traits
    if t.op == "exists":
        return present
    if t.op == "not_exists":
        return not present
    return present and _compare(t.op, profile.traits[t.name], t.value)


def _trait(t: TraitTest, profile: Profile) -> Verdict:
    present = t.name in profile.traits
    value = profile.traits.get(t.name)
    shown = f"{t.name} is {value!r}" if present else f"{t.name} is not set"
    holds = _trait_holds(t, profile)
    if t.op in ("exists", "not_exists"):
        return Verdict("trait", holds, f"{t.name} {t.op.replace('_', ' ')}: {shown}")
    return Verdict("trait", holds, f"{t.name} {t.op} {t.value!r}: {shown}")


def _compare(op: str, value: Any, wanted: Any) -> bool:
    if op == "=":
        return bool(value == wanted)
    if op == "!=":
        return bool(value != wanted)
    if op == "contains":
        if isinstance(value, str) and isinstance(wanted, str):
            return wanted in value
        return isinstance(value, list) and wanted in value
    both_numbers = all(isinstance(v, int | float) and not isinstance(v, bool)
                       for v in (value, wanted))  # fmt: skip
    if not (both_numbers or (isinstance(value, str) and isinstance(wanted, str))):
        return False  # a number and a text do not compare: the condition does not hold
    return bool({"<": value < wanted, "<=": value <= wanted, ">": value > wanted,
                 ">=": value >= wanted}[op])  # fmt: skip


def _duration(secs: int) -> str:
    if secs % 86400 == 0:
        return f"{secs // 86400}d"
    return f"{secs // 3600}h"
