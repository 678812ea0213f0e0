"""Helpers for the vendor destination tests: a destination pointed at its fake."""

from __future__ import annotations

from typing import Any

from headwater.delivery.http import HttpClient
from headwater.destinations import TYPES
from headwater.destinations.base import Context, Destination
from headwater.mapping.actions import ActionConfig


def vendor(
    type_: str,
    settings: dict[str, Any],
    http: HttpClient,
    batch: int = 1,
    actions: tuple[ActionConfig, ...] | None = None,
) -> Destination[Any]:
    kind = TYPES[type_]
    return kind("dest", kind.settings_model.model_validate(settings),
                Context(http, 5.0, batch, actions))  # fmt: skip
