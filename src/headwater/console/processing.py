"""What the Tracking plans, Violations and Filters parts of the console show, computed here so
the templates stay markup: a rule's declared fields read from its JSON Schema, the violation
types in a fixed order, and a destination filter's actions as one line of text.

A rule's fields: the keys its schema declares under ``properties.properties`` (track, page,
screen), ``properties.traits`` (identify, group) or, for the COMMON rule, at the top of the
event; nested objects and array items are listed under their parent
(``products[].price``), with their type, whether they are required and their constraints
(``pattern``, ``enum``, ``minimum``...). The whole schema is shown next to them as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.processor.filters import (
    AllowPropertiesAction,
    DropAction,
    DropPropertiesAction,
    FilterAction,
    SampleAction,
)
from headwater.processor.protocols.enforcer import UNPLANNED_EVENT, UNPLANNED_PROPERTY
from headwater.processor.protocols.schema import (
    ADDITIONAL_PROPERTY,
    INVALID_TYPE,
    INVALID_VALUE,
    REQUIRED,
    UNKNOWN,
)

VIOLATION_TYPES = (
    REQUIRED, INVALID_TYPE, INVALID_VALUE, ADDITIONAL_PROPERTY, UNKNOWN, UNPLANNED_EVENT,
    UNPLANNED_PROPERTY,
)  # fmt: skip
SECTIONS = {
    "TRACK": "properties", "PAGE": "properties", "SCREEN": "properties",
    "IDENTIFY": "traits", "GROUP": "traits",
}  # fmt: skip
MAX_DEPTH = 4
MAX_FIELDS = 200
CONSTRAINTS = (
    "format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "additionalProperties",
)  # fmt: skip
COMBINERS = ("anyOf", "oneOf", "allOf", "not", "if")


@dataclass(frozen=True, slots=True)
class DeclaredField:
    path: str  # under the rule's section: ``revenue``, ``products[].price``
    type: str  # ``number``, ``string or null``, ``array of object``, ``any``
    required: bool
    constraints: str  # ``pattern ^[A-Z]{3}$ · minLength 3``, or ""
    description: str


@dataclass(frozen=True, slots=True)
class RuleView:
    type: str
    key: str | None
    version: int
    section: str | None  # ``properties`` or ``traits``; None: the whole event (COMMON)
    required: list[str]  # the section's required keys
    fields: list[DeclaredField]
    notes: list[str]  # what the list cannot show: anyOf and the like at the section's level
    schema: dict[str, Any]


def violation_types(events: Iterable[dict[str, Any]]) -> list[str]:
    """The violation types the events have, in the order of the docs' table."""
    seen = {t for e in events for t in e["by_type"]}
    return [t for t in VIOLATION_TYPES if t in seen] + sorted(seen - set(VIOLATION_TYPES))


def rule_view(rule: dict[str, Any]) -> RuleView:
    """A rule as the plan's page shows it (``rule`` as the API returns it: ``jsonSchema``)."""
    schema = rule.get("jsonSchema") or {}
    section = SECTIONS.get(str(rule.get("type")))
    part: Any = schema
    if section is not None:
        props = schema.get("properties")
        part = props.get(section) if isinstance(props, dict) else None
    part = part if isinstance(part, dict) else {}
    fields: list[DeclaredField] = []
    _walk(part, "", 0, fields)
    notes = [f"{k}: see the JSON Schema" for k in COMBINERS if k in part]
    if "patternProperties" in part:
        patterns = ", ".join(part["patternProperties"])
        notes.append(f"keys matching {patterns} are declared too")
    return RuleView(
        str(rule.get("type")), rule.get("key"), int(rule.get("version") or 1), section,
        _required(part), fields, notes, schema,
    )  # fmt: skip


def _required(schema: dict[str, Any]) -> list[str]:
    required = schema.get("required")
    return [str(k) for k in required] if isinstance(required, list) else []


def _walk(schema: dict[str, Any], prefix: str, depth: int, out: list[DeclaredField]) -> None:
    props = schema.get("properties")
    if not isinstance(props, dict) or depth >= MAX_DEPTH:
        return
    required = set(_required(schema))
    for key, sub in props.items():
        if len(out) >= MAX_FIELDS:
            return
        sub = sub if isinstance(sub, dict) else {}
        path = f"{prefix}{key}"
        text = str(sub.get("description") or "")
        out.append(DeclaredField(path, _type_text(sub), key in required, _constraints(sub), text))
        _walk(sub, f"{path}.", depth + 1, out)
        items = sub.get("items")
        if isinstance(items, dict):
            _walk(items, f"{path}[].", depth + 1, out)


def _type_text(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        text = " or ".join(str(k) for k in kind)
    elif isinstance(kind, str):
        text = kind
    elif "enum" in schema or "const" in schema:
        return "fixed values"
    elif "$ref" in schema:
        return f"see {schema['$ref']}"
    elif any(k in schema for k in COMBINERS):
        return "see the JSON Schema"
    else:
        return "any"
    items = schema.get("items")
    if kind == "array" and isinstance(items, dict) and isinstance(items.get("type"), str):
        text += f" of {items['type']}"
    return text


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema and isinstance(schema["enum"], list):
        parts.append("one of " + ", ".join(_json(v) for v in schema["enum"]))
    if "const" in schema:
        parts.append(f"exactly {_json(schema['const'])}")
    for key in CONSTRAINTS:
        if key in schema and not isinstance(schema[key], dict | list):
            value = schema[key]
            parts.append(f"{key} {value if isinstance(value, str) else _json(value)}")
    parts += [k for k in COMBINERS if k in schema]
    return " · ".join(parts)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def action_text(action: FilterAction) -> str:
    """``DROP``, ``SAMPLE 10% by userId``, ``DROP_PROPERTIES properties.email``."""
    if isinstance(action, DropAction):
        return "DROP"
    if isinstance(action, SampleAction):
        return f"SAMPLE {action.percent * 100:g}% by {action.path or 'messageId'}"
    if isinstance(action, DropPropertiesAction | AllowPropertiesAction):
        return f"{action.type} {action.describe()}"
    return str(action.type)
