"""Functions: user code (source, destination and insert functions) in the pipeline.

Handlers import what they need from here, as Segment's functions find it as globals::

    from headwater.functions import EventNotSupported, RetryError, analytics, fetch

The runtime (:mod:`.runtime`, the child side) also puts these names in each function's
module, so a function written for Segment's globals needs no import. The parent side is
:mod:`.pool` (worker processes, limits, replacement) and :mod:`.host` (the pools of one
process, their stats and reloads). docs/functions.md has the trust model.
"""

from headwater.functions.api import (
    EventNotSupported,
    FunctionError,
    InvalidEventPayload,
    Request,
    RetryError,
    ValidationError,
    analytics,
    fetch,
)

__all__ = [
    "EventNotSupported",
    "FunctionError",
    "InvalidEventPayload",
    "Request",
    "RetryError",
    "ValidationError",
    "analytics",
    "fetch",
]
