"""Headwater's one exception tree.

Every error a person can see says what was wrong and what to do about it.

    HeadwaterError
    ├── ConfigError            the workspace file or a setting is invalid (names the field)
    │   └── MappingError       a destination mapping is malformed (names the field in it)
    ├── LogError               the event log cannot do what was asked
    │   ├── LogUnavailable     back-pressure: the log refuses writes for now (has retry_after_secs)
    │   └── LogClosed          the log was closed while a write was waiting
    └── IngestError            a request or an event was refused at the Tracking API
                               (has code, status and message; see gateway/errors.py for codes)

Errors of underlying libraries (sqlite3, yaml, pydantic) are translated where they are
caught, with ``raise ... from exc``, so callers only ever handle this tree.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Base of every error Headwater raises on purpose."""


class ConfigError(HeadwaterError):
    """The workspace file or a process setting is invalid.

    The message names the file and the field, e.g. ``sources[1].write_key: ...``.
    """


class MappingError(ConfigError):
    """A mapping (docs/mapping.md) cannot be compiled.

    ``where`` is the exact location, e.g. ``destinations[2].actions[0].mapping.user_id.@path``;
    the message reads ``<where>: <what was wrong and what to write instead>``.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class LogError(HeadwaterError):
    """The event log failed to do what was asked."""


class LogUnavailable(LogError):
    """The log refuses writes for now (disk budget or write latency exceeded).

    Callers answer 503 with ``Retry-After: retry_after_secs`` so clients keep their events.
    """

    def __init__(self, message: str, *, reason: str, retry_after_secs: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_secs = retry_after_secs


class LogClosed(LogError):
    """The log was closed; nothing more can be written."""


class IngestError(HeadwaterError):
    """A request or event was refused by the Tracking API.

    ``code`` is machine-readable (``invalid_write_key``), ``status`` the HTTP status the
    SDKs understand, ``message`` tells the sender what was wrong and what to do.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
