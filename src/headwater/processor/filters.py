"""Destination filters: per destination, drop, sample or trim events before delivery.

A destination has up to ``MAX_FILTERS`` filters, each an FQL condition (``if``, or ``all``)
and one or more actions, as in Segment's Destination Filters API:

- ``DROP``: the event does not go to the destination;
- ``SAMPLE {percent, path}``: only ``percent`` (0..1) of the events go, chosen by a hash of
  the value at ``path`` so that the same value (the same user, with ``path: userId``) is
  always in or always out, on every destination and on every replay. Without ``path``, or
  when its value is null or absent, the event's ``messageId`` is hashed instead (the same
  event always gets the same answer); without one either, the whole event;
- ``DROP_PROPERTIES {fields}``: remove the listed fields;
- ``ALLOW_PROPERTIES {fields}``: keep only the listed fields of the named objects.

``fields`` maps an object (``properties``, ``traits``, ``context``, or a path inside one,
like ``properties.product``) to field paths within it; Segment's own shape
``{properties: {fields: [...]}}`` is accepted too. A list on the way applies the rest of the
path to each of its objects (``properties.products.price``), as Segment does.

How filters combine (Segment: "sample, drop, drop properties, allow properties"): all the
SAMPLE actions of the matching filters run first, in filter order, then the DROPs, then the
DROP_PROPERTIES, then the ALLOW_PROPERTIES. Each filter's condition is evaluated once, on
the event as it reached the filters, so trimming by one filter never changes whether
another matches. The first SAMPLE or DROP that removes the event decides its reason.

Results are values: :data:`KEPT` (untouched), :class:`Modified` (a new dict; the input is
never changed) or :class:`Dropped` with a reason naming the filter, e.g.
``filter 2 ("Debug events"): DROP where match(event, "Debug *")``. Filters are numbered
from 1 in the order the destination lists them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from headwater.processor.fql import compile_condition, compile_value, format_path
from headwater.processor.fql.evaluate import Condition, ValueExpr
from headwater.processor.fql.paths import MISSING, Tree, allow_tree, parse_path, prune, update

EventEdit = Callable[[dict[str, Any]], dict[str, Any]]

MAX_FILTERS = 10
FIELD_ROOTS = ("properties", "traits", "context")
_HASH_SPACE = 2**64


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DropAction(_Model):
    """The event does not go to the destination."""

    type: Literal["DROP"]


class SampleAction(_Model):
    """Only ``percent`` of the events go to the destination, chosen by the value at ``path``."""

    type: Literal["SAMPLE"]
    percent: float = Field(ge=0, le=1)
    """The share of events (or of ``path`` values) kept: 0.1 keeps one in ten."""
    path: str | None = None
    """The field whose value decides, e.g. ``userId``; default: the event's messageId."""

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_path(path)
        return path


class _FieldsAction(_Model):
    fields: dict[str, list[str]]
    """Object (``properties``, ``traits``, ``context`` or a path inside one) -> field paths
    within it."""

    _paths: tuple[tuple[tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = PrivateAttr()

    @field_validator("fields", mode="before")
    @classmethod
    def _segment_shape(cls, fields: Any) -> Any:
        """Accept Segment's API shape, ``{properties: {fields: [email]}}``, as well."""
        if isinstance(fields, dict):
            return {
                key: value["fields"] if isinstance(value, dict) and set(value) == {"fields"}
                else value
                for key, value in fields.items()
            }  # fmt: skip
        return fields

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, fields: dict[str, list[str]]) -> dict[str, list[str]]:
        if not fields:
            raise ValueError("name at least one object, e.g. {properties: [email]}")
        for key, names in fields.items():
            if parse_path(key)[0] not in FIELD_ROOTS:
                raise ValueError(
                    f"{key!r} cannot be filtered: name properties, traits or context, or an"
                    " object inside one (e.g. properties.product)"
                )
            if not names:
                raise ValueError(f"{key}: list at least one field")
            for name in names:
                parse_path(name)
        return fields

    @model_validator(mode="after")
    def _parse(self) -> _FieldsAction:
        self._paths = tuple(
            (parse_path(key), tuple(parse_path(name) for name in names))
            for key, names in self.fields.items()
        )
        return self

    def describe(self) -> str:
        return ", ".join(format_path(obj + name) for obj, names in self._paths for name in names)


class DropPropertiesAction(_FieldsAction):
    """Remove the listed fields before the event goes to the destination."""

    type: Literal["DROP_PROPERTIES"]

    def editor(self) -> EventEdit:
        """The edit as a closure over plain tuples (no model attribute lookups per event)."""
        paths = tuple(obj + name for obj, names in self._paths for name in names)

        def drop(event: dict[str, Any]) -> dict[str, Any]:
            for path in paths:
                event = update(event, path, _remove, through_lists=True)
            return event

        return drop


class AllowPropertiesAction(_FieldsAction):
    """Of each named object, keep only the listed fields."""

    type: Literal["ALLOW_PROPERTIES"]

    def editor(self) -> EventEdit:
        """The edit as a closure over plain tuples (no model attribute lookups per event)."""
        edits = tuple(
            (obj, partial(_prune_to, allow_tree(list(names)))) for obj, names in self._paths
        )

        def allow(event: dict[str, Any]) -> dict[str, Any]:
            for obj, prune_object in edits:
                event = update(event, obj, prune_object, through_lists=True)
            return event

        return allow


FilterAction = Annotated[
    DropAction | SampleAction | DropPropertiesAction | AllowPropertiesAction,
    Field(discriminator="type"),
]


class FilterConfig(_Model):
    """One destination filter: a condition and what to do with the events that meet it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    """A label for the trace and the counters, e.g. ``Debug events``."""

    if_: str = Field(alias="if")
    """An FQL condition (docs/fql.md), or ``all`` for every event."""

    actions: Annotated[list[FilterAction], Field(min_length=1)]
    """What to do with the events that meet the condition."""

    enabled: bool = True
    """A disabled filter is kept in the configuration and does nothing."""

    _condition: Condition = PrivateAttr()

    @field_validator("if_")
    @classmethod
    def _check_condition(cls, text: str) -> str:
        compile_condition(text)  # FqlError is a ValueError: pydantic names the field
        return text

    @model_validator(mode="after")
    def _compile(self) -> FilterConfig:
        self._condition = compile_condition(self.if_)
        return self

    @property
    def condition(self) -> Condition:
        return self._condition


FilterList = Annotated[list[FilterConfig], Field(max_length=MAX_FILTERS)]
"""The type of a destination's ``filters`` field in the workspace."""


@dataclass(frozen=True, slots=True)
class Kept:
    """The filters left the event as it was."""


@dataclass(frozen=True, slots=True)
class Modified:
    """The filters trimmed the event: deliver ``event`` (a new dict) instead."""

    event: dict[str, Any]
    changes: tuple[str, ...]  # which filter did what, for the trace


@dataclass(frozen=True, slots=True)
class Dropped:
    """The event does not go to the destination, for ``reason``."""

    reason: str


KEPT = Kept()
FilterResult = Kept | Modified | Dropped


@dataclass(slots=True)
class FilterStats:
    """What one filter has done since start: events that met its condition, and of them,
    dropped, sampled out and modified."""

    matched: int = 0
    dropped: int = 0
    sampled_out: int = 0
    modified: int = 0


_SAMPLE, _DROP, _DROP_PROPERTIES, _ALLOW_PROPERTIES = 0, 1, 2, 3
_PHASE = {
    SampleAction: _SAMPLE,
    DropAction: _DROP,
    DropPropertiesAction: _DROP_PROPERTIES,
    AllowPropertiesAction: _ALLOW_PROPERTIES,
}


@dataclass(frozen=True, slots=True)
class _Step:
    index: int  # the filter's position, from 0
    phase: int
    condition: Condition
    label: str  # 'filter 2 ("Debug events"): DROP where ...'
    percent: float = 1.0  # SAMPLE
    sample_path: str | None = None  # SAMPLE: the path as written ...
    sample_get: ValueExpr | None = None  # ... and compiled
    edit: EventEdit | None = None  # DROP_PROPERTIES, ALLOW_PROPERTIES


class DestinationFilters:
    """The filters of one destination, ready to run on events."""

    def __init__(self, filters: Sequence[FilterConfig]) -> None:
        if len(filters) > MAX_FILTERS:
            raise ValueError(
                f"a destination has at most {MAX_FILTERS} filters, not {len(filters)};"
                " combine conditions with 'or' or actions in one filter"
            )
        self.configs = tuple(filters)
        self.stats = tuple(FilterStats() for _ in filters)
        steps = [
            _step(index, config, action)
            for index, config in enumerate(filters)
            if config.enabled
            for action in config.actions
        ]
        steps.sort(key=lambda s: s.phase)  # stable: filter order within a phase
        self._steps = tuple(steps)

    def __bool__(self) -> bool:
        """False when no enabled filter: the engine can skip ``apply`` altogether."""
        return bool(self._steps)

    def apply(self, event: dict[str, Any], count: bool = True) -> FilterResult:
        """Run the filters on ``event`` (never changed): KEPT, Modified or Dropped.
        ``count=False`` leaves the counters alone (a trace asking what would happen)."""
        if not self._steps:
            return KEPT
        stats = self.stats if count else [FilterStats() for _ in self.stats]
        matched: list[bool | None] = [None] * len(stats)
        current = event
        changes: list[str] = []
        modified_by: list[int] = []
        for step in self._steps:
            index = step.index
            hit = matched[index]
            if hit is None:
                hit = matched[index] = step.condition(event)
                if hit:
                    stats[index].matched += 1
            if not hit:
                continue
            phase = step.phase
            if phase == _SAMPLE:
                get = step.sample_get
                value = get(event) if get is not None else None
                if not _sampled_in(_sample_key(event, value), step.percent):
                    stats[index].sampled_out += 1
                    note = ""
                    if value is None and get is not None:
                        note = f" ({step.sample_path} is null or absent: sampled by messageId)"
                    return Dropped(f"{step.label}: not sampled{note}")
            elif phase == _DROP:
                stats[index].dropped += 1
                return Dropped(step.label)
            elif step.edit is not None:
                new = step.edit(current)
                if new is not current:
                    current = new
                    changes.append(step.label)
                    if index not in modified_by:
                        modified_by.append(index)
        if current is event:
            return KEPT
        for index in modified_by:
            stats[index].modified += 1
        return Modified(current, tuple(changes))

    def snapshot(self) -> list[dict[str, Any]]:
        """The counters, one entry per filter in configuration order."""
        return [
            {"filter": i + 1, "name": config.name, "enabled": config.enabled} | asdict(stats)
            for i, (config, stats) in enumerate(zip(self.configs, self.stats, strict=True))
        ]


def _step(index: int, config: FilterConfig, action: FilterAction) -> _Step:
    where = f"filter {index + 1}" + (f" ({_quote(config.name)})" if config.name else "")
    condition = config.if_.strip()
    scope = "(all events)" if condition == "all" else f"where {condition}"
    phase, test = _PHASE[type(action)], config.condition
    match action:
        case DropAction():
            return _Step(index, phase, test, f"{where}: DROP {scope}")
        case SampleAction(percent=percent, path=path):
            on = f" on {path}" if path else ""
            label = f"{where}: SAMPLE {percent * 100:g}%{on} {scope}"
            get = compile_value(path) if path else None
            return _Step(index, phase, test, label, percent, path, get)
        case DropPropertiesAction() | AllowPropertiesAction():
            label = f"{where}: {action.type} {action.describe()} {scope}"
            return _Step(index, phase, test, label, edit=action.editor())


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _sample_key(event: dict[str, Any], value: Any) -> bytes:
    """The bytes hashed to sample an event: the JSON of the value at the sample's path, or
    of the messageId when that is null or absent, or of the whole event when both are."""
    if value is None:
        value = event.get("messageId")
    if value is None:
        value = event
    return _canonical_json(value)


def _canonical_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:  # ints past 64 bits, lone surrogates, more nesting than orjson writes
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        return repr(value).encode("utf-8", "surrogatepass")


def _sampled_in(key: bytes, percent: float) -> bool:
    """Deterministic: the first 8 bytes of the key's BLAKE2b hash, as a fraction of 2**64,
    fall below ``percent``. The same key with a larger percent is always in as well."""
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") < percent * _HASH_SPACE


def _remove(value: Any) -> Any:
    return MISSING


def _prune_to(tree: Tree, value: Any) -> Any:
    return prune(value, tree)


__all__ = [
    "KEPT",
    "MAX_FILTERS",
    "AllowPropertiesAction",
    "DestinationFilters",
    "DropAction",
    "DropPropertiesAction",
    "Dropped",
    "FilterAction",
    "FilterConfig",
    "FilterList",
    "FilterResult",
    "FilterStats",
    "Kept",
    "Modified",
    "SampleAction",
]
