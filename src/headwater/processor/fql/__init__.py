"""FQL, Segment's Filter Query Language: parsed once, compiled to closures, run per event.

    compile_condition('type = "track" and match(event, "Debug *")')  ->  (event) -> bool
    compile_value('lowercase(traits.email)')                          ->  (event) -> value
    parse(text)                                                       ->  syntax tree

Destination filters and transformations use it to select events and to compute values.
A compiled expression never raises, whatever JSON the event holds; a malformed one is
refused when compiled, with an :class:`FqlError` that gives the column and what to write.
The language is described in docs/fql.md; the modules are:

    lexer.py      tokens            parser.py    grammar -> nodes.py (the syntax tree)
    evaluate.py   nodes -> closures functions.py the built-in functions (glob.py: match)
    paths.py      field paths outside expressions, and edits that never mutate
"""

from __future__ import annotations

from headwater.processor.fql.errors import FqlError
from headwater.processor.fql.evaluate import (
    Condition,
    ValueExpr,
    checked,
    compile_condition,
    compile_value,
    strict_equal,
)
from headwater.processor.fql.functions import FUNCTIONS
from headwater.processor.fql.nodes import Node, format_path, to_fql
from headwater.processor.fql.parser import parse

__all__ = [
    "FUNCTIONS",
    "Condition",
    "FqlError",
    "Node",
    "ValueExpr",
    "checked",
    "compile_condition",
    "compile_value",
    "format_path",
    "parse",
    "strict_equal",
    "to_fql",
]
