"""Field paths outside expressions: parsed with FQL's syntax, and edited without mutation.

Filters and transformations name fields the way FQL does (``properties.email``,
``properties.first\\ name``) and change them. Edits here never change their input: each
returns a new value that shares whatever it did not change with the old one (the objects on
the way to an edit are copied, nothing else), or the input itself when nothing changed, so
``result is event`` tells a caller that nothing was done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from headwater.processor.fql.errors import FqlError
from headwater.processor.fql.lexer import END, KEYWORD, PATH, describe, tokenize


class _Missing:
    """No value at all, unlike null: the key is absent (or is to be removed)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
Edit = Callable[[Any], Any]  # the value at a path (or MISSING) -> its replacement (or MISSING)
Tree = dict[str, "Tree | None"]  # what an allow-list keeps: None keeps the whole value


def parse_path(text: str) -> tuple[str, ...]:
    """The segments of a field path such as ``properties.my\\.key``; FqlError otherwise."""
    tokens = tokenize(text)
    first = tokens[0]
    if first.kind == KEYWORD:
        raise FqlError(
            f"'{first.text}' is a keyword; escape it to name a field: \\{first.text}",
            first.column,
            text,
        )
    if first.kind != PATH:
        raise FqlError(
            f"expected a field path such as properties.email, found {describe(first)}",
            first.column,
            text,
        )
    if tokens[1].kind != END:
        raise FqlError(
            f"expected one field path, found {describe(tokens[1])} after it; escape spaces"
            " and other characters in field names with a backslash (first\\ name)",
            tokens[1].column,
            text,
        )
    segments: tuple[str, ...] = first.value
    return segments


def get_path(value: Any, segments: tuple[str, ...]) -> Any:
    """The value at the path through objects, or MISSING."""
    for key in segments:
        if type(value) is not dict or key not in value:
            return MISSING
        value = value[key]
    return value


def update(
    value: Any,
    segments: tuple[str, ...],
    edit: Edit,
    *,
    through_lists: bool = False,
    create: bool = False,
) -> Any:
    """``value`` with ``edit`` applied at the path, copied where it changed.

    ``through_lists``: a list met on the way applies the rest of the path to each of its
    objects (``properties.products.price`` reaches the price of every product), as
    Segment's destination filters do. ``create``: missing objects on the way are created
    (to set a new field); otherwise a missing step leaves the value as it is."""
    return _update(value, segments, 0, edit, through_lists, create)


def _update(
    value: Any, segments: tuple[str, ...], at: int, edit: Edit, lists: bool, create: bool
) -> Any:
    kind = type(value)
    if kind is list and lists:
        items = [_update(x, segments, at, edit, lists, create) if type(x) is dict else x
                 for x in value]  # fmt: skip
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return items if changed else value
    if kind is not dict:
        return value
    key = segments[at]
    current = value.get(key, MISSING)
    if at == len(segments) - 1:
        new = edit(current)
    elif current is MISSING:
        if not create:
            return value
        fresh: dict[str, Any] = {}
        new = _update(fresh, segments, at + 1, edit, lists, create)
        if new is fresh:
            return value
    else:
        new = _update(current, segments, at + 1, edit, lists, create)
    if new is current:
        return value
    copy = dict(value)
    if new is MISSING:
        del copy[key]
    else:
        copy[key] = new
    return copy


def allow_tree(paths: list[tuple[str, ...]]) -> Tree:
    """The tree of an allow-list: ``[("a",), ("b", "c")]`` keeps all of ``a`` and, of ``b``,
    only ``c``."""
    tree: Tree = {}
    for segments in paths:
        node = tree
        for i, key in enumerate(segments):
            last = i == len(segments) - 1
            if key in node and node[key] is None:
                break  # already kept whole
            if last:
                node[key] = None
                break
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
    return tree


def prune(value: Any, tree: Tree) -> Any:
    """Keep only what ``tree`` allows. Lists apply the tree to each of their objects; a value
    that is neither an object nor a list, where the tree expects fields, is dropped (an
    allow-list keeps only what it names). Null stays null."""
    kind = type(value)
    if kind is dict:
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key not in tree:
                continue
            sub = tree[key]
            new = item if sub is None else prune(item, sub)
            if new is not MISSING:
                kept[key] = new
        same = len(kept) == len(value) and all(kept[k] is v for k, v in value.items())
        return value if same else kept
    if kind is list:
        items = [prune(x, tree) for x in value if type(x) is dict]
        same = len(items) == len(value) and all(a is b for a, b in zip(items, value, strict=True))
        return value if same else items
    return value if value is None or value is MISSING else MISSING
