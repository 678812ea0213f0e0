"""Warehouse names: how an event name, a property or a source becomes a SQL identifier.

The rules (docs/warehouses.md#naming, each tested in tests/warehouses/test_names.py):

1. snake_case the way Segment's ``go-snakecase`` does: a word boundary before an upper-case
   letter that follows a lower-case letter or digit (``accountType`` → ``account_type``) and
   before the last capital of an acronym (``HTMLParser`` → ``html_parser``); everything
   lower-cased; any character that is not a letter or digit becomes ``_``; runs of ``_``
   collapse and leading/trailing ``_`` go.
2. Letters and digits of any script are kept (``Größe`` → ``größe``, ``注文`` → ``注文``):
   PostgreSQL and DuckDB take them in quoted identifiers, and Headwater quotes every one.
3. A name left empty (``"!!!"``) has no usable name: its value goes to ``_discards``.
4. A name starting with a digit, or equal to a SQL reserved word, gets a leading ``_``
   (``25dollar`` → ``_25dollar``, ``select`` → ``_select``), so analysts need no quotes.
5. A name longer than 63 bytes (PostgreSQL's limit) keeps its first 54 bytes and ends in
   ``_`` + 8 hex digits of the full name's SHA-1, so two long names stay two columns.

Names are quoted by :func:`quote` wherever they reach SQL; nothing user-sent is ever
spliced into a statement unquoted.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

MAX_IDENTIFIER_BYTES = 63
_HASHED_KEEP_BYTES = 54

_LOWER_UPPER = re.compile(r"([^\W_A-Z])([A-Z])")
_ACRONYM = re.compile(r"([A-Z])([A-Z][^\W_A-Z])")
_NOT_WORD = re.compile(r"[\W_]+")

RESERVED_WORDS = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "binary",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "group",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "natural",
        "not",
        "notnull",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "outer",
        "overlaps",
        "placing",
        "primary",
        "references",
        "returning",
        "right",
        "select",
        "session_user",
        "similar",
        "some",
        "symmetric",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
        # DuckDB's own (duckdb_keywords(), category "reserved"), beyond PostgreSQL's
        "describe",
        "lambda",
        "pivot",
        "pivot_longer",
        "pivot_wider",
        "qualify",
        "show",
        "summarize",
        "unpivot",
    ]
)
"""PostgreSQL's reserved key words (its docs' appendix C) and DuckDB's (checked against
``duckdb_keywords()`` by ``tests/warehouses/test_names.py``)."""


@functools.lru_cache(maxsize=65536)  # names repeat in every event: shape each once
def snake_case(name: str) -> str:
    """Rules 1-2: ``Order Completed`` → ``order_completed``; ``""`` when nothing is left."""
    text = unicodedata.normalize("NFKC", name)
    text = _ACRONYM.sub(r"\1_\2", _LOWER_UPPER.sub(r"\1_\2", text))
    return _NOT_WORD.sub("_", text.lower()).strip("_")


def identifier(name: str) -> str | None:
    """A raw name as a column or table name (rules 1-5), None when it has no usable name."""
    return fit(snake_case(name))


@functools.lru_cache(maxsize=65536)
def fit(name: str) -> str | None:
    """Rules 3-5 on an already snake-cased name (a flattened path's parts joined by ``_``)."""
    if not name:
        return None
    if name[0].isdigit() or name in RESERVED_WORDS:
        name = "_" + name
    encoded = name.encode()
    if len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    head = encoded[:_HASHED_KEEP_BYTES].decode(errors="ignore")
    return f"{head}_{digest}"


def schema_name(source: str) -> str:
    """The schema of a source: its name, snake_cased (``web-app`` → ``web_app``)."""
    return identifier(source) or "_source"


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (a ``"`` inside is doubled)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"
