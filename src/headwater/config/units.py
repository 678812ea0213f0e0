"""Human-friendly sizes and durations in the workspace file: ``10GB``, ``500 KB``, ``7d``, ``90s``.

Plain integers are taken as bytes or seconds, so a value can always be written exactly.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _parse(value: object, units: dict[str, int], what: str, example: str) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value  # let pydantic report the type error
    if isinstance(value, int | float):
        return int(value)
    match = _PATTERN.match(value)
    if not match or match.group(2).lower() not in units:
        raise ValueError(f"{value!r} is not a {what}; write a number with a unit, e.g. {example}")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def parse_bytes(value: object) -> object:
    """``"10GB"`` → 10_000_000_000; ``"64MiB"`` → 67_108_864; ints pass through."""
    return _parse(value, _SIZE_UNITS, "size", "'500KB' or '10GiB'")


def parse_seconds(value: object) -> object:
    """``"7d"`` → 604_800; ``"90s"`` → 90; ints pass through."""
    return _parse(value, _DURATION_UNITS, "duration", "'30s', '1h' or '7d'")


ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
Seconds = Annotated[int, BeforeValidator(parse_seconds)]
