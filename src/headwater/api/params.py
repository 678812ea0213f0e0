"""Query parameters the management API's routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

WindowParam = Annotated[
    str, Query(pattern=r"^\d{1,6}[smhdw]$", description="How far back: 15m, 1h, 1d, 7d.")
]
