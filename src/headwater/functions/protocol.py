"""The frames between the pool and a function's worker process: a 4-byte big-endian length,
then one JSON document; an answer that says ``"tail": n`` is followed by ``n`` raw bytes
(an insert function's returned events, as JSON, which would otherwise be escaped into a
string and back). Shared by both sides; nothing else is said on the pipes."""

from __future__ import annotations

import struct
from typing import Any

import orjson

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
OVERRAN_EXIT = 70
"""The exit status of a worker whose call ran past its limit and went on (the handler
caught the timeout): the worker's watchdog ends the process."""


def frame(message: Any) -> bytes:
    body = orjson.dumps(message, default=str)
    return HEADER.pack(len(body)) + body
