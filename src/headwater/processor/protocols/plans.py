"""The tracking plans a workspace declares (Segment Protocols), as typed, validated models.

A plan is a list of Segment rules — ``{type, key, version, jsonSchema}`` with ``type`` one of
TRACK, IDENTIFY, GROUP, PAGE, SCREEN, COMMON, the shape of the Public API's ``RuleV1`` — plus
how its sources enforce it (docs/tracking-plans.md). Each rule's JSON Schema (draft-07)
validates the whole event payload; its top-level ``properties`` names ``properties`` (track,
page, screen), ``traits`` (identify, group) and ``context``.

Loading refuses a plan whose schemas would not compile, naming the rule and the fault:
``rules[3] (TRACK "Order Completed"): jsonSchema.properties.properties.properties.revenue.type:
'numbr' is not a JSON Schema type ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headwater.naming import NAME_PATTERN, check_known
from headwater.processor.protocols.schema import schema_fault

RuleType = Literal["TRACK", "IDENTIFY", "GROUP", "PAGE", "SCREEN", "COMMON"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanRule(_Model):
    """One rule, in Segment's shape (the Public API's ``RuleV1`` without its timestamps)."""

    type: RuleType
    """What the rule checks: TRACK (one event name), IDENTIFY, GROUP, PAGE, SCREEN, or COMMON
    (every event, in addition to its own rule)."""

    key: str | None = None
    """The event name of a TRACK rule; the page or screen ``name`` of a PAGE or SCREEN rule
    (without one, the rule checks every page or screen call that no named rule matches)."""

    version: int = Field(default=1, ge=1)
    """Events choose a version with ``context.protocols.event_version``; without one (or with
    an unknown one) the lowest version applies, as in Segment."""

    json_schema: dict[str, Any] = Field(alias="jsonSchema")
    """A JSON Schema (draft-07) for the whole event payload."""

    @field_validator("key")
    @classmethod
    def _blank_is_none(cls, key: str | None) -> str | None:
        return key or None  # Segment exports ``key: ""`` or ``null`` for keyless rules

    def label(self) -> str:
        """How messages name the rule: ``TRACK "Order Completed"``, ``IDENTIFY v2``."""
        text = self.type if self.key is None else f"{self.type} {orjson.dumps(self.key).decode()}"
        return text if self.version == 1 else f"{text} v{self.version}"


class Enforcement(_Model):
    """What a plan's sources do with events that do not follow it (Segment's Schema
    Configuration)."""

    unplanned_events: Literal["allow", "block"] = "allow"
    """A track call whose event name has no TRACK rule: let it through, or block it."""

    unplanned_properties: Literal["allow", "omit"] = "allow"
    """Properties (track, page, screen) or traits (identify, group) the event's rule does not
    declare: keep them, or remove them (listed in ``context.protocols.omitted``)."""

    on_violation: Literal["allow", "block", "omit_properties"] = "allow"
    """An event that fails its rule's or the COMMON rule's JSON Schema: let it through (the
    violations are listed in ``context.protocols.violations``), block it, or remove the
    invalid properties/traits (listed in ``context.protocols.omitted_on_violation``)."""

    forward_blocked_to: str | None = None
    """A source that receives the blocked events (instead of discarding them)."""

    forward_violations_to: str | None = None
    """A source that receives one ``Violation Generated`` track call per violation."""


class TrackingPlanConfig(_Model):
    """A tracking plan and the sources it checks."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case name, unique in the workspace; ``trackingPlanID`` of forwarded violations."""

    sources: list[str] = []
    """The sources whose events are checked (a source follows at most one plan)."""

    rules: list[PlanRule] = []
    enforcement: Enforcement = Enforcement()

    @model_validator(mode="after")
    def _check_rules(self) -> TrackingPlanConfig:
        faults: list[str] = []
        seen: set[tuple[str, str | None, int]] = set()
        commons = 0
        for i, rule in enumerate(self.rules):
            where = f"rules[{i}] ({rule.label()})"
            if rule.type == "TRACK" and not rule.key:
                faults.append(f"rules[{i}] (TRACK): a TRACK rule needs a key, the event name")
                continue
            if rule.type in ("IDENTIFY", "GROUP", "COMMON") and rule.key:
                faults.append(f"{where}: {rule.type} rules have no key; remove it")
                continue
            ident = (rule.type, rule.key, rule.version)
            if ident in seen:
                faults.append(f"{where}: another rule has the same type, key and version")
            seen.add(ident)
            commons += rule.type == "COMMON"
            if rule.type == "COMMON" and commons > 1:
                faults.append(f"{where}: a plan has one COMMON rule; merge them")
            fault = schema_fault(rule.json_schema)
            if fault is not None:
                faults.append(f"{where}: {fault}")
        for key, target in (
            ("forward_blocked_to", self.enforcement.forward_blocked_to),
            ("forward_violations_to", self.enforcement.forward_violations_to),
        ):
            if target is not None and target in self.sources:
                faults.append(
                    f"enforcement.{key}: {target!r} is one of the plan's own sources, so its "
                    "events would be checked again; forward to a source without this plan"
                )
        if faults:
            raise ValueError("\n".join(faults))
        return self


def check_tracking_plans(plans: Sequence[TrackingPlanConfig], sources: set[str]) -> None:
    """The workspace-level checks: names unique, sources known, a source in one plan at most,
    and forwarding targets known sources that follow no plan (forwarded events are not
    checked again, so forwarding can never loop). Raises ValueError naming the field, e.g.
    ``tracking_plans[1].sources[0]: ...``."""
    names: set[str] = set()
    owner: dict[str, str] = {}
    for i, plan in enumerate(plans):
        where = f"tracking_plans[{i}]"
        if plan.name in names:
            raise ValueError(f"{where}.name: {plan.name!r} is used by two tracking plans")
        names.add(plan.name)
        for j, source in enumerate(plan.sources):
            check_known(f"{where}.sources[{j}]", "source", source, sources)
            if source in owner:
                raise ValueError(
                    f"{where}.sources[{j}]: source {source!r} already follows plan "
                    f"{owner[source]!r}; a source follows one tracking plan"
                )
            owner[source] = plan.name
    for i, plan in enumerate(plans):
        for key in ("forward_blocked_to", "forward_violations_to"):
            target = getattr(plan.enforcement, key)
            where = f"tracking_plans[{i}].enforcement.{key}"
            if target is not None:
                check_known(where, "source", target, sources)
            if target is not None and target in owner:
                raise ValueError(
                    f"{where}: source {target!r} follows plan {owner[target]!r}; forward to a "
                    "source that follows no tracking plan (add one, e.g. 'protocols-audit')"
                )
