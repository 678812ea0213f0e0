"""References by name between parts of the workspace (a plan's sources, a transformation's
destination, ...): one check, one message naming the field and the names there are.

A module of its own, outside ``config/``: the processor's config models use it, and
``config/`` imports them."""

from __future__ import annotations

from collections.abc import Collection

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""What the workspace's names look like (sources, destinations, plans, notifiers, ...)."""


def check_known(where: str, kind: str, name: str, known: Collection[str]) -> None:
    """Raise ValueError ``<where>: no <kind> is named '<name>'; the <kind>s are ...``."""
    if name not in known:
        raise ValueError(
            f"{where}: no {kind} is named {name!r}; "
            f"the {kind}s are {', '.join(sorted(known)) or 'none'}"
        )
