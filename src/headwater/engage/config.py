"""What a space's ``audiences:`` declare (docs/audiences.md): a key, a condition, and the
destinations it is activated to.

A condition is one of ``all`` / ``any`` (lists of conditions), ``not`` (one), ``performed``
(an event at least / at most / exactly N times, optionally within a window and with an FQL
``where`` on the event), ``trait`` (a profile trait compared to a value), ``member_of``
(another audience of the space) and ``funnel`` (steps in order within a time). Every one
is incremental: ``performed`` is a counter the space keeps per profile as events arrive (an
hourly-bucketed computed trait, so a window moves on the space's recompute schedule), a
funnel keeps how far the profile's latest runs got, the others read what the profile holds.
Nothing scans history on an event.

Checked when the workspace loads, with the place of each fault: FQL compiles, windows are
whole hours (the counters' precision), ``member_of`` names an audience of the same space
and audiences do not depend on themselves, keys are unique in the space and not a computed
trait's key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headwater.config.units import Seconds
from headwater.processor.fql import checked

KEY_PATTERN = r"^[a-z][a-z0-9_]{0,99}$"
ACTIVATION_SOURCE_PREFIX = "engage-"
"""A space's activations are events of the source ``engage-<space>`` (engage/activation.py)."""


def source_of(space: str) -> str:
    return f"{ACTIVATION_SOURCE_PREFIX}{space}"


MAX_WINDOW_SECS = 3 * 365 * 86400
TraitOp = Literal["=", "!=", "<", "<=", ">", ">=", "exists", "not_exists", "contains"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Performed(_Model):
    """The profile performed ``event`` (a track event's name, ``Page Viewed``, ``Screen
    Viewed``) a number of times: ``at_least`` (1 unless another count is given), ``at_most``
    or ``exactly``; ``within`` the last so long (whole hours, e.g. ``30d``); ``where`` an FQL
    condition on the event (``properties.revenue > 10``). ``at_most: 0`` is "did not"."""

    event: Annotated[str, Field(min_length=1)]
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    exactly: int | None = Field(default=None, ge=0)
    within: Seconds | None = Field(default=None, ge=3600, le=MAX_WINDOW_SECS)
    where: str | None = None

    @field_validator("where")
    @classmethod
    def _compile(cls, where: str | None) -> str | None:
        return checked(where, "where")

    @field_validator("within")
    @classmethod
    def _hours(cls, within: int | None) -> int | None:
        if within is not None and within % 3600:
            raise ValueError(
                f"within: {within} s is not a whole number of hours; the counters behind an "
                "audience keep hourly buckets (use e.g. 1h, 36h, 30d)"
            )
        return within

    @model_validator(mode="after")
    def _one_count(self) -> Performed:
        given = [n for n in ("at_least", "at_most", "exactly") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of at_least, at_most, exactly (got {', '.join(given)})")
        return self

    def holds(self, count: int) -> bool:
        if self.exactly is not None:
            return count == self.exactly
        if self.at_most is not None:
            return count <= self.at_most
        return count >= (1 if self.at_least is None else self.at_least)

    def wants(self) -> str:
        if self.exactly is not None:
            return f"exactly {self.exactly}"
        if self.at_most is not None:
            return f"at most {self.at_most}"
        return f"at least {1 if self.at_least is None else self.at_least}"


class FunnelStep(_Model):
    """One step of a funnel: an event (by name), optionally with an FQL ``where``."""

    event: Annotated[str, Field(min_length=1)]
    where: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"event": data} if isinstance(data, str) else data

    @field_validator("where")
    @classmethod
    def _compile(cls, where: str | None) -> str | None:
        return checked(where, "where")


class Funnel(_Model):
    """The profile performed the ``steps`` in order, each one ``within`` the run's first step
    (``[Product Viewed, Order Completed]`` within ``1h``: bought within an hour of viewing).
    Once a run completed, the condition holds."""

    steps: list[FunnelStep] = Field(min_length=2, max_length=10)
    within: Seconds = Field(ge=1, le=MAX_WINDOW_SECS)


class TraitTest(_Model):
    """A profile trait (custom or computed, by its key) compared to ``value``: ``=``, ``!=``,
    ``<``, ``<=``, ``>``, ``>=``, ``contains`` (text or list), ``exists``, ``not_exists``."""

    name: Annotated[str, Field(min_length=1, max_length=255)]
    op: TraitOp = "="
    value: Any = None

    @model_validator(mode="after")
    def _value_needed(self) -> TraitTest:
        if self.op not in ("exists", "not_exists") and self.value is None:
            raise ValueError(f"op {self.op!r} compares with 'value', which is missing")
        if self.op in ("<", "<=", ">", ">=") and not isinstance(self.value, int | float | str):
            raise ValueError(f"op {self.op!r} needs a number or text 'value'")
        return self


class Condition(_Model):
    """Exactly one of the keys below."""

    all: list[Condition] | None = Field(default=None, min_length=1)
    any: list[Condition] | None = Field(default=None, min_length=1)
    not_: Condition | None = Field(default=None, alias="not")
    performed: Performed | None = None
    trait: TraitTest | None = None
    member_of: Annotated[str, Field(pattern=KEY_PATTERN)] | None = None
    funnel: Funnel | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [k for k in CONDITION_KEYS if self._part(k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a condition is exactly one of {', '.join(CONDITION_KEYS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CONDITION_KEYS if self._part(k) is not None)

    def _part(self, key: str) -> Any:
        return getattr(self, "not_" if key == "not" else key)

    def inner(self) -> list[Condition]:
        """The conditions directly inside this one."""
        return self.all or self.any or ([self.not_] if self.not_ else [])

    def walk(self) -> list[Condition]:
        """This condition and every one inside it, depth first."""
        found = [self]
        for inner in self.inner():
            found += inner.walk()
        return found


CONDITION_KEYS = ("all", "any", "not", "performed", "trait", "member_of", "funnel")


class AudienceDestination(_Model):
    """Where an audience is activated, and how (Segment's Send Identify / Send Track)."""

    name: Annotated[str, Field(min_length=1)]
    identify: bool = True
    track: bool = False

    @model_validator(mode="after")
    def _something(self) -> AudienceDestination:
        if not (self.identify or self.track):
            raise ValueError("send identify, track or both (both are off)")
        return self


class AudienceConfig(_Model):
    """An audience: the profiles of the space for which ``where`` holds, kept as events
    arrive."""

    key: Annotated[str, Field(pattern=KEY_PATTERN)]
    """Its key (snake_case): the trait ``<key>: true`` on a member, ``audience_key``."""

    name: str | None = None
    """A display name; the key by default."""

    where: Condition
    destinations: list[AudienceDestination] = []
    enabled: bool = True

    @property
    def title(self) -> str:
        return self.name or self.key


def check_audiences(audiences: list[AudienceConfig], trait_keys: set[str], where: str) -> None:
    """The space-level checks: unique keys, no clash with a computed trait, ``member_of``
    known and acyclic. ``where`` is the space's place (``spaces[0]``)."""
    keys: dict[str, int] = {}
    for i, audience in enumerate(audiences):
        if audience.key in keys:
            raise ValueError(f"{where}.audiences[{i}].key: {audience.key!r} is used by "
                             f"audiences[{keys[audience.key]}]")  # fmt: skip
        if audience.key in trait_keys:
            raise ValueError(f"{where}.audiences[{i}].key: {audience.key!r} is a computed "
                             "trait's key; an audience's key becomes a trait too")  # fmt: skip
        keys[audience.key] = i
    depends = {a.key: {c.member_of for c in a.where.walk() if c.member_of} for a in audiences}
    for i, audience in enumerate(audiences):
        for other in sorted(depends[audience.key]):
            if other not in keys:
                known = ", ".join(sorted(keys))
                raise ValueError(f"{where}.audiences[{i}].where: member_of {other!r} is not an "
                                 f"audience of this space (its audiences: {known})")  # fmt: skip
    order(depends)  # raises on a cycle


def order(depends: dict[str, set[str]]) -> list[str]:
    """The audiences in an order where each comes after those it is ``member_of``;
    ValueError naming the cycle if there is one."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str, path: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = " → ".join([*path[path.index(key) :], key])
            raise ValueError(f"audiences depend on themselves through member_of: {cycle}")
        state[key] = 1
        for other in sorted(depends.get(key, ())):
            visit(other, [*path, key])
        state[key] = 2
        done.append(key)

    for key in depends:
        visit(key, [])
    return done


ALWAYS_NAMED = frozenset({"Page Viewed", "Screen Viewed", "Identify"})
"""The names pages, screens and identifies are known by (unify/traits.py: event_name)."""


def audience_events(audience: AudienceConfig) -> list[str]:
    """The event names the audience's ``performed`` and ``funnel`` conditions count."""
    names: list[str] = []
    for c in audience.where.walk():
        if c.performed:
            names.append(c.performed.event)
        if c.funnel:
            names += [step.event for step in c.funnel.steps]
    return list(dict.fromkeys(names))


def planned_events(sources: list[str], plans: list[Any]) -> set[str] | None:
    """The event names that can reach a space whose every source follows a tracking plan
    that blocks unplanned events; None when any source lets every event through (then no
    name is unknown). Traits stay open: ``context.traits`` of any event sets them."""
    plan_of = {source: plan for plan in plans for source in plan.sources}
    covering = [plan_of.get(source) for source in sources]
    if not covering or any(p is None or p.enforcement.unplanned_events != "block"
                           for p in covering):  # fmt: skip
        return None
    tracks = {r.key for p in covering if p is not None for r in p.rules
              if r.type == "TRACK" and r.key}  # fmt: skip
    return tracks | ALWAYS_NAMED
