"""The unit the delivery engine hands to destinations, and its compact forms on disk."""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson


@dataclass(slots=False)
class OutboundEvent:
    """One event on its way to one destination.

    ``payload`` is the normalised event as the log holds it (JSON); destinations that send
    JSON pass it through without re-encoding. ``event`` parses it on first use.
    """

    offset: int
    message_id: str
    received_at_ms: int
    payload: bytes

    @cached_property
    def event(self) -> dict[str, Any]:
        value = orjson.loads(self.payload)
        return value if isinstance(value, dict) else {}


_EVENT = struct.Struct("<qqHI")


def pack_events(events: Sequence[OutboundEvent]) -> bytes:
    """``<q offset><q received_ms><H len(id)><I len(payload)> id payload`` per event."""
    parts: list[bytes] = []
    for e in events:
        mid = e.message_id.encode()
        parts += (_EVENT.pack(e.offset, e.received_at_ms, len(mid), len(e.payload)), mid, e.payload)
    return b"".join(parts)


def unpack_events(data: bytes) -> list[OutboundEvent]:
    out: list[OutboundEvent] = []
    pos, end, size = 0, len(data), _EVENT.size
    view = memoryview(data)
    while pos < end:
        offset, received, id_len, payload_len = _EVENT.unpack_from(data, pos)
        pos += size
        mid = bytes(view[pos : pos + id_len]).decode()
        pos += id_len
        out.append(OutboundEvent(offset, mid, received, bytes(view[pos : pos + payload_len])))
        pos += payload_len
    return out


_RUN = struct.Struct("<qI")


def pack_offsets(offsets: Iterable[int]) -> bytes:
    """Sorted offsets as runs of consecutive values: ``<q start><I length>`` per run.

    Events routed to one destination are mostly consecutive in the log, so a ledger row for
    thousands of events takes a few bytes.
    """
    runs: list[bytes] = []
    start = prev = None
    for o in sorted(offsets):
        if start is None:
            start = prev = o
        elif o == prev + 1:  # type: ignore[operator]
            prev = o
        elif o != prev:
            runs.append(_RUN.pack(start, prev - start + 1))  # type: ignore[operator]
            start = prev = o
    if start is not None:
        runs.append(_RUN.pack(start, prev - start + 1))  # type: ignore[operator]
    return b"".join(runs)


def unpack_runs(data: bytes) -> list[tuple[int, int]]:
    """The runs of :func:`pack_offsets` as ``(first, last)`` pairs."""
    return [(s, s + n - 1) for s, n in _RUN.iter_unpack(data)]


def offsets_contain(data: bytes, offset: int) -> bool:
    runs = unpack_runs(data)
    i = bisect_right(runs, (offset, 2**63)) - 1
    return i >= 0 and runs[i][0] <= offset <= runs[i][1]


def count_offsets(data: bytes) -> int:
    return sum(n for _, n in _RUN.iter_unpack(data))
