"""One destination's worker: reads its queue, sends batches, records every outcome.

A destination's queue is the log after its cursor (:mod:`headwater.delivery.store`). The
worker reads the log in order, routes each event (:mod:`headwater.processor.routing`), cuts
batches, and sends them with at most ``concurrency`` requests in flight and at most
``rate_limit_per_sec`` requests a second. Each batch ends in one of:

- delivered: recorded in the ledger;
- discarded (the destination refused it for good): recorded with the destination's answer;
- filtered (``Filtered``: events it does not take, e.g. no action matches): never retried;
- retry: the batch is copied into the retry table with its next attempt after a randomised
  exponential backoff (never before the destination's ``Retry-After``); what would be retried
  after the retry window closes goes to the dead letter store instead.

A destination may name events whose outcome differs from the batch's (``Attempt.per_event``,
:mod:`headwater.delivery.partial`): each group of events that share an outcome is recorded
as above on its own, in the same transaction; only the events still to retry stay in (or
go to) the retry table, so delivered ones are never sent again.

The cursor passes a batch's events once they and every earlier batch have an outcome on disk
(written in the same transaction as the last of those outcomes), so a crash re-sends at most
the batches that were in flight.
Consecutive failures open the circuit breaker: the worker then stops reading (the batches of
the last read that were not sent yet wait in the retry table, unsent), events wait in the
log, and one probe at a time tests the destination (the oldest retry first, so the backlog
stays in order). When a probe succeeds (any of its events delivered), every retry waiting
until then becomes due and the backlog drains, oldest first, before anything newer is read.
Replays are a second read of the log, between two offsets, with their own progress. A
stopping worker sends nothing new: what it had read but not sent waits in the retry table.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater.config.workspace import DeliveryConfig
from headwater.delivery.events import OutboundEvent
from headwater.delivery.outcomes import (
    Attempt,
    Delivered,
    Discard,
    EventState,
    Exchange,
    Outcome,
    Retry,
)
from headwater.delivery.outcomes import Filtered as Unsubscribed
from headwater.delivery.partial import Group, filtered_entry, heard, outcome_groups
from headwater.delivery.policy import BreakerState, CircuitBreaker, TokenBucket, backoff_secs
from headwater.delivery.store import (
    LATENCY_BOUNDS_MS,
    DeleteRetry,
    DeliveryStore,
    LedgerEntry,
    Op,
    PutDead,
    PutRetry,
    Replay,
    ReplayProgress,
    RetriesDue,
    RetryBatch,
    SetCursor,
    now_ms,
)
from headwater.destinations.base import Destination
from headwater.errors import LogError
from headwater.log.base import EventLog, StoredRecord
from headwater.processor.fanout import DestinationStage, FilteredOut
from headwater.processor.routing import NOT_MINE, Filtered, NotMine, Route, Routed

PAUSED = "accepted while the destination was disabled"

logger = logging.getLogger(__name__)

READ_LIMIT = 2000  # log records per read
POLL_SECS = 0.005  # the shortest idle wait
IDLE_SECS = 0.5  # an idle worker waits on the log's ``wait`` at most this long, then looks again
RETRY_RESCAN_SECS = 1.0  # how often the retry table is re-read (re-drives come from the CLI)
SAMPLE_EVERY_SECS = 10.0  # a successful exchange is kept at most this often
STOP_GRACE_SECS = 5.0


@dataclass(eq=False, slots=True)
class _Ticket:
    """A place in a stream: the cursor may pass ``end`` once this and all earlier are done."""

    end: int
    done: bool = False


@dataclass(eq=False)
class _Stream:
    """A sequential read of the log: the live queue, or a replay between two offsets."""

    position: int  # everything up to here has been read and dispatched
    committed: int  # everything up to here has an outcome on disk
    end: int | None = None  # a replay stops here
    replay: Replay | None = None
    tickets: deque[_Ticket] = field(default_factory=deque)
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])  # sent, filtered, skipped

    @property
    def finished(self) -> bool:
        return self.end is not None and self.position >= self.end and not self.tickets


DURATION_BOUNDS_SECS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        60.0, 300.0)  # fmt: skip
"""Upper bounds of the request duration histogram's buckets (up to the longest timeout)."""
LATENCY_BOUNDS_SECS = tuple(b / 1000 for b in LATENCY_BOUNDS_MS)
"""The end-to-end latency histogram's, the same as the ledger's."""


@dataclass(slots=True)
class Buckets:
    """A histogram with fixed bounds, for ``/metrics``: a count per bucket (``counts[i]`` holds
    values up to ``bounds[i]`` and above the bound before it; the last one holds the rest),
    the sum and the number of values. Observing is a bisect and three additions."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


@dataclass
class WorkerStats:
    """Counters for status pages and tests; the ledger is the record."""

    delivered: int = 0
    discarded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    requests: int = 0
    last_error: str | None = None
    last_success_ms: int | None = None
    duration_secs: Buckets = field(default_factory=lambda: Buckets(DURATION_BOUNDS_SECS))
    """How long each request took (one value per attempt)."""
    latency_secs: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS_SECS))
    """Received at Headwater to delivered, per delivered event."""

    def count(self, state: EventState, events: int) -> None:
        """Count ``events`` that reached ``state`` (once the ledger holds them)."""
        if state is EventState.DELIVERED:
            self.delivered += events
        elif state is EventState.DISCARDED:
            self.discarded += events
        elif state is EventState.RETRYING:
            self.retried += events
        elif state is EventState.DEAD_LETTERED:
            self.dead_lettered += events
        elif state is EventState.FILTERED:
            self.filtered += events


class Worker:
    """Delivers the events of one destination; see the module docstring."""

    def __init__(
        self,
        route: Route,
        destination: Destination[Any],
        delivery: DeliveryConfig,
        log: EventLog,
        store: DeliveryStore,
        start_after: int,
        stage: DestinationStage | None = None,
        pauses: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.route = route
        # offsets (after, up_to] accepted while the destination was disabled: never sent
        self.pauses = tuple(pauses)
        self.stage = stage or DestinationStage(route.destination, (), ())
        self.name = route.destination
        self.destination = destination
        self.config = delivery
        self.log = log
        self.store = store
        self.batch_events = destination.batch_events
        self.batch_bytes = int(delivery.batch_max_bytes or destination.default_batch_bytes)
        self.live = _Stream(position=start_after, committed=start_after)
        self.replays: list[_Stream] = []
        self.breaker = CircuitBreaker(
            delivery.breaker_failures,
            delivery.breaker_probe_secs,
            delivery.breaker_max_probe_secs,
        )
        self.bucket = (
            TokenBucket(delivery.rate_limit_per_sec) if delivery.rate_limit_per_sec else None
        )
        self.stats = WorkerStats()
        self._slots = asyncio.Semaphore(delivery.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._retrying: set[int] = set()  # retry rows being sent now
        self._next_retry_ms: int | None = 0  # 0: look at the table on the first pass
        self._rescan_at = 0.0
        self._last_sample = 0.0
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.elsewhere: str | None = None
        """With shared delivery, the node that delivers this destination while this one
        does not (:meth:`follow`); None when this worker runs or nobody holds it."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"deliver:{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        self._changed.set()  # an idle worker may be waiting for its next probe
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=STOP_GRACE_SECS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._commit_streams()

    def add_replay(self, replay: Replay) -> None:
        if any(s.replay is not None and s.replay.id == replay.id for s in self.replays):
            return
        self.replays.append(
            _Stream(
                position=replay.position,
                committed=replay.position,
                end=replay.end_offset,
                replay=replay,
            )
        )
        self._changed.set()

    @property
    def running(self) -> bool:
        """Whether this worker's loop runs (it stops only with stop() or a crash)."""
        return self._task is not None and not self._task.done()

    @property
    def alive(self) -> bool:
        """Whether the destination is being delivered: here, or by another node."""
        return self.running or self.elsewhere is not None

    async def halt(self) -> None:
        """Stop at once, without waiting for what is in flight (the lease is gone: another
        node may deliver this destination now). What was sent and not recorded goes again
        from the new owner: at-least-once."""
        self._stopping.set()
        self._changed.set()
        tasks = [t for t in (self._task, *self._inflight) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def take_over(self, committed: int) -> None:
        """Start delivering from ``committed`` (the shared store's cursor: the previous
        owner's last recorded position), with nothing of a previous run kept."""
        self.elsewhere = None
        self.breaker = CircuitBreaker(self.config.breaker_failures,
                                      self.config.breaker_probe_secs,
                                      self.config.breaker_max_probe_secs)  # fmt: skip
        self._inflight = set()
        self._slots = asyncio.Semaphore(self.config.concurrency)
        self.live = _Stream(position=committed, committed=committed)
        self.replays = []  # the engine hands out active replays again, from the store
        self._next_retry_ms = 0
        self._retrying.clear()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self.start()

    def follow(self, owner: str | None, committed: int) -> None:
        """While another node delivers (or nobody, for a moment): show its position."""
        self.elsewhere = owner
        self.live = _Stream(position=committed, committed=committed)

    def queued_behind(self) -> tuple[int, int]:
        """(committed cursor, read position) of the live queue."""
        return self.live.committed, self.live.position

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self._step()
            except LogError as exc:
                logger.warning("destination %s: cannot read the log: %s", self.name, exc)
                busy = False
            except Exception:
                logger.exception("destination %s: delivery worker failed; going on", self.name)
                busy = False
            if not busy:
                await self._idle()

    async def _idle(self) -> None:
        self._changed.clear()
        if self._stopping.is_set():
            return
        if self.breaker.state is BreakerState.OPEN:
            wait = max(POLL_SECS, min(1.0, self.breaker.probe_at - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
            return
        # sleep until the log has something new, a batch finishes, a retry is due, or the
        # retry table and replay jobs are due a look
        wait = IDLE_SECS
        if self._next_retry_ms is not None:
            wait = max(POLL_SECS, min(wait, (self._next_retry_ms - now_ms()) / 1000))
        changed = asyncio.ensure_future(self._changed.wait())
        appended = asyncio.ensure_future(self.log.wait(self.live.position, wait))
        try:
            await asyncio.wait((changed, appended), timeout=wait, return_when="FIRST_COMPLETED")
        finally:
            for task in (changed, appended):
                task.cancel()

    async def _step(self) -> bool:
        """One pass; True when it found work (so the next pass comes at once)."""
        if self.breaker.state is BreakerState.HALF_OPEN:
            return False  # a probe is in flight
        if self.breaker.state is BreakerState.OPEN:
            if self.breaker.probe_due():
                await self._probe()
            return False
        if await self._send_due_retries():
            return True  # the retries are older than what the log holds: they go first
        busy = False
        for stream in list(self.replays):
            busy |= await self._read_and_send(stream)
            if stream.finished:
                self.replays.remove(stream)
        busy |= await self._read_and_send(self.live)
        return busy

    # ------------------------------------------------------------------ retries

    async def _send_due_retries(self) -> bool:
        now = now_ms()
        if time.monotonic() >= self._rescan_at:
            self._rescan_at = time.monotonic() + RETRY_RESCAN_SECS
            self._next_retry_ms = 0
        if self._next_retry_ms is None or self._next_retry_ms > now:
            return False
        limit = self.config.concurrency * 2
        want = limit + len(self._retrying)
        due = await self.store.run(lambda db: db.retries(self.name, now, want))
        due = [b for b in due if b.row_id not in self._retrying]
        if not due:
            summary = await self.store.run(lambda db: db.retry_summary(self.name))
            self._next_retry_ms = summary[1] if summary[0] else None
            if self._next_retry_ms is not None and self._next_retry_ms <= now:
                self._next_retry_ms = now + int(POLL_SECS * 1000)  # all in flight
            return False
        for batch in due[:limit]:
            if not self.breaker.allows_send():
                break
            if len(batch.events) > self.batch_events:
                await self._split(batch)  # its parts are picked up on the next pass
                continue
            await self._dispatch(batch.events, retry=batch)
        return True

    async def _split(self, batch: RetryBatch) -> None:
        """A stored batch larger than the destination now takes (its batch size was lowered,
        or dead letters were re-driven in bigger batches) becomes several, same schedule."""
        size = self.batch_events
        parts = [batch.events[i : i + size] for i in range(0, len(batch.events), size)]
        ops: list[Op] = [DeleteRetry(batch.row_id)]
        ops += [
            PutRetry(self.name, part, batch.attempts, batch.next_attempt_ms, batch.deadline_ms,
                     batch.first_failed_ms, batch.last_error, batch.last_status)
            for part in parts
        ]  # fmt: skip
        await self._write(ops)
        self._next_retry_ms = 0

    def _note_retry_at(self, at_ms: int) -> None:
        if self._next_retry_ms is None or at_ms < self._next_retry_ms:
            self._next_retry_ms = at_ms

    # ------------------------------------------------------------------ reading the log

    async def _read_and_send(self, stream: _Stream) -> bool:
        if stream.end is not None and stream.position >= stream.end:
            await self._commit(stream)
            return False
        limit = READ_LIMIT
        if stream.end is not None:
            limit = min(limit, stream.end - stream.position)
        records = await self.log.read(stream.position, limit)
        if stream.end is not None:
            records = [r for r in records if r.offset <= stream.end]
        if not records:
            if stream.end is not None:  # the rest was dropped by retention
                stream.position = stream.end
                await self._commit(stream)
            return False
        await self._expired_by_retention(stream, records[0].offset)
        stream.position = records[-1].offset
        routed, ledger = self._route(stream, records)
        if ledger:
            await self._write(ledger)
        for batch in self._cut(routed):
            ticket = _Ticket(batch[-1].offset)
            stream.tickets.append(ticket)
            await self._dispatch(batch, ticket=ticket, stream=stream)
        stream.tickets.append(_Ticket(stream.position, done=True))  # the read's filtered tail
        await self._commit(stream)
        return True

    async def _expired_by_retention(self, stream: _Stream, first_offset: int) -> None:
        """Events the log dropped before this destination read them: say so in the ledger."""
        gap = range(stream.position + 1, first_offset)
        if gap and stream.replay is None and stream.position > 0:
            logger.warning(
                "destination %s: %d events were dropped by the log's retention before delivery",
                self.name,
                len(gap),
            )
            reason = "dropped by the log's retention before it could be delivered"
            await self._write(
                [LedgerEntry(self.name, EventState.DISCARDED, list(gap), now_ms(), 0, None, reason)]
            )

    def _route(
        self, stream: _Stream, records: Sequence[StoredRecord]
    ) -> tuple[list[OutboundEvent], list[Op]]:
        routed: list[OutboundEvent] = []
        filtered: dict[str, list[int]] = {}
        replay = stream.replay
        for r in records:
            if replay is not None and not replay.since_ms <= r.received_at_ms < replay.until_ms:
                continue  # outside the replay's window
            event = self._shape(r, live=replay is None)
            if isinstance(event, NotMine):
                if replay is not None:
                    stream.counts[2] += 1
                continue
            if isinstance(event, Filtered):
                filtered.setdefault(event.reason, []).append(r.offset)
                stream.counts[1] += 1
                continue
            stream.counts[0] += 1
            routed.append(event)
        at = now_ms()
        ledger: list[Op] = [
            LedgerEntry(self.name, EventState.FILTERED, offsets, at, 0, None, reason)
            for reason, offsets in filtered.items()
        ]
        return routed, ledger

    def _shape(
        self, r: StoredRecord, count: bool = True, live: bool = True
    ) -> OutboundEvent | Filtered | NotMine:
        """Route one event, then run the destination's filters and transformations on it
        (``count=False``: a look ahead that the filters' counters must not see). What was
        accepted while the destination was disabled is not sent live; a replay the user
        asks for sends it."""
        if live and self.pauses and any(a < r.offset <= b for a, b in self.pauses):
            if r.source not in self.route.sources:
                return NOT_MINE
            return Filtered(PAUSED)
        decision = self.route.decide(r.source, r.payload)
        if not isinstance(decision, Routed):
            return decision
        if not self.stage:
            return OutboundEvent(r.offset, r.message_id, r.received_at_ms, r.payload)
        try:
            shaped = self.stage.apply(r.payload, count=count)
        except Exception as exc:  # a fault in a filter must not stop the destination
            logger.exception("destination %s: filters or transformations failed", self.name)
            return Filtered(f"the destination's filters or transformations failed: {exc}")
        if isinstance(shaped, FilteredOut):
            return Filtered(shaped.reason)
        payload = r.payload if shaped is None else shaped.payload
        return OutboundEvent(r.offset, r.message_id, r.received_at_ms, payload)

    def _cut(self, events: list[OutboundEvent]) -> list[list[OutboundEvent]]:
        """Batches of at most ``batch_events`` events and ``batch_bytes`` bytes as a JSON
        array (``[``, the events, a comma after each but the last, ``]``)."""
        batches: list[list[OutboundEvent]] = []
        batch: list[OutboundEvent] = []
        size = 1
        for event in events:
            n = len(event.payload) + 1
            if batch and (len(batch) >= self.batch_events or size + n > self.batch_bytes):
                batches.append(batch)
                batch, size = [], 1
            batch.append(event)
            size += n
        if batch:
            batches.append(batch)
        return batches

    async def _commit(self, stream: _Stream) -> None:
        ops = self._advance(stream)
        if ops:
            await self._write(ops)

    def _advance(self, stream: _Stream) -> list[Op]:
        """Move the stream's committed position past the done prefix of its tickets; the
        operation that records it, to write with (or after) the outcomes it passes."""
        moved = False
        while stream.tickets and stream.tickets[0].done:
            stream.committed = stream.tickets.popleft().end
            moved = True
        if stream.replay is not None and (moved or stream.finished):
            sent, filtered, skipped = stream.counts
            stream.counts = [0, 0, 0]
            done = stream.finished
            return [ReplayProgress(stream.replay.id, stream.committed, sent, filtered, skipped,
                                   done)]  # fmt: skip
        if moved:
            return [SetCursor(self.name, stream.committed)]
        return []

    async def _commit_streams(self) -> None:
        for stream in (self.live, *self.replays):
            with contextlib.suppress(Exception):
                await self._commit(stream)

    # ------------------------------------------------------------------ sending

    async def _dispatch(
        self,
        events: list[OutboundEvent],
        *,
        retry: RetryBatch | None = None,
        ticket: _Ticket | None = None,
        stream: _Stream | None = None,
        probe: bool = False,
    ) -> None:
        """Send one batch in the background once a slot is free."""
        await self._slots.acquire()
        if retry is not None:
            self._retrying.add(retry.row_id)
        task = asyncio.get_running_loop().create_task(
            self._send(events, retry, ticket, stream, probe)
        )
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(
        self,
        events: list[OutboundEvent],
        retry: RetryBatch | None,
        ticket: _Ticket | None,
        stream: _Stream | None,
        probe: bool,
    ) -> None:
        try:
            if self.bucket is not None:
                delay = self.bucket.delay()
                if delay > 0:
                    await asyncio.sleep(delay)
            answer: Outcome | None = None
            if probe or (self.breaker.allows_send() and not self._stopping.is_set()):
                attempt = await self._attempt(events)
                groups = outcome_groups(events, attempt, self.name)
                ops = self._record(attempt, groups, retry)
                answer = heard(groups, attempt)
            else:  # the breaker opened, or the worker is stopping, while this batch waited
                ops = self._hold(events, retry)
            if ticket is not None and stream is not None:
                # writes are applied in the order they are submitted, so the cursor can
                # move in the same transaction as this outcome
                ticket.done = True
                ops += self._advance(stream)
            ends = answer is not None and self._ends_outage(answer, probe)
            if ends:  # the backlog goes first: due at once (but not the retries this attempt
                # schedules, which keep their own time, and a Retry-After of their events)
                ops.insert(0, RetriesDue(self.name, now_ms()))
            await self._write_surely(ops)
            if answer is not None:
                if ends:
                    self._next_retry_ms = 0
                self._after(answer, probe)
        finally:
            self._slots.release()
            if retry is not None:
                self._retrying.discard(retry.row_id)
            self._changed.set()

    async def _write(self, ops: Sequence[Op]) -> None:
        """Write ``ops``, then count the outcomes they record: a counter never runs ahead of
        the disk, so whoever reads a count and then the store finds what was counted."""
        await self.store.write(ops)
        for op in ops:
            if isinstance(op, LedgerEntry):
                self.stats.count(op.state, len(op.offsets))

    async def _write_surely(self, ops: list[Op]) -> None:
        """An outcome must reach the disk before the cursor passes it: keep trying (the
        store fails only when its disk does)."""
        wait = 0.1
        while True:
            try:
                await self._write(ops)
                return
            except Exception:
                logger.exception("destination %s: cannot record an outcome; retrying", self.name)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)

    async def _attempt(self, events: list[OutboundEvent]) -> Attempt:
        self.stats.requests += 1
        try:
            return await self.destination.deliver(events)
        except Exception as exc:  # a bug in a destination must not lose the batch
            logger.exception("destination %s raised while delivering", self.name)
            return Attempt(Retry(f"internal error in the destination: {exc!r}"), Exchange(), 0.0)

    def _ends_outage(self, answer: Outcome, probe: bool) -> bool:
        """True when this answer closes an open breaker: only a probe's does (a request sent
        before the breaker opened proves nothing, and must not cut a Retry-After short)."""
        closed = self.breaker.state is BreakerState.CLOSED
        return probe and not closed and not isinstance(answer, Retry | Unsubscribed)

    def _after(self, outcome: Outcome, probe: bool) -> None:
        """Tell the breaker what it heard of an attempt (:func:`~.partial.heard`: a partly
        delivered batch is an answer; a wholly filtered one is none: a probe goes again)."""
        if isinstance(outcome, Unsubscribed):
            if probe:
                self.breaker.reprobe()
        elif isinstance(outcome, Retry):
            if outcome.after_secs:
                self.breaker.pause(outcome.after_secs)
            else:
                self.breaker.failure()
        elif self.breaker.state is BreakerState.CLOSED:
            if self.breaker.consecutive_failures:
                self.breaker.success()
        elif probe:
            self.breaker.success()

    def _hold(self, events: list[OutboundEvent], retry: RetryBatch | None) -> list[Op]:
        """A batch not sent because the breaker opened, or the worker is stopping, while it
        waited for a slot: it waits in the retry table, due at once (a retry stays)."""
        if retry is not None:
            return []
        at = now_ms()
        if self._stopping.is_set():
            reason = "not sent yet: Headwater was stopping"
        else:
            reason = "not sent: the circuit breaker is open"
            if self.stats.last_error:
                reason += f" (last error: {self.stats.last_error})"
        deadline = min(e.received_at_ms for e in events) + int(self.config.retry_window_secs * 1000)
        self._note_retry_at(at)
        return [
            PutRetry(self.name, events, 0, at, deadline, at, reason),
            LedgerEntry(self.name, EventState.RETRYING, [e.offset for e in events], at, 0, None,
                        reason),
        ]  # fmt: skip

    def _record(self, attempt: Attempt, groups: list[Group], retry: RetryBatch | None) -> list[Op]:
        """The operations that put this attempt's outcome on disk: one group of events per
        outcome (:func:`~.partial.outcome_groups`), each recorded on its own. A retried batch
        whose events all fail alike keeps its row; otherwise its row goes, and the events
        still to retry get rows of their own (the delivered ones are never sent again)."""
        at = now_ms()
        attempts = (retry.attempts if retry else 0) + 1
        self.stats.duration_secs.observe(attempt.duration_ms / 1000)
        whole = len(groups) == 1
        ops: list[Op] = []
        if retry is not None and not (whole and isinstance(groups[0][0], Retry)):
            ops.append(DeleteRetry(retry.row_id))
        for outcome, events in groups:
            if isinstance(outcome, Delivered):
                ops.append(self._delivered(events, attempt, outcome, attempts, at, whole))
            elif isinstance(outcome, Discard):
                ops.append(self._discarded(events, attempt, outcome, attempts, at))
            elif isinstance(outcome, Unsubscribed):
                ops.append(filtered_entry(self.name, events, outcome, at))
            else:
                kept = retry.row_id if retry is not None and whole else None
                ops += self._reschedule(events, attempt, outcome, retry, attempts, at, kept)
        return ops

    def _delivered(
        self,
        events: list[OutboundEvent],
        attempt: Attempt,
        outcome: Delivered,
        attempts: int,
        at: int,
        whole: bool,
    ) -> LedgerEntry:
        self.stats.last_success_ms = at
        sample = None
        # a sample now and then; always the first success after a failure, and the answer
        # that delivered only part of a batch
        if not whole or attempts > 1 or time.monotonic() - self._last_sample >= SAMPLE_EVERY_SECS:
            self._last_sample = time.monotonic()
            sample = attempt.exchange if attempt.exchange.request else None
        latencies = [at - e.received_at_ms for e in events]
        for latency_ms in latencies:
            self.stats.latency_secs.observe(latency_ms / 1000)
        return LedgerEntry(self.name, EventState.DELIVERED, [e.offset for e in events], at,
                           attempts, outcome.status, outcome.note, attempt.duration_ms,
                           latencies, sample)  # fmt: skip

    def _discarded(
        self,
        events: list[OutboundEvent],
        attempt: Attempt,
        outcome: Discard,
        attempts: int,
        at: int,
    ) -> LedgerEntry:
        self.stats.last_error = outcome.reason
        return LedgerEntry(self.name, EventState.DISCARDED, [e.offset for e in events], at,
                           attempts, outcome.status, outcome.reason, attempt.duration_ms,
                           exchange=attempt.exchange)  # fmt: skip

    def _reschedule(
        self,
        events: list[OutboundEvent],
        attempt: Attempt,
        outcome: Retry,
        retry: RetryBatch | None,
        attempts: int,
        at: int,
        row_id: int | None,
    ) -> list[Op]:
        """The next attempt of ``events`` (all of ``retry``'s when ``row_id`` is its row, to
        update; else a new row), or the dead letter store when it would come too late."""
        self.stats.last_error = outcome.reason
        window_ms = int(self.config.retry_window_secs * 1000)
        if retry is not None:
            deadline, first_failed = retry.deadline_ms, retry.first_failed_ms
        else:
            deadline = min(e.received_at_ms for e in events) + window_ms
            first_failed = at
        wait = backoff_secs(attempts, self.config.backoff_base_secs, self.config.backoff_max_secs)
        next_at = at + int(max(wait, outcome.after_secs or 0.0) * 1000)
        offsets = [e.offset for e in events]
        if next_at > deadline:
            reason = (
                f"still failing after {attempts} attempts when the retry window closed: "
                f"{outcome.reason}"
            )
            ops: list[Op] = [
                PutDead(self.name, events, reason, at, attempts, outcome.status, first_failed,
                        attempt.exchange),
                LedgerEntry(self.name, EventState.DEAD_LETTERED, offsets, at, attempts,
                            outcome.status, reason, attempt.duration_ms,
                            exchange=attempt.exchange),
            ]  # fmt: skip
            if row_id is not None:
                ops.append(DeleteRetry(row_id))
            return ops
        self._note_retry_at(next_at)
        return [
            PutRetry(self.name, events, attempts, next_at, deadline, first_failed,
                     outcome.reason, outcome.status, row_id),
            LedgerEntry(self.name, EventState.RETRYING, offsets, at, attempts, outcome.status,
                        outcome.reason, attempt.duration_ms, exchange=attempt.exchange),
        ]  # fmt: skip

    # ------------------------------------------------------------------ the breaker is open

    async def _probe(self) -> None:
        """Expire what outlived its window, then test the destination with one batch: the
        oldest retry, else the next events of the live queue."""
        await self._expire()
        sending = set(self._retrying)  # sent before the breaker opened, not answered yet
        waiting = await self.store.run(lambda db: db.retries(self.name, None, 1 + len(sending)))
        oldest = [b for b in waiting if b.row_id not in sending][:1]
        if oldest and len(oldest[0].events) > self.batch_events:
            await self._split(oldest[0])
            oldest = await self.store.run(lambda db: db.retries(self.name, None, 1))
            oldest = [b for b in oldest if b.row_id not in sending][:1]
        self.breaker.start_probe()
        if oldest:
            await self._dispatch(oldest[0].events, retry=oldest[0], probe=True)
            return
        records = await self.log.read(self.live.position, READ_LIMIT)
        if not records:
            self.breaker.pause(self.breaker.probe_secs)  # nothing to probe with: wait
            return
        # the probe takes the first batch; what follows it is read again after the probe
        # a look ahead: _route counts the events of the probe's batch when it records them
        shaped = (self._shape(r, count=False) for r in records)
        routed = [e for e in shaped if isinstance(e, OutboundEvent)]
        batch = self._cut(routed)[:1]
        end = batch[0][-1].offset if batch else records[-1].offset
        _, ledger = self._route(self.live, [r for r in records if r.offset <= end])
        if ledger:
            await self._write(ledger)
        self.live.position = end
        ticket = _Ticket(end, done=not batch)
        self.live.tickets.append(ticket)
        if batch:
            await self._dispatch(batch[0], ticket=ticket, stream=self.live, probe=True)
        else:
            self.breaker.pause(self.breaker.probe_secs)
            await self._commit(self.live)

    async def _expire(self) -> None:
        """While the destination is down, events past their retry window go to the dead
        letter store: the retries first, then the oldest of the live queue."""
        at = now_ms()
        window_ms = int(self.config.retry_window_secs * 1000)
        reason = "not delivered within the retry window (the destination kept failing)"
        if self.stats.last_error:
            reason += f"; last error: {self.stats.last_error}"
        expired = await self.store.run(
            lambda db: [b for b in db.retries(self.name, None, 1000) if b.deadline_ms < at]
        )
        ops: list[Op] = []
        for batch in expired:
            ops += [
                PutDead(self.name, batch.events, reason, at, batch.attempts, batch.last_status,
                        batch.first_failed_ms),
                LedgerEntry(self.name, EventState.DEAD_LETTERED, [e.offset for e in batch.events],
                            at, batch.attempts, batch.last_status, reason),
                DeleteRetry(batch.row_id),
            ]  # fmt: skip
        if ops:
            await self._write(ops)
        while not self._stopping.is_set():
            records = await self.log.read(self.live.position, READ_LIMIT)
            # the oldest first, and none passed over: received times are not quite in log
            # order (concurrent appends), and the cursor passes everything up to the last
            old = list(itertools.takewhile(lambda r: r.received_at_ms + window_ms < at, records))
            if not old:
                return
            routed, ledger = self._route(self.live, old)
            if routed:
                ledger += [
                    PutDead(self.name, routed, reason, at, 0),
                    LedgerEntry(self.name, EventState.DEAD_LETTERED, [e.offset for e in routed],
                                at, 0, None, reason),
                ]  # fmt: skip
            self.live.tickets.append(_Ticket(old[-1].offset, done=True))
            self.live.position = old[-1].offset
            await self._write(ledger)
            await self._commit(self.live)
            if len(old) < len(records):
                return
