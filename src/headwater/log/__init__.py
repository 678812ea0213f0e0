"""The durable event log: the contract (base) and its backends (sqlite, memory)."""

from headwater.log.base import (
    AppendResult,
    EventLog,
    LogStats,
    Record,
    RetentionReport,
    StoredRecord,
)

__all__ = ["AppendResult", "EventLog", "LogStats", "Record", "RetentionReport", "StoredRecord"]
