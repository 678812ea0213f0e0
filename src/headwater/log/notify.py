"""Wakes readers when records are committed, so a follower of the log need not poll it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from headwater.log.base import AppendResult


class AppendSignal:
    """The newest committed offset, and a wait for a newer one. Lives on the event loop of
    the process that appends (readers in other processes poll instead)."""

    def __init__(self, last_offset: int = 0) -> None:
        self.last_offset = last_offset
        self._event = asyncio.Event()

    def committed(self, results: Sequence[AppendResult]) -> None:
        newest = max((r.offset for r in results if not r.duplicate), default=0)
        if newest > self.last_offset:
            self.last_offset = newest
            event, self._event = self._event, asyncio.Event()
            event.set()

    async def wait(self, after: int, timeout_secs: float) -> bool:
        if self.last_offset > after:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_secs)
        return self.last_offset > after
