"""JSON Schema for tracking plans: checking a rule's schema, compiling it, reading its errors.

A rule's schema is checked here before it is compiled, because fastjsonschema's own errors
name no path; the faults read ``jsonSchema.properties.properties.properties.revenue.type:
'numbr' is not a JSON Schema type ...``. Schemas are compiled once each (equal schemas share
a validator) with ``fast_fail=False``, so an event that fails yields all its faults in one
call, and ``use_default=False``, because filling in defaults would write into the event.
References outside the rule (``$ref`` to a URL or a file) are refused: compiling would
fetch them.

Violation types: ``Required`` is what Segment's forwarded violations carry, and descriptions
follow Segment's wording (``properties.products is required``, ``Invalid type. Expected:
number, given: string``); the other type names are Headwater's (docs/tracking-plans.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

Validator = Callable[[Any], Any]

REQUIRED = "Required"
INVALID_TYPE = "Invalid Type"
INVALID_VALUE = "Invalid Value"
ADDITIONAL_PROPERTY = "Additional Property"
UNKNOWN = "Unknown"

_VALUE_RULES = frozenset({"enum", "const", "pattern", "format", "minimum", "maximum",
                          "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
                          "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties",
                          "maxProperties", "contains", "propertyNames"})  # fmt: skip
_SHORT = 120  # characters kept of an expected or received value


_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
_ONE_SCHEMA = ("additionalItems", "additionalProperties", "contains", "propertyNames", "not",
               "if", "then", "else")  # fmt: skip
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_DRAFTS = ("draft-04", "draft-06", "draft-07")


def schema_fault(schema: Any) -> str | None:
    """The first fault that keeps ``schema`` from compiling, as ``jsonSchema.<path>: ...``,
    or None. The structure is checked here (fastjsonschema's own errors name no path), then
    the schema is compiled."""
    if not isinstance(schema, dict):
        return "jsonSchema: must be a JSON Schema object, e.g. {type: object, properties: {}}"
    fault = _fault(schema, "jsonSchema", schema)
    if fault is not None:
        return fault
    try:
        compile_schema(schema)
    except (fastjsonschema.JsonSchemaDefinitionException, re.error, ValueError) as exc:
        return f"jsonSchema: {exc}"
    return None


def _fault(node: Any, path: str, root: dict[str, Any]) -> str | None:
    if isinstance(node, bool):
        return None
    if not isinstance(node, dict):
        return f"{path}: a schema must be an object or a boolean, not {_json_type(node)}"
    draft = node.get("$schema")
    if draft is not None and not (isinstance(draft, str) and any(d in draft for d in _DRAFTS)):
        return f"{path}.$schema: {draft!r} is not supported; use draft-07"
    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        for value in kinds:
            if value not in _TYPES:
                return (
                    f"{path}.type: {value!r} is not a JSON Schema type; "
                    f"use one of {', '.join(_TYPES)}"
                )
    for key in _ONE_SCHEMA:
        if key in node and (fault := _fault(node[key], f"{path}.{key}", root)):
            return fault
    if "items" in node:
        items = node["items"]
        for i, item in enumerate(items) if isinstance(items, list) else [(None, items)]:
            where = f"{path}.items" + ("" if i is None else f"[{i}]")
            if fault := _fault(item, where, root):
                return fault
    for key in (*_SCHEMA_MAPS, "dependencies"):
        if key not in node:
            continue
        value = node[key]
        if not isinstance(value, dict):
            return f"{path}.{key}: must be an object of schemas, not {_json_type(value)}"
        for name, sub in value.items():
            if key == "patternProperties" and (fault := _regex_fault(name)):
                return f"{path}.{key}: {name!r} is not a valid regular expression ({fault})"
            if key == "dependencies" and isinstance(sub, list):
                continue
            if fault := _fault(sub, f"{path}.{key}.{name}", root):
                return fault
    for key in _SCHEMA_LISTS:
        if key in node:
            value = node[key]
            if not isinstance(value, list) or not value:
                return f"{path}.{key}: must be a non-empty list of schemas"
            for i, sub in enumerate(value):
                if fault := _fault(sub, f"{path}.{key}[{i}]", root):
                    return fault
    required = node.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    ):
        return f"{path}.required: must be a list of property names"
    if "enum" in node and not isinstance(node["enum"], list):
        return f"{path}.enum: must be a list of the allowed values"
    for key in _NUMBERS:  # draft-04's exclusiveMinimum/exclusiveMaximum are booleans
        if key in node and not (_is_number(node[key]) or isinstance(node[key], bool)):
            return f"{path}.{key}: must be a number, not {_json_type(node[key])}"
    if "multipleOf" in node and not (_is_number(node["multipleOf"]) and node["multipleOf"] > 0):
        return f"{path}.multipleOf: must be a number greater than 0"
    for key in _COUNTS:
        if key in node:
            value = node[key]
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                return f"{path}.{key}: must be a whole number, 0 or more"
    if "pattern" in node:
        pattern = node["pattern"]
        if not isinstance(pattern, str):
            return f"{path}.pattern: must be a regular expression (a string)"
        if fault := _regex_fault(pattern):
            return f"{path}.pattern: {pattern!r} is not a valid regular expression ({fault})"
    if "format" in node and not isinstance(node["format"], str):
        return f"{path}.format: must be a string such as 'date-time'"
    ref = node.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return (
                f"{path}.$ref: {ref!r} points outside the rule; only references inside "
                "the rule's schema ('#/definitions/...') are allowed: inline the schema"
            )
        if ref.startswith("#/") and not _resolves(root, ref):
            return f"{path}.$ref: {ref!r} names nothing in the rule's schema"
    return None


def _regex_fault(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _resolves(root: dict[str, Any], ref: str) -> bool:
    node: Any = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _refuse_remote(uri: str) -> Any:
    raise ValueError(f"remote reference {uri!r} refused: inline the schema")


_NO_REMOTE = {scheme: _refuse_remote for scheme in ("http", "https", "file", "ftp", "data")}


def compile_schema(schema: dict[str, Any]) -> Validator:
    """The compiled validator of ``schema``; equal schemas share one (compiling costs
    milliseconds, and the workspace is loaded more than once). The schema is compiled as
    written, so violations come in the order its properties are declared."""
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _COMPILED.get(key)
    if validator is None:
        validator = fastjsonschema.compile(
            schema, handlers=_NO_REMOTE, use_default=False, fast_fail=False
        )
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = validator
    return validator


_COMPILED: dict[bytes, Validator] = {}
_COMPILED_MAX = 4096


# ---------------------------------------------------------------------- violations


@dataclass(frozen=True, slots=True)
class Violation:
    """One way an event fails a rule. ``path`` is where (``("properties", "revenue")``);
    ``field`` writes it as Segment does (``properties.revenue``, ``(root)`` for the event)."""

    type: str
    path: tuple[str, ...]
    description: str
    expected: str
    got: str
    rule: str  # the rule's label, e.g. 'TRACK "Order Completed"'

    @property
    def field(self) -> str:
        return ".".join(self.path) or "(root)"

    def as_protocols(self) -> dict[str, str]:
        """The entry of ``context.protocols.violations``."""
        return {"type": self.type, "field": self.field, "description": self.description}


def check(validator: Validator, event: Any, rule: str) -> list[Violation]:
    """The violations of ``event`` against a compiled schema (an empty list when valid)."""
    try:
        validator(event)
    except fastjsonschema.JsonSchemaValuesException as exc:
        return violations_of(exc.errors, rule)
    except fastjsonschema.JsonSchemaValueException as exc:
        return violations_of([exc], rule)
    return []


def violations_of(
    errors: Sequence[fastjsonschema.JsonSchemaValueException], rule: str
) -> list[Violation]:
    """fastjsonschema's errors as violations, one per fault (one per missing key)."""
    out: list[Violation] = []
    for err in errors:
        path = tuple(str(p) for p in (err.path or ["data"])[1:])
        field = ".".join(path) or "(root)"
        kind, value, definition = err.rule, err.value, err.rule_definition
        if kind == "required":
            present = value if isinstance(value, dict) else {}
            for key in definition or ():
                if key not in present:
                    where = (*path, key)
                    text = ".".join(where)
                    out.append(
                        Violation(
                            REQUIRED, where, f"{text} is required", "present", "missing", rule
                        )
                    )
        elif kind == "type":
            expected = " or ".join(definition) if isinstance(definition, list) else definition
            got = _json_type(value)
            out.append(
                Violation(
                    INVALID_TYPE,
                    path,
                    f"Invalid type. Expected: {expected}, given: {got}",
                    str(expected),
                    got,
                    rule,
                )
            )
        elif kind == "additionalProperties" and isinstance(value, dict):
            parent = err.definition if isinstance(err.definition, dict) else {}
            declared = parent.get("properties") or {}
            patterns = [re.compile(p) for p in parent.get("patternProperties") or {}]
            for key in value:
                if key in declared or any(p.search(key) for p in patterns):
                    continue
                out.append(
                    Violation(
                        ADDITIONAL_PROPERTY,
                        (*path, key),
                        f"Additional property {key} is not allowed",
                        "not present",
                        _short(value[key]),
                        rule,
                    )
                )
        else:
            name = err.name or "data"
            rest = err.message[len(name) :].strip() if err.message.startswith(name) else err.message
            kind_name = INVALID_VALUE if kind in _VALUE_RULES else UNKNOWN
            out.append(
                Violation(
                    kind_name,
                    path,
                    f"{field} {rest}",
                    f"{kind} {_short(definition)}",
                    _short(value),
                    rule,
                )
            )
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _short(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"
