"""The merge rules: which profile an event's identifiers join, create or merge.

Segment's flat matching (docs/unify.md#identity-resolution), per event:

1. look up the profiles that hold any of the event's identifiers;
2. none: a new profile gets them; one: it takes the new ones; several: they merge into
   the oldest;
3. unless the result would break a rule — an identifier type over its limit, the profile's
   identifier cap, its merge cap. Then one identifier of the event is dropped and matching
   starts again: the lowest-priority one among those that cause the fault (a new value of a
   type over its limit, or the only link to a profile that must not be joined). Segment's
   example: a profile with ``user_id=abc123`` and ``email=jane@...``; an event with
   ``user_id=abc456`` and that email drops the email and starts a new profile.

Each drop is recorded with the messageId: ``refused`` when it kept profiles apart (a merge
not done), ``limit`` when it kept a value off a profile. Every merge is recorded with the
identifiers that linked the pair. Blocked and over-long values never get here (they are
counted by the extractor's caller).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from headwater.unify.config import IdentityConfig
from headwater.unify.identifiers import Identifier
from headwater.unify.store import Profile, ProfileStore, new_segment_id


@dataclass(slots=True)
class Resolution:
    """What one event did to the graph."""

    segment_id: str | None  # the profile it joined (None: it had no usable identifier)
    created: bool = False
    merged: list[str] = field(default_factory=list)  # profiles merged into segment_id
    attached: list[Identifier] = field(default_factory=list)
    dropped: list[tuple[Identifier, str]] = field(default_factory=list)  # (identifier, kind)


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str  # limit | mappings | merges
    reason: str  # what rule the result would break, in words
    types: frozenset[str]  # identifier types over their limit (empty for the profile caps)


def _describe(ident: Identifier) -> str:
    return f"{ident[0]}:{ident[1]}"


class IdentityGraph:
    """Resolves events against a store; the caller holds the store's transaction."""

    def __init__(self, store: ProfileStore, identity: IdentityConfig) -> None:
        self.store = store
        self.priority = {rule.type: i for i, rule in enumerate(identity.identifiers)}
        self.limits = {rule.type: rule.limit for rule in identity.identifiers}
        self.max_identifiers = identity.max_identifiers_per_profile
        self.max_merges = identity.max_merges_per_profile
        self.touched: dict[str, tuple[str, int, str, str]] = {}
        """The last event of each profile since :meth:`flush` (written once per batch)."""

        self._known: dict[Identifier, str | None] = {}
        """Owners looked up in this transaction (None: no profile has it), kept current by
        attach and merge; forgotten at :meth:`flush` (another process may delete)."""

    def flush(self) -> None:
        """Write what is kept for the batch; call before committing."""
        if self.touched:
            self.store.touch(list(self.touched.values()))
        self.reset()

    def reset(self) -> None:
        """Forget the transaction's lookups and touches (after a flush or a rollback)."""
        self.touched.clear()
        self._known.clear()

    def _owners(self, ids: list[Identifier]) -> dict[Identifier, str]:
        known = self._known
        missing = [i for i in ids if i not in known]
        if missing:
            found = self.store.owners(missing)
            for ident in missing:
                known[ident] = found.get(ident)
        return {i: s for i in ids if (s := known[i]) is not None}

    def resolve(self, identifiers: list[Identifier], message_id: str, offset: int, source: str,
                at_ms: int) -> Resolution:  # fmt: skip
        """``identifiers`` in priority order, as the extractor gives them."""
        ids = list(identifiers)
        result = Resolution(None)
        while ids:
            owners = self._owners(ids)
            if len(owners) == len(ids) and len(set(owners.values())) == 1:
                # the common case: every identifier already on one profile; nothing can
                # break a rule (limits only grow with new values or merges)
                survivor = next(iter(owners.values()))
                self.touched.pop(survivor, None)
                self.touched[survivor] = (survivor, at_ms, message_id, source)
                result.segment_id = survivor
                return result
            profiles = self._profiles(set(owners.values()))
            new = [i for i in ids if i not in owners]
            fault = self._fault(profiles, new)
            if fault is None:
                self._apply(result, profiles, owners, new, message_id, offset, source, at_ms)
                return result
            drop = self._culprit(ids, owners, fault)
            ids.remove(drop)
            kind = "refused" if drop in owners or len(profiles) > 1 else "limit"
            result.dropped.append((drop, kind))
            self.store.record(kind, profiles[0].segment_id if profiles else None,
                              owners.get(drop), message_id, offset, at_ms, {
                                  "reason": fault.reason, "types": sorted(fault.types),
                                  "dropped": _describe(drop),
                                  "profiles": [p.segment_id for p in profiles],
                                  "identifiers": [_describe(i) for i in [*ids, drop]],
                              })  # fmt: skip
            self.store.count(kind, drop[0], drop[1], message_id, at_ms)
        return result

    def _profiles(self, segment_ids: set[str]) -> list[Profile]:
        found = [p for p in (self.store.profile(s) for s in segment_ids) if p is not None]
        return sorted(found, key=lambda p: p.seq)

    def _fault(self, profiles: list[Profile], new: list[Identifier]) -> _Fault | None:
        counts: Counter[str] = Counter(t for t, _ in new)
        for p in profiles:
            counts.update(self.store.id_counts(p.segment_id))
        over = frozenset(t for t, n in counts.items() if n > self.limits.get(t, 1))
        if over:
            names = ", ".join(f"{t} (limit {self.limits.get(t, 1)})" for t in sorted(over))
            return _Fault("limit", f"identifier value limit exceeded: {names}", over)
        if sum(counts.values()) > self.max_identifiers:
            limit = self.max_identifiers
            message = f"identifier mapping limit exceeded ({limit} per profile)"
            return _Fault("mappings", message, frozenset())
        if len(profiles) > 1 and sum(p.merges for p in profiles) + len(profiles) - 1 > (
            self.max_merges
        ):
            return _Fault("merges", f"profile merge limit exceeded ({self.max_merges} per profile)",
                          frozenset())  # fmt: skip
        return None

    def _culprit(self, ids: list[Identifier], owners: dict[Identifier, str],
                 fault: _Fault) -> Identifier:  # fmt: skip
        """The lowest-priority identifier among those that cause the fault: a new value of a
        type over its limit (any new value for the identifier cap), or the only link to a
        profile that brings such values (any such link for the merge cap)."""
        links = Counter(owners.values())

        def causes(ident: Identifier) -> bool:
            owner = owners.get(ident)
            if owner is None:
                return fault.kind != "merges" and (not fault.types or ident[0] in fault.types)
            if links[owner] != 1:
                return False
            return not fault.types or bool(fault.types & self.store.id_counts(owner).keys())

        candidates = [i for i in ids if causes(i)]
        return (candidates or ids)[-1]

    def _apply(self, result: Resolution, profiles: list[Profile],
               owners: dict[Identifier, str], new: list[Identifier], message_id: str,
               offset: int, source: str, at_ms: int) -> None:  # fmt: skip
        store = self.store
        if profiles:
            survivor = profiles[0].segment_id
        else:
            survivor = new_segment_id()
            store.create(survivor, at_ms, message_id, source)
            store.record("created", survivor, None, message_id, offset, at_ms,
                         {"identifiers": [_describe(i) for i in new]})  # fmt: skip
            result.created = True
        for loser in profiles[1:]:
            linked = [_describe(i) for i, s in owners.items() if s in (survivor, loser.segment_id)]
            store.merge(survivor, loser.segment_id, at_ms)
            for ident, owner in self._known.items():
                if owner == loser.segment_id:
                    self._known[ident] = survivor
            store.record("merged", survivor, loser.segment_id, message_id, offset, at_ms,
                         {"identifiers": linked})  # fmt: skip
            result.merged.append(loser.segment_id)
        if new:
            store.attach(survivor, new, at_ms, message_id, source)
            for ident in new:
                self._known[ident] = survivor
        self.touched.pop(survivor, None)  # re-inserted: the dict stays in order of last touch
        self.touched[survivor] = (survivor, at_ms, message_id, source)
        result.segment_id = survivor
        result.attached = new
