"""The directives of the mapping kit, each compiled once into a closure (docs/mapping.md).

Each entry of :data:`DIRECTIVES` takes the directive's argument, its location (for errors)
and the compiler (for the values nested in it), and returns a resolver. Resolvers never
raise on JSON input: every type a JSON value can have is handled, and what a directive
cannot use passes through unchanged or resolves to :data:`MISSING`, as Segment's do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from headwater.mapping.kit import Compile, Resolver, child, fail
from headwater.mapping.paths import MISSING, PathError, getter, parse_path

MAX_PATTERN_LENGTH = 10  # Segment's limits for @replace
MAX_REPLACEMENT_LENGTH = 10

Build = Callable[[Any, str, Compile], Resolver]


def _object_arg(
    arg: Any, where: str, name: str, allowed: tuple[str, ...], example: str
) -> dict[str, Any]:
    if not isinstance(arg, dict):
        raise fail(where, f"{name} takes an object, e.g. {example}")
    unknown = [k for k in arg if k not in allowed]
    if unknown:
        raise fail(
            child(where, str(unknown[0])),
            f"unknown option of {name}; its options are {', '.join(allowed)}",
        )
    return arg


def _literal_option(arg: dict[str, Any], key: str, where: str, kind: type, default: Any) -> Any:
    value = arg.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise fail(child(where, key), f"must be a {kind.__name__} written as it is, not {value!r}")
    return value


# -- @path, @template, @literal


def build_path(arg: Any, where: str, _compile: Compile) -> Resolver:
    if not isinstance(arg, str):
        raise fail(where, f"@path takes a path string such as '$.properties.price', not {arg!r}")
    try:
        return getter(parse_path(arg))
    except PathError as exc:
        raise fail(where, str(exc)) from None


_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)


def build_template(arg: Any, where: str, _compile: Compile) -> Resolver:
    if not isinstance(arg, str):
        raise fail(where, f"@template takes a string such as 'Viewed {{{{name}}}}', not {arg!r}")
    parts: list[str | Resolver] = []
    pos = 0
    for found in _PLACEHOLDER.finditer(arg):
        if found.start() > pos:
            parts.append(arg[pos : found.start()])
        inner = found.group(1).strip()
        if not inner:
            at = found.start() + 1
            raise fail(where, f"empty placeholder at position {at}: write {{{{name}}}}")
        try:
            parts.append(getter(parse_path(inner)))
        except PathError as exc:
            raise fail(where, f"placeholder {{{{{inner}}}}}: {exc}") from None
        pos = found.end()
    if "{{" in arg[pos:]:
        raise fail(where, f"the placeholder at position {arg.index('{{', pos) + 1} is not closed")
    if pos < len(arg):
        parts.append(arg[pos:])
    return _render(tuple(parts))


def _render(parts: tuple[str | Resolver, ...]) -> Resolver:
    if all(isinstance(p, str) for p in parts):
        text = "".join(p for p in parts if isinstance(p, str))
        return lambda _root: text

    # the text between placeholders as a format string, so one call joins the parts
    fmt = "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}"
                  for p in parts)  # fmt: skip
    getters = tuple(p for p in parts if not isinstance(p, str))

    def render(root: Any) -> Any:
        values = [g(root) for g in getters]
        return fmt.format(*[v if type(v) is str else text_of(v) for v in values])

    return render


def text_of(value: Any) -> str:
    """A value as a template shows it: strings as they are, nothing for null or missing,
    numbers and booleans as JavaScript writes them, objects and lists as JSON."""
    if type(value) is str:
        return value
    if value is None or value is MISSING:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    return encode_json(value) or ""


def build_literal(arg: Any, where: str, compile_: Compile) -> Resolver:
    return compile_(arg, where)


# -- @if, @case, @replace


def build_if(arg: Any, where: str, compile_: Compile) -> Resolver:
    options = ("exists", "blank", "then", "else")
    example = "{exists: {'@path': '$.userId'}, then: ..., else: ...}"
    arg = _object_arg(arg, where, "@if", options, example)
    tests = [k for k in ("exists", "blank") if k in arg]
    if len(tests) != 1:
        raise fail(where, f"@if takes exactly one of exists or blank, e.g. {example}")
    [test] = tests
    subject = compile_(arg[test], child(where, test))
    then = compile_(arg["then"], child(where, "then")) if "then" in arg else _missing
    otherwise = compile_(arg["else"], child(where, "else")) if "else" in arg else _missing
    if test == "exists":

        def if_exists(root: Any) -> Any:
            value = subject(root)
            return then(root) if value is not None and value is not MISSING else otherwise(root)

        return if_exists

    def if_blank(root: Any) -> Any:  # Segment's "blank": true when there is a non-empty value
        value = subject(root)
        filled = value is not None and value is not MISSING and value != ""
        return then(root) if filled else otherwise(root)

    return if_blank


def _missing(_root: Any) -> Any:
    return MISSING


def build_case(arg: Any, where: str, compile_: Compile) -> Resolver:
    arg = _object_arg(arg, where, "@case", ("operator", "value"), "{operator: lower, value: ...}")
    operator = arg.get("operator")
    if operator not in ("lower", "upper"):
        raise fail(child(where, "operator"), f"must be lower or upper, not {operator!r}")
    value = _value(arg, where, compile_, "@case")
    convert = str.lower if operator == "lower" else str.upper

    def case(root: Any) -> Any:
        got = value(root)
        return convert(got) if type(got) is str else got

    return case


def _value(arg: dict[str, Any], where: str, compile_: Compile, name: str) -> Resolver:
    if "value" not in arg:
        raise fail(where, f"{name} needs a value, e.g. value: {{'@path': '$.traits.email'}}")
    return compile_(arg["value"], child(where, "value"))


def build_replace(arg: Any, where: str, compile_: Compile) -> Resolver:
    options = ("pattern", "replacement", "pattern2", "replacement2", "ignorecase", "global",
               "value")  # fmt: skip
    arg = _object_arg(arg, where, "@replace", options, "{pattern: ' ', replacement: _, value: ...}")
    if "pattern" not in arg:
        raise fail(where, "@replace needs a pattern: the text to replace (up to 10 characters)")
    ignorecase = _literal_option(arg, "ignorecase", where, bool, False)
    every = _literal_option(arg, "global", where, bool, True)
    steps = [_replacer(arg, where, "pattern", "replacement", ignorecase, every)]
    if "pattern2" in arg:
        steps.append(_replacer(arg, where, "pattern2", "replacement2", ignorecase, every))
    elif "replacement2" in arg:
        raise fail(child(where, "replacement2"), "replacement2 needs a pattern2")
    value = _value(arg, where, compile_, "@replace")
    first = steps[0]
    second = steps[1] if len(steps) > 1 else None

    def replace(root: Any) -> Any:
        got = value(root)
        kind = type(got)
        if kind is not str:
            if kind is bool or kind is int or kind is float:
                got = text_of(got)  # Segment replaces in numbers and booleans as text
            else:
                return got
        got = first(got)
        return second(got) if second is not None else got

    return replace


def _replacer(
    arg: dict[str, Any], where: str, key: str, replacement_key: str, ignorecase: bool, every: bool
) -> Callable[[str], str]:
    pattern = arg[key]
    if not isinstance(pattern, str) or not pattern:
        raise fail(child(where, key), f"must be a non-empty string, not {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise fail(
            child(where, key),
            f"{len(pattern)} characters; a pattern has at most {MAX_PATTERN_LENGTH}",
        )
    replacement = arg.get(replacement_key, "")
    if not isinstance(replacement, str):
        raise fail(child(where, replacement_key), f"must be a string, not {replacement!r}")
    if len(replacement) > MAX_REPLACEMENT_LENGTH:
        raise fail(
            child(where, replacement_key),
            f"{len(replacement)} characters; a replacement has at most {MAX_REPLACEMENT_LENGTH}",
        )
    count = 0 if every else 1
    if not ignorecase:
        limit = -1 if every else 1
        return lambda text: text.replace(pattern, replacement, limit)
    compiled = re.compile(re.escape(pattern), re.IGNORECASE)  # literal text, compiled once
    return lambda text: compiled.sub(lambda _m: replacement, text, count)


# -- @arrayPath, @json, @flatten, @merge, @excludeWhenNull


def build_array_path(arg: Any, where: str, compile_: Compile) -> Resolver:
    example = "['$.properties.products', {product_id: {'@path': '$.id'}}]"
    if not isinstance(arg, list) or not 1 <= len(arg) <= 2:
        raise fail(where, f"@arrayPath takes [path] or [path, item shape], e.g. {example}")
    path = arg[0]
    source = (build_path(path, child(where, 0), compile_) if isinstance(path, str)
              else compile_(path, child(where, 0)))  # fmt: skip
    shape = arg[1] if len(arg) == 2 else None
    if shape is None or shape == {}:
        return source
    if not isinstance(shape, dict):
        raise fail(child(where, 1), f"the item shape must be an object, e.g. {example}")
    item = compile_(shape, child(where, 1))  # its paths read each element

    def array_path(root: Any) -> Any:
        got = source(root)
        if type(got) is dict:
            return [item(got)]
        if type(got) is list:
            return [item(element) for element in got]
        return got

    return array_path


def encode_json(value: Any) -> str | None:
    """Compact JSON as JavaScript's JSON.stringify writes it; None if it cannot be."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits, nesting deeper than orjson goes
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return None


def build_json(arg: Any, where: str, compile_: Compile) -> Resolver:
    arg = _object_arg(arg, where, "@json", ("mode", "value"), "{mode: encode, value: ...}")
    mode = arg.get("mode")
    if mode not in ("encode", "decode"):
        raise fail(child(where, "mode"), f"must be encode or decode, not {mode!r}")
    value = _value(arg, where, compile_, "@json")
    if mode == "encode":

        def encode(root: Any) -> Any:
            got = value(root)
            if got is MISSING:
                return MISSING
            text = encode_json(got)
            return MISSING if text is None else text

        return encode

    def decode(root: Any) -> Any:
        got = value(root)
        if type(got) is not str:
            return got
        try:
            return orjson.loads(got)
        except ValueError:  # orjson's JSONDecodeError
            return got  # not JSON: unchanged, as Segment does

    return decode


def build_flatten(arg: Any, where: str, compile_: Compile) -> Resolver:
    example = "{value: {'@path': '$.properties'}, separator: '.'}"
    arg = _object_arg(arg, where, "@flatten", ("value", "separator", "omitArrays"), example)
    if "separator" not in arg:
        raise fail(where, f"@flatten needs a separator, e.g. {example}")
    separator = _literal_option(arg, "separator", where, str, "")
    omit_arrays = _literal_option(arg, "omitArrays", where, bool, False)
    value = _value(arg, where, compile_, "@flatten")

    def flatten_(root: Any) -> Any:
        got = value(root)
        if type(got) is dict or (type(got) is list and not omit_arrays):
            return flatten(got, separator, omit_arrays)
        return got

    return flatten_


def flatten(value: dict[str, Any] | list[Any], separator: str, omit_arrays: bool) -> dict[str, Any]:
    """Nested keys joined by ``separator``; lists by index unless ``omit_arrays``. Empty
    objects and lists are kept as values. Iterative: deep nesting cannot exhaust the stack."""
    out: dict[str, Any] = {}
    pending: list[tuple[str | None, Any]] = [(None, value)]
    while pending:
        prefix, current = pending.pop()
        kind = type(current)
        if kind is dict and current:
            items: list[tuple[str, Any]] = list(current.items())
        elif kind is list and current and not (omit_arrays and prefix is not None):
            items = [(str(i), v) for i, v in enumerate(current)]
        else:
            if prefix is not None:
                out[prefix] = current
            continue
        for key, sub in reversed(items):  # reversed: the stack gives them back in order
            pending.append((key if prefix is None else f"{prefix}{separator}{key}", sub))
    return out


def build_merge(arg: Any, where: str, compile_: Compile) -> Resolver:
    example = "{objects: [{'@path': '$.traits'}, {'@path': '$.properties'}], direction: right}"
    arg = _object_arg(arg, where, "@merge", ("objects", "direction"), example)
    objects = arg.get("objects")
    if not isinstance(objects, list) or not objects:
        raise fail(child(where, "objects"), f"must be a list of objects to merge, e.g. {example}")
    direction = arg.get("direction")
    if direction not in ("left", "right"):
        raise fail(
            child(where, "direction"),
            f"must be right (later objects win) or left (earlier objects win), not {direction!r}",
        )
    parts = [compile_(o, child(child(where, "objects"), i)) for i, o in enumerate(objects)]
    if direction == "left":
        parts.reverse()
    ordered = tuple(parts)

    def merge(root: Any) -> Any:
        out: dict[str, Any] = {}
        for part in ordered:
            got = part(root)
            if type(got) is dict:
                out.update(got)
        return out

    return merge


def build_exclude_when_null(arg: Any, where: str, compile_: Compile) -> Resolver:
    value = compile_(arg, where)

    def exclude(root: Any) -> Any:
        got = value(root)
        if got is None:
            return MISSING
        try:
            return without_nulls(got)
        except RecursionError:  # nesting deeper than Python's stack: leave it as it is
            return got

    return exclude


def without_nulls(value: Any) -> Any:
    """``value`` with the null-valued keys of its objects removed, at any depth."""
    if type(value) is dict:
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if type(value) is list:
        return [without_nulls(v) for v in value]
    return value


DIRECTIVES: dict[str, Build] = {
    "@path": build_path,
    "@template": build_template,
    "@literal": build_literal,
    "@if": build_if,
    "@case": build_case,
    "@replace": build_replace,
    "@arrayPath": build_array_path,
    "@json": build_json,
    "@flatten": build_flatten,
    "@merge": build_merge,
    "@excludeWhenNull": build_exclude_when_null,
}
