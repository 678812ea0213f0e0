"""The mapping kit: Segment's Actions mapping directives, compiled once, run per event.

    compile_mapping({"user_id": {"@path": "$.userId"}}, where="...mapping")  ->  Mapping
    Mapping.resolve(event)  ->  {"user_id": "u1"}

A malformed spec raises :class:`~headwater.errors.MappingError` naming its place; resolving
never raises on a JSON event. Destinations use it through actions (:mod:`.actions`): a
trigger in FQL and a mapping, with the presets each destination type ships. The modules:

    paths.py       @path paths parsed into steps   kit.py      the compiler, objects, lists
    directives.py  the @ directives                actions.py  actions, presets, overrides

docs/mapping.md describes every directive and the ``actions:`` of a destination.
"""

from __future__ import annotations

from headwater.errors import MappingError
from headwater.mapping.kit import Mapping, compile_mapping, describe
from headwater.mapping.paths import MISSING

__all__ = ["MISSING", "Mapping", "MappingError", "compile_mapping", "describe"]
