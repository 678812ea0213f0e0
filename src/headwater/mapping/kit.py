"""The mapping kit's compiler: a mapping spec (plain JSON/YAML) -> closures run per event.

A spec is made of *raw values*, copied into the payload as they are, and *directives*:
an object with exactly one key that starts with ``@`` (``{"@path": "$.userId"}``). Objects
and lists are walked; a key whose value resolves to nothing (:data:`MISSING`, e.g. a
``@path`` to an absent field) is dropped, while ``null`` is kept. The directives are in
:mod:`.directives`; docs/mapping.md describes them.

Everything is decided when the spec is compiled: paths are parsed into steps, templates into
parts, constant subtrees recognised. A malformed spec raises
:class:`~headwater.errors.MappingError` naming the exact place (``….user_id.@path: …``).
Resolving never raises on a JSON event (a property test holds it to that).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from headwater.errors import MappingError
from headwater.mapping.paths import MISSING

Resolver = Callable[[Any], Any]  # the event (or, inside @arrayPath, an element) -> value
Compile = Callable[[Any, str], Resolver]  # (spec, where) -> resolver

DIRECTIVE_NAME = re.compile(r"^@[a-z][a-zA-Z0-9]+$")
NOT_SUPPORTED = {
    "@transform": "build the payload in one mapping instead",
    "@liquid": "use @template for placeholders, @if and @case for logic",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_@$][A-Za-z0-9_\-@$]*$")


def child(where: str, key: str | int) -> str:
    """The location of ``key`` inside ``where``: ``a.b``, ``a[0]``, ``a["first name"]``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{where}.{key}" if where else key
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{where}["{quoted}"]'


def fail(where: str, message: str) -> MappingError:
    return MappingError(where or "(mapping)", message)


def compile_value(spec: Any, where: str) -> Resolver:
    """Compile any part of a mapping. ``where`` names it in errors."""
    if isinstance(spec, dict):
        directive = directive_of(spec, where)
        if directive is not None:
            return _compile_directive(directive, spec[directive], child(where, directive))
        return _compile_object(spec, where)
    if isinstance(spec, list):
        return _compile_list(spec, where)
    if spec is None or isinstance(spec, str | int | float | bool):
        return _constant(spec)
    raise fail(
        where,
        f"a {type(spec).__name__} is not a JSON value; quote it in YAML "
        "(dates and times must be written as strings)",
    )


def directive_of(spec: dict[Any, Any], where: str) -> str | None:
    """The directive an object is (its one ``@`` key), None for a plain object."""
    for key in spec:
        if not isinstance(key, str):
            raise fail(child(where, str(key)), f"keys must be strings; quote {key!r} in YAML")
    directives: list[str] = [k for k in spec if k.startswith("@")]
    if not directives:
        return None
    if len(directives) > 1:
        raise fail(
            where,
            f"an object holds one directive, not {len(directives)} ({', '.join(directives)}); "
            "nest them instead, e.g. {'@case': {'operator': 'lower', 'value': {'@path': ...}}}",
        )
    if len(spec) > 1:
        plain = ", ".join(k for k in spec if not k.startswith("@"))
        raise fail(
            where,
            f"{directives[0]} cannot be mixed with plain keys ({plain}) in one object; put the"
            f" directive under a key of its own, e.g. {{value: {{'{directives[0]}': ...}}}}",
        )
    return directives[0]


def _compile_directive(name: str, arg: Any, where: str) -> Resolver:
    from headwater.mapping.directives import DIRECTIVES  # they compile their arguments here

    build = DIRECTIVES.get(name)
    if build is not None:
        return build(arg, where, compile_value)
    if name in NOT_SUPPORTED:
        raise fail(where, f"{name} is not supported by Headwater; {NOT_SUPPORTED[name]}")
    known = ", ".join(sorted(DIRECTIVES))
    if not DIRECTIVE_NAME.match(name):
        raise fail(where, f"{name!r} is not a directive name; the directives are {known}")
    raise fail(where, f"unknown directive {name}; the directives are {known}")


def _constant(value: Any) -> Resolver:
    def constant(_root: Any) -> Any:
        return value

    constant.constant = True  # type: ignore[attr-defined]  # the object builder inlines it
    return constant


def _compile_object(spec: dict[str, Any], where: str) -> Resolver:
    """An object's builder, generated as straight-line Python once per spec.

    Building objects is most of a mapping's work, so the builder is written out field by
    field instead of looping over resolvers: a ``@path`` of keys (``$.userId``,
    ``$.context.ip``, the common case) becomes dict lookups in place, a constant an
    assignment, anything else a call of its resolver. Keys and values reach the generated
    code only as names bound in its namespace (``_k0``, ``_r0``), never as source text, so
    no spec can inject code."""
    namespace: dict[str, Any] = {"MISSING": MISSING, "_no_get": _no_get}
    lines = ["def build(root):", "    out = {}"]
    lookups = False
    parents: dict[tuple[str, ...], str] = {}  # a path's prefix -> the local holding its object

    def parent(prefix: tuple[str, ...], i: int) -> str:
        """The local that holds the object at ``prefix`` (None when there is none), written
        out once per builder: fields of one object (``context.device.*``) share its lookup."""
        name = parents.get(prefix)
        if name is not None:
            return name
        name = f"_p{len(parents)}"
        parents[prefix] = name
        key = f"_s{i}_{len(prefix) - 1}"
        namespace[key] = prefix[-1]
        if len(prefix) == 1:
            lines.append(f"    {name} = get({key}, None)")
        else:
            up = parent(prefix[:-1], i)
            lines.append(f"    {name} = {up}.get({key}) if {up} is not None else None")
        lines.append(f"    if type({name}) is not dict: {name} = None")
        return name

    for i, (key, value) in enumerate(spec.items()):
        resolve = compile_value(value, child(where, key))
        namespace[f"_k{i}"] = key
        keys = getattr(resolve, "path_keys", None)
        if keys is not None:  # a @path of keys only: lookups in place, nothing raises
            lookups = True
            last = f"_s{i}_{len(keys) - 1}"
            namespace[last] = keys[-1]
            if len(keys) == 1:
                lines.append(f"    v = get({last}, MISSING)")
            else:
                up = parent(tuple(keys[:-1]), i)
                lines.append(f"    v = {up}.get({last}, MISSING) if {up} is not None else MISSING")
            lines.append(f"    if v is not MISSING: out[_k{i}] = v")
        elif getattr(resolve, "constant", False) and not isinstance(resolve(None), dict | list):
            namespace[f"_c{i}"] = resolve(None)
            lines.append(f"    out[_k{i}] = _c{i}")
        else:
            namespace[f"_r{i}"] = resolve
            lines += [f"    v = _r{i}(root)", f"    if v is not MISSING: out[_k{i}] = v"]
    if lookups:
        lines.insert(2, "    get = root.get if type(root) is dict else _no_get")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<mapping {where or 'object'}>", "exec"), namespace)
    build: Resolver = namespace["build"]
    return build


def _no_get(_key: str, default: Any) -> Any:
    """``dict.get`` of a value that is not an object: nothing there."""
    return default


def _compile_list(spec: list[Any], where: str) -> Resolver:
    items = tuple(compile_value(value, child(where, i)) for i, value in enumerate(spec))

    def build(root: Any) -> Any:
        out = []
        for resolve in items:
            value = resolve(root)
            out.append(None if value is MISSING else value)  # as JSON encodes undefined in lists
        return out

    return build


class Mapping:
    """A compiled mapping. ``resolve(event)`` gives the payload, or :data:`MISSING` when a
    top-level directive finds nothing. Payloads are new objects per event, but values copied
    from the event are the event's own: do not mutate them in place."""

    __slots__ = ("resolve", "spec", "where")

    resolve: Resolver
    """``resolve(event)``: the payload (the compiled resolver itself, not a method around
    it: it runs once per event)."""

    def __init__(self, spec: Any, where: str) -> None:
        self.spec = spec
        self.where = where
        self.resolve = compile_value(spec, where)

    def __repr__(self) -> str:
        return f"Mapping({self.spec!r})"


def compile_mapping(spec: Any, where: str = "mapping") -> Mapping:
    """Compile ``spec`` once; MappingError naming the place inside ``where`` if malformed."""
    return Mapping(spec, where)


def describe(spec: Any) -> str:
    """How a field is mapped, in a few words, for messages: ``$.userId``, ``a @template``."""
    if isinstance(spec, dict) and len(spec) == 1:
        [(key, arg)] = spec.items()
        if key == "@path" and isinstance(arg, str):
            return arg if arg.startswith("$") else f"$.{arg}"
        if key == "@if" and isinstance(arg, dict):
            sources = [describe(arg[k]) for k in ("then", "else") if k in arg]
            return " or ".join(sources) if sources else "an @if"
        if isinstance(key, str) and key.startswith("@"):
            inner = arg.get("value") if isinstance(arg, dict) else None
            return f"{key} of {describe(inner)}" if inner is not None else f"a {key}"
    if isinstance(spec, dict | list):
        return "an object" if isinstance(spec, dict) else "a list"
    return repr(spec)
