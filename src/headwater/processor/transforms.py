"""Transformations: fix events on the way, as Segment's Protocols Transformations do.

A transformation is scoped to a source (every destination of that source sees the change) or
to one destination, selects events with an FQL condition (``if``, default ``all``), and does
any of, in this order:

1. ``rename_event``: the track event's name (``event``) becomes this;
2. ``rename_properties``: ``{old path: new name}``; a new name that is a full path
   (``properties.order.id``, starting with properties, traits or context) moves the value
   there, any other is relative to the old field's object (``revenue`` -> ``total``);
3. ``set_properties``: ``{path: FQL value expression}``, e.g. ``lowercase(traits.email)``; all
   expressions read the event as it entered the transformation; a value that is null sets
   nothing (use ``drop_properties`` to remove a field);
4. ``hash_properties``: the value becomes the SHA-256 hex digest of its string form (a
   string's UTF-8 bytes; anything else, its JSON text as FQL's ``string()`` writes it).
   Null stays null. Nothing is normalised first: lower-case an e-mail with
   ``set_properties`` if the destination expects that;
5. ``drop_properties``: the fields are removed.

Paths name fields inside ``properties``, ``traits`` or ``context`` (never ``userId``,
``type`` or ``messageId``, which delivery and the trace rely on). Hashes and drops also reach
into lists of objects (``properties.products.email``); renames and sets do not.

Transformations run in the order they are listed, each on the output of the one before.
The input event is never changed: the result is a new dict that shares what was not
changed, so treat both as read-only.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from headwater.processor.fql import compile_condition, compile_value, format_path, strict_equal
from headwater.processor.fql.evaluate import Condition, ValueExpr
from headwater.processor.fql.functions import to_string
from headwater.processor.fql.paths import MISSING, get_path, parse_path, update

FIELD_ROOTS = ("properties", "traits", "context")


def field_path(text: str) -> tuple[str, ...]:
    """A path a transformation may change: inside properties, traits or context."""
    segments = parse_path(text)
    if segments[0] not in FIELD_ROOTS or len(segments) < 2:
        raise ValueError(
            f"{text!r} is not a field a transformation can change; name one inside"
            " properties, traits or context, e.g. properties.total"
        )
    return segments


class TransformationConfig(BaseModel):
    """One transformation: where it applies, which events, and what it does to them."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    """Named in the trace of every event it changes, e.g. ``fix-order``."""

    if_: str = Field(default="all", alias="if")
    """FQL condition selecting the events to transform (docs/fql.md); ``all`` by default."""

    source: str | None = None
    """Transform the events of this source, for all its destinations ..."""

    destination: str | None = None
    """... or only the events going to this destination (exactly one of the two)."""

    enabled: bool = True

    rename_event: str | None = Field(default=None, min_length=1)
    """The new name of the track event (``event``)."""

    rename_properties: dict[str, str] = {}
    """Old path -> new name (in the same object) or new full path."""

    set_properties: dict[str, str] = {}
    """Path -> FQL value expression, e.g. ``lowercase(traits.email)`` or ``"USD"``."""

    hash_properties: list[str] = []
    """Paths whose values are replaced by the SHA-256 hex digest of their string form."""

    drop_properties: list[str] = []
    """Paths removed from the event."""

    _condition: Condition = PrivateAttr()
    _renames: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = PrivateAttr()
    _sets: tuple[tuple[tuple[str, ...], ValueExpr, str], ...] = PrivateAttr()
    _hashes: tuple[tuple[str, ...], ...] = PrivateAttr()
    _drops: tuple[tuple[str, ...], ...] = PrivateAttr()

    @field_validator("if_")
    @classmethod
    def _check_condition(cls, text: str) -> str:
        compile_condition(text)
        return text

    @field_validator("rename_properties")
    @classmethod
    def _check_renames(cls, renames: dict[str, str]) -> dict[str, str]:
        sources = {field_path(old) for old in renames}
        targets: set[tuple[str, ...]] = set()
        for old, new in renames.items():
            target = _rename_target(field_path(old), new)
            if target in sources:
                raise ValueError(
                    f"{old!r} -> {new!r}: {format_path(target)} is renamed by this"
                    " transformation as well; do chained or swapped renames in two"
                    " transformations"
                )
            if target in targets:
                raise ValueError(f"two renames write {format_path(target)}")
            targets.add(target)
        return renames

    @field_validator("set_properties")
    @classmethod
    def _check_sets(cls, sets: dict[str, str]) -> dict[str, str]:
        for path, expression in sets.items():
            field_path(path)
            compile_value(expression)
        return sets

    @field_validator("hash_properties", "drop_properties")
    @classmethod
    def _check_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            field_path(path)
        return paths

    @model_validator(mode="after")
    def _compile(self) -> TransformationConfig:
        if (self.source is None) == (self.destination is None):
            raise ValueError(
                "give exactly one of source (transform that source's events for all its"
                " destinations) or destination (only the events going there)"
            )
        if not (
            self.rename_event
            or self.rename_properties
            or self.set_properties
            or self.hash_properties
            or self.drop_properties
        ):
            raise ValueError(
                "the transformation does nothing; give rename_event, rename_properties,"
                " set_properties, hash_properties or drop_properties"
            )
        renamed = {field_path(old) for old in self.rename_properties}
        for path in self.set_properties:
            if field_path(path) in renamed:
                raise ValueError(
                    f"set_properties: {path} is also renamed by rename_properties; set the"
                    " new name instead"
                )
        self._condition = compile_condition(self.if_)
        self._renames = tuple(
            (field_path(old), _rename_target(field_path(old), new))
            for old, new in self.rename_properties.items()
        )
        self._sets = tuple(
            (field_path(path), compile_value(text), text)
            for path, text in self.set_properties.items()
        )
        self._hashes = tuple(field_path(p) for p in self.hash_properties)
        self._drops = tuple(field_path(p) for p in self.drop_properties)
        return self

    def apply(self, event: dict[str, Any], changes: list[str]) -> dict[str, Any]:
        """The transformed event (``event`` itself when nothing changed); what was done is
        appended to ``changes``. The condition is the caller's to check."""
        by = f" (transformation {_quote(self.name)})"
        computed = [(path, get(event), text) for path, get, text in self._sets]
        new = event
        old_name, new_name = new.get("event"), self.rename_event
        if new_name is not None and type(old_name) is str and old_name != new_name:
            new = dict(new)
            new["event"] = new_name
            changes.append(f"renamed event {_quote(old_name)} → {_quote(new_name)}{by}")
        for old, target in self._renames:
            value = get_path(new, old)
            if value is MISSING:
                continue
            removed = update(new, old, _remove)
            placed = update(removed, target, _Const(value), create=True)
            if placed is not removed:  # not when an object on the way is not one
                new = placed
                changes.append(f"renamed {format_path(old)} → {format_path(target)}{by}")
        for path, value, text in computed:
            if value is None:
                continue
            if type(value) in (dict, list):
                value = copy.deepcopy(value)
            placed = update(new, path, _Const(value), create=True)
            if placed is not new:
                new = placed
                changes.append(f"set {format_path(path)} = {text}{by}")
        for path in self._hashes:
            hashed = update(new, path, _hash, through_lists=True)
            if hashed is not new:
                new = hashed
                changes.append(f"hashed {format_path(path)}{by}")
        for path in self._drops:
            dropped = update(new, path, _remove, through_lists=True)
            if dropped is not new:
                new = dropped
                changes.append(f"dropped {format_path(path)}{by}")
        return new

    @property
    def condition(self) -> Condition:
        return self._condition


@dataclass(frozen=True, slots=True)
class Unchanged:
    """No transformation changed the event."""


@dataclass(frozen=True, slots=True)
class Changed:
    """Deliver ``event`` (a new dict) instead; ``changes`` says what was done, for the trace."""

    event: dict[str, Any]
    changes: tuple[str, ...]


UNCHANGED = Unchanged()
TransformResult = Unchanged | Changed


class Transformer:
    """The enabled transformations of one scope, in order, ready to run on events."""

    def __init__(self, transformations: Sequence[TransformationConfig]) -> None:
        self.transformations = tuple(t for t in transformations if t.enabled)

    @classmethod
    def for_source(
        cls, transformations: Sequence[TransformationConfig], source: str
    ) -> Transformer:
        """The transformations scoped to ``source``."""
        return cls([t for t in transformations if t.source == source])

    @classmethod
    def for_destination(
        cls, transformations: Sequence[TransformationConfig], destination: str
    ) -> Transformer:
        """The transformations scoped to ``destination``."""
        return cls([t for t in transformations if t.destination == destination])

    def __bool__(self) -> bool:
        """False when there is nothing to run: the engine can skip ``apply``."""
        return bool(self.transformations)

    def apply(self, event: dict[str, Any]) -> TransformResult:
        """Run the transformations on ``event`` (never changed)."""
        current = event
        changes: list[str] = []
        for transformation in self.transformations:
            if transformation.condition(current):
                current = transformation.apply(current, changes)
        if current is event:
            return UNCHANGED
        return Changed(current, tuple(changes))


@dataclass(frozen=True, slots=True)
class _Const:
    """An edit that puts ``value`` at the path, unless an equal value is already there."""

    value: Any

    def __call__(self, current: Any) -> Any:
        if current is not MISSING and strict_equal(current, self.value):
            return current
        return self.value


def _rename_target(old: tuple[str, ...], new: str) -> tuple[str, ...]:
    segments = parse_path(new)
    if segments[0] in FIELD_ROOTS and len(segments) >= 2:
        return segments
    return old[:-1] + segments


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _remove(value: Any) -> Any:
    return MISSING


def _hash(value: Any) -> Any:
    if value is None or value is MISSING:
        return value
    text = value if type(value) is str else (to_string(value) or repr(value))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
