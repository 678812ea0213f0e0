"""Configuration: the workspace model (YAML file) and process settings.

The workspace names are loaded on first use (PEP 562), not when the package is imported:
``workspace.py`` validates sections that belong to the stages (tracking plans, filters,
alerts), and those stages' own config modules import ``headwater.config.units`` and
``headwater.config.urls``. Importing ``workspace`` here made ``import headwater.status.config``
on its own a circular import (status.config → config → workspace → status.config).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headwater.config.workspace import (
        GatewayConfig,
        LogConfig,
        SourceConfig,
        Workspace,
        load_workspace,
        parse_workspace,
    )

__all__ = [
    "GatewayConfig",
    "LogConfig",
    "SourceConfig",
    "Workspace",
    "load_workspace",
    "parse_workspace",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("headwater.config.workspace"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
