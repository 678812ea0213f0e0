"""Configuration: the workspace model (YAML file) and process settings."""

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
