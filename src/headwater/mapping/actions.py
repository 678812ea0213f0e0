"""Actions: which events a destination sends (a trigger in FQL) and how (a mapping).

A destination type ships *presets* (:class:`ActionSpec`), as Segment's Actions destinations
do: e.g. Amplitude's ``log_event`` on ``type = "track"`` with Segment's default mapping.
The workspace may override a preset's trigger or mapping fields, disable it, or add actions
of a preset's kind (:class:`ActionConfig`, the items of ``destinations[].actions``).
:func:`compile_actions` turns both into :class:`Action` objects, once, and refuses malformed
ones with a :class:`~headwater.errors.MappingError` naming the place, e.g.
``destinations[0].actions[1].trigger: column 8: ...``.

Per event, :meth:`Action.matches` evaluates the trigger and :meth:`Action.build` the mapping;
a field the vendor requires that comes out missing makes :class:`Unbuildable` (with the
field's name and where it was mapped from) instead of a half-built payload.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from headwater.errors import MappingError
from headwater.mapping.kit import Mapping, child, describe, directive_of
from headwater.mapping.paths import MISSING
from headwater.processor.fql import Condition, FqlError, compile_condition

ACTION_NAME = r"^[a-z][a-z0-9_]{0,63}$"


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action a destination type ships (a preset), or defines for the workspace to use.

    ``kind`` says what the destination does with the payload (which endpoint, which request
    shape); several presets may share one (Amplitude's track and page presets are both
    ``log_event``). ``required`` lists top-level fields of the payload the vendor cannot do
    without; ``"user_id|device_id"`` means at least one of them.
    """

    name: str
    trigger: str
    mapping: Any
    required: tuple[str, ...] = ()
    kind: str = ""  # default: the name
    enabled: bool = True  # False: available to the workspace, off unless it enables it
    source: str = ""  # where the mapping is configured, e.g. "settings.mapping" (for errors)

    @property
    def action_kind(self) -> str:
        return self.kind or self.name


class ActionConfig(BaseModel):
    """One item of a destination's ``actions:`` in the workspace (docs/mapping.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=ACTION_NAME)]
    """A preset's name, to change that preset; any other name adds an action."""

    kind: str | None = None
    """For a new action: the kind of a preset (``log_event``) whose request it sends."""

    trigger: str | None = None
    """FQL selecting the events, e.g. ``type = "track" and event = "Order Completed"``."""

    mapping: Any = None
    """Fields of the payload; merged over the preset's (or the kind's) field by field."""

    inherit_mapping: bool = True
    """False: ``mapping`` is the whole payload, the preset's fields are not kept."""

    enabled: bool = True
    """False: the action sends nothing."""


@dataclass(frozen=True, slots=True)
class Unbuildable:
    """An event an action cannot make a payload of, and why (for the ledger)."""

    reason: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    """A compiled action: its trigger and mapping, ready to run per event."""

    name: str
    kind: str
    trigger: str
    mapping: Mapping
    required: tuple[tuple[str, ...], ...] = ()
    sources: dict[str, str] = field(default_factory=dict)  # required field -> how it is mapped
    _condition: Condition = field(default=lambda _e: True, repr=False)
    for_types: frozenset[str] | None = None
    """The event types the trigger selects when it looks at nothing else (``type = "track"``,
    ``type = "page" or type = "screen"``): a destination then picks actions by type instead
    of evaluating the trigger. None: the trigger must be evaluated."""

    def matches(self, event: Any) -> bool:
        return self._condition(event)

    def build(self, event: Any) -> dict[str, Any] | Any | Unbuildable:
        """The payload for ``event``, or :class:`Unbuildable` naming the missing fields."""
        payload = self.mapping.resolve(event)
        if payload is MISSING:
            return Unbuildable(f"the mapping of action {self.name} gives nothing for this event")
        if not self.required:
            return payload
        missing = [names for names in self.required if not _present(payload, names)]
        if not missing:
            return payload
        return self._missing(missing)

    def _missing(self, missing: list[tuple[str, ...]]) -> Unbuildable:
        parts = []
        for names in missing:
            mapped = " / ".join(self.sources.get(n, "nothing") for n in names)
            parts.append(f"{' or '.join(names)} (mapped from {mapped})")
        noun = "field" if len(parts) == 1 else "fields"
        reason = f"missing required {noun} {', '.join(parts)} for action {self.name}"
        return Unbuildable(reason, tuple(n for names in missing for n in names))


def _present(payload: Any, names: tuple[str, ...]) -> bool:
    if type(payload) is not dict:
        return False
    for n in names:  # noqa: SIM110  # a loop, not any(): it runs for every event and field
        if payload.get(n) is not None:
            return True
    return False


_TYPE_IS = re.compile(r'\s*type\s*=\s*"([a-z]+)"\s*')


def types_only(trigger: str) -> frozenset[str] | None:
    """The types a trigger of the form ``type = "a" or type = "b"`` selects, else None."""
    parts = trigger.split(" or ")
    found = [_TYPE_IS.fullmatch(p) for p in parts]
    if not all(found):
        return None
    return frozenset(m.group(1) for m in found if m is not None)


def compile_actions(
    presets: Sequence[ActionSpec], configs: Sequence[ActionConfig] | None, where: str
) -> tuple[Action, ...]:
    """The enabled actions of a destination: its presets changed and extended by the
    workspace's ``actions`` (None: the presets as they are). ``where`` is the destination's
    location (``destinations[0]``); MappingError names the place of any fault."""
    by_name = {p.name: p for p in presets}
    kinds: dict[str, ActionSpec] = {}
    for p in presets:
        kinds.setdefault(p.action_kind, p)
    chosen: dict[str, tuple[ActionSpec, ActionConfig | None, str, str]] = {
        p.name: (p, None, _preset_where(p, where), _preset_where(p, where)) for p in presets
    }
    for i, config in enumerate(configs or ()):
        at = f"{where}.actions[{i}]"
        if config.name in chosen and chosen[config.name][1] is not None:
            raise MappingError(f"{at}.name", f"{config.name!r} is used by two actions")
        preset = by_name.get(config.name)
        if preset is not None:
            base = preset
            if config.kind is not None and config.kind != base.action_kind:
                raise MappingError(
                    f"{at}.kind",
                    f"{config.name} is a {base.action_kind} preset; leave kind out to change it,"
                    " or give the new action another name",
                )
        else:
            base = _kind_of(config, kinds, at)
        preset_at = _preset_where(base, where) if preset is not None else f"{at}.mapping"
        chosen[config.name] = (base, config, at, preset_at)
    actions = []
    for name, (spec, given, at, preset_at) in chosen.items():
        enabled = spec.enabled if given is None else given.enabled
        if enabled:
            actions.append(_compile(name, spec, given, at, preset_at))
    return tuple(actions)


def _preset_where(preset: ActionSpec, where: str) -> str:
    return f"{where}.{preset.source}" if preset.source else f"{where} (preset {preset.name})"


def _kind_of(config: ActionConfig, kinds: dict[str, ActionSpec], at: str) -> ActionSpec:
    known = ", ".join(sorted(kinds)) or "none"
    if config.kind is None:
        raise MappingError(
            f"{at}.kind",
            f"{config.name!r} is not a preset of this destination; to add an action, say which"
            f" kind it is (the kinds are {known}); to change a preset, use its name",
        )
    base = kinds.get(config.kind)
    if base is None:
        raise MappingError(
            f"{at}.kind", f"unknown action kind {config.kind!r}; the kinds are {known}"
        )
    if config.trigger is None:
        raise MappingError(
            f"{at}.trigger", "a new action needs a trigger, e.g. 'type = \"track\"' (FQL)"
        )
    return base


def _compile(
    name: str, base: ActionSpec, config: ActionConfig | None, at: str, preset_at: str
) -> Action:
    trigger = base.trigger if config is None or config.trigger is None else config.trigger
    where_trigger = f"{at}.trigger" if config is not None and config.trigger is not None else at
    try:
        condition = compile_condition(trigger)
    except FqlError as exc:
        raise MappingError(where_trigger, f"{exc}; triggers are FQL (docs/fql.md)") from None
    if config is None or (config.mapping is None and config.inherit_mapping):
        spec, where_mapping = base.mapping, preset_at
    else:
        spec, where_mapping = _merged(base.mapping, config, f"{at}.mapping"), f"{at}.mapping"
    mapping = Mapping(spec, where_mapping)
    required = tuple(tuple(r.split("|")) for r in base.required)
    _check_required(spec, required, where_mapping, base.action_kind)
    sources = {n: describe(spec[n]) for names in required for n in names if n in spec}
    return Action(name, base.action_kind, trigger, mapping, required, sources, condition,
                  types_only(trigger))  # fmt: skip


def _merged(base: Any, config: ActionConfig, where: str) -> Any:
    """The workspace's mapping over the preset's, field by field when both are objects."""
    override = {} if config.mapping is None else config.mapping
    if not config.inherit_mapping:
        return override
    if _is_object(base, where) and _is_object(override, where):
        return {**base, **override}
    return override


def _is_object(spec: Any, where: str) -> bool:
    return isinstance(spec, dict) and directive_of(spec, where) is None


def _check_required(
    spec: Any, required: tuple[tuple[str, ...], ...], where: str, kind: str
) -> None:
    if not required:
        return
    if not _is_object(spec, where):
        names = ", ".join(" or ".join(r) for r in required)
        raise MappingError(where, f"a {kind} action's mapping is an object of fields ({names})")
    for alternatives in required:
        if not any(n in spec for n in alternatives):
            raise MappingError(
                child(where, alternatives[0]),
                f"a {kind} action needs {' or '.join(alternatives)}; map it, e.g. "
                f"{alternatives[0]}: {{'@path': '$.userId'}}",
            )
