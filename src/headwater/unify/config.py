"""What a workspace's ``spaces:`` declare: the sources a space reads, its identity rules and
its computed traits (docs/unify.md).

Declared here, beside the code that uses them, and included by the workspace model
(:mod:`headwater.config.workspace`) like the processor's tracking plans are. FQL in
conditions and custom identifier paths is compiled when the workspace loads, so a typo
stops start-up with its place.
"""

from __future__ import annotations

import builtins
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headwater.config.units import Seconds
from headwater.engage.config import AudienceConfig
from headwater.naming import NAME_PATTERN
from headwater.processor.fql import checked

ID_TYPE_PATTERN = r"^[a-z][a-z0-9_.]{0,63}$"
DEFAULT_LIMIT = 5
MAX_VALUE_CHARS = 256
MAX_IDENTIFIERS_PER_PROFILE = 1000
MAX_MERGES_PER_PROFILE = 100

BUILTIN_TYPES = (
    "user_id",
    "email",
    "anonymous_id",
    "android.id",
    "android.idfa",
    "ios.id",
    "ios.idfa",
    "device_id",
    "advertising_id",
    "ga_client_id",
)
"""Identifier types Headwater extracts by itself (identifiers.py says from where)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierRule(_Model):
    """One identifier type, in the space's priority order (first = highest priority)."""

    type: Annotated[str, Field(pattern=ID_TYPE_PATTERN)]
    """``user_id``, ``email``, ``anonymous_id``, ``ga_client_id``, ``android.id``,
    ``ios.id``, ``android.idfa``, ``ios.idfa``, ``device_id``, ``advertising_id``, or a
    custom type named with ``path``."""

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_IDENTIFIERS_PER_PROFILE)
    """At most this many values of the type on one profile (Segment's default: 1 for
    user_id, 5 for the others)."""

    path: str | None = None
    """For a custom type: an FQL expression giving its value from the event, e.g.
    ``properties.phone`` or ``lowercase(context.traits.member_no)``."""

    @field_validator("path")
    @classmethod
    def _compile_path(cls, path: str | None) -> str | None:
        return checked(path, "path", value=True)

    @model_validator(mode="after")
    def _custom_needs_path(self) -> IdentifierRule:
        if self.type not in BUILTIN_TYPES and self.path is None:
            raise ValueError(
                f"type {self.type!r} is not one Headwater extracts by itself "
                f"({', '.join(BUILTIN_TYPES)}); give it a path (FQL), e.g. path: properties.phone"
            )
        return self


def _default_identifiers() -> list[IdentifierRule]:
    return [
        IdentifierRule(type="user_id", limit=1),
        IdentifierRule(type="email", limit=5),
        IdentifierRule(type="anonymous_id", limit=1000),
        IdentifierRule(type="ga_client_id", limit=5),
        IdentifierRule(type="android.id", limit=5),
        IdentifierRule(type="ios.id", limit=5),
        IdentifierRule(type="android.idfa", limit=5),
        IdentifierRule(type="ios.idfa", limit=5),
        IdentifierRule(type="device_id", limit=5),
        IdentifierRule(type="advertising_id", limit=5),
    ]


DEFAULT_BLOCKED = ["null", "undefined", "anonymous", "-1", "0", "none", "nil", "n/a", ""]


class IdentityConfig(_Model):
    """Identity resolution rules of a space."""

    identifiers: Annotated[list[IdentifierRule], Field(min_length=1)] = Field(
        default_factory=_default_identifiers
    )
    """Identifier types in priority order, with their limits. Types not listed are not
    extracted."""

    blocked_values: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED))
    """Values that never become identifiers (compared after normalisation, case-insensitive)."""

    blocked_patterns: list[str] = [r"^[0-]*$"]
    """Regular expressions: a value matching one (in full) never becomes an identifier."""

    max_value_chars: int = Field(default=MAX_VALUE_CHARS, ge=8, le=4096)
    """Longer identifier values are refused (recorded), never truncated into a false match."""

    max_identifiers_per_profile: int = Field(default=MAX_IDENTIFIERS_PER_PROFILE, ge=1,
                                             le=100_000)  # fmt: skip
    """Past this many identifiers a profile takes no new one (Segment: 1,000 mappings)."""

    max_merges_per_profile: int = Field(default=MAX_MERGES_PER_PROFILE, ge=1, le=10_000)
    """Past this many merges a profile merges no more (Segment: 100)."""

    @field_validator("identifiers")
    @classmethod
    def _unique(cls, rules: list[IdentifierRule]) -> list[IdentifierRule]:
        seen: set[str] = set()
        for i, rule in enumerate(rules):
            if rule.type in seen:
                raise ValueError(f"[{i}].type: {rule.type!r} is listed twice")
            seen.add(rule.type)
        return rules

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"[{i}]: {pattern!r} is not a regular expression: {exc}") from None
        return patterns


TraitKind = Literal[
    "event_counter", "aggregation", "most_frequent", "first", "last", "unique_list",
    "unique_list_count",
]  # fmt: skip
NEEDS_PROPERTY = {"aggregation", "most_frequent", "first", "last", "unique_list",
                  "unique_list_count"}  # fmt: skip


def snake_case(name: str) -> str:
    """A trait's key: ``Orders last 30 days`` → ``orders_last_30_days``."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")


class ComputedTraitConfig(_Model):
    """A computed trait: kept up to date on each profile as its events arrive."""

    name: Annotated[str, Field(min_length=1, max_length=120)]
    """Its name; the trait's key on the profile is its snake_case form."""

    type: TraitKind
    event: Annotated[str, Field(min_length=1)]
    """The event it counts: a track event's name, ``Page Viewed`` or ``Screen Viewed``."""

    property: str | None = None
    """The event property it reads (``revenue``, ``properties.revenue``); not for
    event_counter."""

    aggregation: Literal["sum", "avg", "min", "max"] | None = None
    """For ``aggregation``: what it computes of the property."""

    condition: str | None = None
    """An FQL condition on the event (``properties.category = "shoes"``); only events for
    which it is true count."""

    window: Seconds | None = Field(default=None, ge=3600, le=3 * 365 * 86400)
    """Only events of the last this long count (``30d``, hourly precision); none: all."""

    @builtins.property  # the field ``property`` shadows the builtin in this class
    def key(self) -> str:
        return snake_case(self.name)

    @field_validator("condition")
    @classmethod
    def _compile(cls, condition: str | None) -> str | None:
        return checked(condition, "condition")

    @model_validator(mode="after")
    def _check_kind(self) -> ComputedTraitConfig:
        if not self.key:
            raise ValueError(f"name: {self.name!r} has no letters or digits for a trait key")
        if self.type in NEEDS_PROPERTY and not self.property:
            raise ValueError(f"a {self.type} trait needs 'property' (the event property it reads)")
        if self.type == "event_counter" and self.property:
            raise ValueError("an event_counter counts events; remove 'property'")
        if (self.type == "aggregation") != (self.aggregation is not None):
            raise ValueError(
                "'aggregation' (sum, avg, min or max) is required for an aggregation trait and "
                "only for it"
            )
        return self


class SpaceConfig(_Model):
    """A space (Segment Unify): profiles built from the events of some sources."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name; the Profile API's ``/v1/spaces/<name>/...``."""

    sources: Annotated[list[str], Field(min_length=1)]
    """The sources whose events build this space's profiles."""

    enabled: bool = True
    """A disabled space reads no event (its profiles stay as they are)."""

    identity: IdentityConfig = IdentityConfig()
    computed_traits: list[ComputedTraitConfig] = []
    """Computed traits (docs/unify.md#computed-traits); keys unique in the space."""

    recompute_interval_secs: float = Field(default=60.0, gt=0, le=86400)
    """How often traits whose window moved past events are recomputed (and audiences with
    them: a window's exits happen on this schedule)."""

    audiences: list[AudienceConfig] = []
    """Audiences of this space's profiles (docs/audiences.md)."""

    @model_validator(mode="after")
    def _exits_within_a_minute(self) -> SpaceConfig:
        windowed = [a.key for a in self.audiences
                    if any(c.performed and c.performed.within for c in a.where.walk())]  # fmt: skip
        if windowed and self.recompute_interval_secs > 60:
            raise ValueError(
                f"recompute_interval_secs: {self.recompute_interval_secs:g} s is more than 60 s, "
                f"and audience {windowed[0]!r} has a window: its exits would wait that long "
                "(windows are recomputed on this schedule); use 60 or less"
            )
        return self

    @model_validator(mode="after")
    def _unique_keys(self) -> SpaceConfig:
        keys: set[str] = set()
        for i, trait in enumerate(self.computed_traits):
            if trait.key in keys:
                raise ValueError(
                    f"computed_traits[{i}].name: its key {trait.key!r} is used by another trait"
                )
            keys.add(trait.key)
        return self

    def rule(self, id_type: str) -> IdentifierRule | None:
        return next((r for r in self.identity.identifiers if r.type == id_type), None)
