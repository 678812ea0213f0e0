"""Records packed into one blob, the unit the SQLite log stores per row.

A row holds the records of consecutive offsets. Each record is a fixed header followed by its
fields::

    <q received_ms> <H len(message_id)> <H len(source)> <H len(type)> <I len(payload)>
    message_id  source  type  payload            (UTF-8 text, JSON bytes)

Packing costs one ``struct.pack`` and a join per record; storing a blob costs SQLite one row
instead of one per event, which is what makes group commit cheap (docs/decisions.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from headwater.log.base import Record, StoredRecord

_HEADER = struct.Struct("<qHHHI")
_TEXT_CACHE: dict[str, bytes] = {}  # sources and types: a handful of distinct values


def _text(value: str) -> bytes:
    encoded = _TEXT_CACHE.get(value)
    if encoded is None:
        encoded = value.encode()
        if len(_TEXT_CACHE) < 1024:
            _TEXT_CACHE[value] = encoded
    return encoded


def pack(records: Sequence[Record]) -> bytes:
    parts: list[bytes] = []
    extend = parts.extend
    header = _HEADER.pack
    text = _TEXT_CACHE.get
    for r in records:
        mid = r.message_id.encode()
        source = text(r.source) or _text(r.source)
        typ = text(r.type) or _text(r.type)
        payload = r.payload
        extend(
            (header(r.received_at_ms, len(mid), len(source), len(typ), len(payload)),
             mid, source, typ, payload)
        )  # fmt: skip
    return b"".join(parts)


def unpack(first_offset: int, blob: bytes) -> Iterator[StoredRecord]:
    """The records of one row; offsets count up from ``first_offset``."""
    view = memoryview(blob)
    pos = 0
    offset = first_offset
    size = _HEADER.size
    while pos < len(blob):
        received_ms, n_mid, n_source, n_type, n_payload = _HEADER.unpack_from(blob, pos)
        pos += size
        mid = bytes(view[pos : pos + n_mid]).decode()
        pos += n_mid
        source = bytes(view[pos : pos + n_source]).decode()
        pos += n_source
        typ = bytes(view[pos : pos + n_type]).decode()
        pos += n_type
        payload = bytes(view[pos : pos + n_payload])
        pos += n_payload
        yield StoredRecord(offset, mid, source, typ, received_ms, payload)
        offset += 1
