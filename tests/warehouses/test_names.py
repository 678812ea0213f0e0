"""The naming rules of docs/warehouses.md#naming, one case a line."""

from __future__ import annotations

import duckdb
import pytest

from headwater.warehouses.names import RESERVED_WORDS, identifier, quote, schema_name
from headwater.warehouses.schema import event_table


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("accountType", "account_type"),  # camelCase
        ("Order Completed", "order_completed"),  # spaces
        ("HTMLParser", "html_parser"),  # acronyms
        ("userID", "user_id"),
        ("product.id", "product_id"),  # punctuation
        ("  --weird__name--  ", "weird_name"),  # runs collapse, ends trimmed
        ("Größe", "größe"),  # non-Latin letters are kept, lower-cased
        ("注文完了", "注文完了"),
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKC
        ("25dollarpurchase", "_25dollarpurchase"),  # leading digit
        ("select", "_select"),  # reserved words
        ("Order", "_order"),
        ("user", "_user"),
        ("Pivot", "_pivot"),  # reserved in DuckDB only
        ("!!!", None),  # nothing usable
        ("", None),
    ],
)
def test_identifier(raw: str, expected: str | None) -> None:
    assert identifier(raw) == expected


def test_every_duckdb_reserved_word_is_reserved() -> None:
    """A column named like one (``qualify``, ``pivot``) would have to be quoted in every
    analyst's query: it gets the leading ``_`` instead."""
    found = duckdb.sql("SELECT keyword_name FROM duckdb_keywords() "
                       "WHERE keyword_category = 'reserved'").fetchall()  # fmt: skip
    assert {word for (word,) in found} <= RESERVED_WORDS


def test_long_names_keep_a_prefix_and_a_hash_and_stay_distinct() -> None:
    a, b = identifier("x" * 4096), identifier("x" * 4095 + "y")
    assert a is not None and b is not None
    assert len(a.encode()) <= 63 and len(b.encode()) <= 63
    assert a.startswith("x" * 54 + "_") and a != b


def test_long_multibyte_names_are_cut_on_a_character() -> None:
    name = identifier("é" * 100)
    assert name is not None and len(name.encode()) <= 63
    assert name.startswith("é")


def test_event_tables_never_take_a_fixed_tables_name() -> None:
    assert event_table("Users") == "_users"
    assert event_table("Tracks") == "_tracks"
    assert event_table("Order Completed") == "order_completed"
    assert event_table("???") is None


def test_schema_is_the_source_snake_cased() -> None:
    assert schema_name("web-app") == "web_app"


def test_quote_doubles_quotes() -> None:
    assert quote('a"; DROP TABLE x; --') == '"a""; DROP TABLE x; --"'
