"""Identity processing as a follower of the log: one consumer per space, in log order.

Each space's consumer reads the log after its position, applies the events of its sources
to its store (identifiers → graph → traits → event reference → computed traits) in one
transaction per batch, and commits the new position in that same transaction: a crash or
``kill -9`` replays nothing twice and skips nothing. The work is synchronous SQLite, so it
runs on a thread of its own (one per space), never on the event loop that delivers (the
worker process's, or the gateway's in inline mode). Between batches it waits on the log
(``wait``: woken by each commit), and on its schedule recomputes traits whose window moved.

An event that fails to apply (a bug, not bad input: bad identifier values are refused by
the rules) is rolled back alone, counted under ``error`` with its messageId and logged; the
batch goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from headwater.engage.audiences import AudienceEngine
from headwater.engage.backfill import SWEEP_BATCH, Backfills, forget_removed
from headwater.gateway.normalize import ItemError, parse_ms
from headwater.log.base import EventLog, StoredRecord
from headwater.state.sql import StateUnavailable, server_gone
from headwater.unify.config import SpaceConfig
from headwater.unify.graph import IdentityGraph
from headwater.unify.identifiers import Extractor
from headwater.unify.store import (
    EventRef,
    Link,
    NotTheWriter,
    PositionMoved,
    SqliteProfileStore,
    open_profile_store,
)
from headwater.unify.traits import Change, TraitEngine, event_name

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

logger = logging.getLogger(__name__)


def store_down(exc: BaseException) -> bool:
    """A failure of the store (unreachable, restarting) or of the writer's standing, not of
    an event: the batch is not retried event by event (each would fail alike); the consumer
    starts again from the stored position. A query the database refused (a value over an
    index's limit, a deadlock) is the event's: it is retried alone and skipped if it fails."""
    if isinstance(exc, NotTheWriter | PositionMoved | StateUnavailable):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate or ""
    return not state or server_gone(state)  # no state: the connection is gone


STANDBY_SECS = 2.0  # a consumer whose store another node writes asks again this often
BATCH = 500
WAIT_SECS = 1.0
MAX_TRAITS = 300
"""Segment refuses identify calls with 300 traits or more; their traits are not applied."""


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class SpaceCounts:
    """What a consumer did since it started (status and metrics read it)."""

    events: int = 0
    created: int = 0
    merged: int = 0
    refused: int = 0
    limited: int = 0
    blocked: int = 0
    errors: int = 0
    entered: int = 0  # audience entries and exits
    exited: int = 0


class SpaceProcessor:
    """The synchronous part: applies records to one space's store. Used by the consumer's
    thread, the benchmark and tests."""

    def __init__(self, space: SpaceConfig, store: SqliteProfileStore,
                 now_ms: Callable[[], int] = wall_ms) -> None:  # fmt: skip
        self.space = space
        self.store = store
        store.derive_audience_traits()
        self.sources = frozenset(space.sources)
        self.extractor = Extractor(space.identity)
        self.graph = IdentityGraph(store, space.identity)
        self.audiences = AudienceEngine(space.audiences)
        self.traits = TraitEngine(space.computed_traits, now_ms, self.audiences.computations)
        self.now_ms = now_ms
        self.backfills = Backfills(self.audiences, store) if self.audiences else None
        if self.backfills is None:  # but audiences that were have things to forget
            store.begin()
            try:
                forget_removed(self.audiences, store)
                store.commit()
            except BaseException:
                store.rollback()
                raise
        self.counts = SpaceCounts()
        self._events: list[tuple[str, EventRef]] = []  # written once per batch
        self._links: list[tuple[str, Link]] = []
        self._moved: dict[str, str] = {}  # profiles merged away in the batch → survivor
        self._touched: dict[str, str | None] = {}  # profiles to evaluate → the last messageId
        self._held: dict[str, dict[str, Any]] = {}  # their trait states the batch read

    def apply(self, records: list[StoredRecord], after: int | None = None) -> list[Change]:
        """One transaction: the records of this space's sources, then the position. If an
        event fails, the batch is applied again with each event in a savepoint of its own,
        so that only the failing one is skipped (and counted). With ``after`` (the offset
        the records were read after) a shared store's position is checked first
        (:class:`PositionMoved`)."""
        if not records:
            return []
        try:
            return self._apply(records, False, after)
        except Exception as exc:
            if store_down(exc):
                raise
            logger.warning("space %s: a batch failed; applying its events one by one",
                           self.space.name)  # fmt: skip
            return self._apply(records, True, after)

    def _apply(self, records: list[StoredRecord], guarded: bool,
               after: int | None) -> list[Change]:  # fmt: skip
        store = self.store
        changes: list[Change] = []
        store.begin()
        try:
            if after is not None and store.shared and store.position() != after:
                raise PositionMoved(f"space {self.space.name}: the store is past {after}")
            if guarded:
                for record in records:
                    if record.source in self.sources:
                        changes.extend(self._one_guarded(record))
            else:
                for record in records:
                    if record.source in self.sources:
                        self._one(record)
                changes = self._write()
            self._evaluate()
            store.set_position(records[-1].offset)
            store.commit()
        except BaseException:
            self._reset()
            self._touched.clear()
            self._held.clear()
            store.rollback()
            raise
        return changes

    def _write(self) -> list[Change]:
        """What the events so far kept for the batch, written (before the commit); the
        computed traits that changed (once per profile and trait)."""
        self.graph.flush()
        changes = self.traits.settle()
        self._held.update(self.traits.flush(self.store))
        self.store.add_events(self._live(self._events))
        self.store.add_links(self._live(self._links))
        self._reset()
        return changes

    def _evaluate(self) -> None:
        """The audiences of the profiles the batch touched (after its writes: they read what
        the store holds now)."""
        touched, self._touched = self._touched, {}
        held, self._held = self._held, {}
        if self.audiences:
            waiting = self.backfills.waiting() if self.backfills else frozenset()
            self._update(touched, waiting, held)

    def _update(self, touched: dict[str, str | None], waiting: frozenset[str],
                held: Mapping[str, dict[str, Any]] | None = None) -> None:  # fmt: skip
        entered, exited = self.audiences.update(self.store, touched, self.now_ms, waiting, held)
        self.counts.entered += entered
        self.counts.exited += exited

    def _reset(self) -> None:
        self.graph.reset()
        self.traits.reset()
        self._events.clear()
        self._links.clear()
        self._moved.clear()

    def _live(self, rows: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The rows with each profile merged away in this batch replaced by its survivor."""
        moved = self._moved
        if not moved:
            return rows
        out = []
        for segment_id, row in rows:
            while segment_id in moved:
                segment_id = moved[segment_id]
            out.append((segment_id, row))
        return out

    def _one_guarded(self, record: StoredRecord) -> list[Change]:
        """One event and its writes in a savepoint: a failure rolls back it alone, and the
        graph's and traits' caches with it."""
        store = self.store
        store.savepoint()
        touched = dict(self._touched)
        try:
            self._one(record)
            changes = self._write()
        except Exception as exc:
            if store_down(exc):
                raise
            store.rollback_to_savepoint()
            self._reset()
            self._touched = touched  # the event's profile may not exist after the rollback
            logger.exception("space %s: event %s not applied", self.space.name,
                             record.message_id)  # fmt: skip
            self.counts.errors += 1
            self.store.count("error", "", "", record.message_id, record.received_at_ms)
            return []
        store.release_savepoint()
        return changes

    def _one(self, record: StoredRecord) -> None:
        """Apply one event (its computed traits' values are settled at :meth:`_write`)."""
        event = orjson.loads(record.payload)
        ts = _event_ms(event, record.received_at_ms)
        mid, source, store = record.message_id, record.source, self.store
        extracted = self.extractor.extract(event)
        for skipped in extracted.skipped:
            store.count(skipped.reason, skipped.type, skipped.value, mid, ts)
            self.counts.blocked += 1
        if not extracted.identifiers:
            store.count("no_identifiers", "", "", mid, ts)
            return
        result = self.graph.resolve(extracted.identifiers, mid, record.offset, source, ts)
        segment_id = result.segment_id
        if segment_id is None:
            return
        counts = self.counts
        counts.events += 1
        counts.created += result.created
        counts.merged += len(result.merged)
        for _, kind in result.dropped:
            if kind == "refused":
                counts.refused += 1
            else:
                counts.limited += 1
        traits = self.traits
        for loser in result.merged:
            self._moved[loser] = segment_id
            self._touched.pop(loser, None)  # its survivor is evaluated instead
            traits.merge(segment_id, traits.states(store, segment_id),
                         traits.states(store, loser), mid)  # fmt: skip
            traits.drop(store, loser)
        given = _traits_of(event)
        if given:
            if len(given) >= MAX_TRAITS:
                store.count("too_many_traits", "", str(len(given)), mid, ts)
            else:
                store.set_traits(segment_id, given, ts, source, mid)
        name = event_name(event)
        traits.observe(store, segment_id, event, ts, mid, source, name)
        self._events.append(
            (segment_id, EventRef(record.offset, mid, record.type, name, ts, source))
        )
        self._touched[segment_id] = mid
        if record.type == "group":
            group_id = self.extractor.normalise("group_id", event.get("groupId"))
            if group_id is not None and len(group_id) <= self.extractor.max_chars:
                link = Link("accounts", "group_id", group_id, ts, source, mid)
                self._links.append((segment_id, link))

    # ------------------------------------------------------------ audience backfills

    def backfill_after(self) -> int | None:
        """The log offset after which history is to be read for new counters, if any."""
        return self.backfills.read_after() if self.backfills else None

    def backfill(self, records: list[StoredRecord]) -> None:
        """Count history records for the new counters they are for (engage/backfill.py);
        one transaction with the progress."""
        assert self.backfills is not None
        store = self.store
        store.begin()
        try:
            for record in records:
                counting = self.backfills.counting(record.offset)
                if not counting or record.source not in self.sources:
                    continue
                segment_id = store.profile_of_event(record.offset)
                live = store.resolve(segment_id) if segment_id is not None else None
                if live is None:
                    continue  # an event no profile took (no identifiers), or deleted since
                event = orjson.loads(record.payload)
                self.traits.observe(store, live, event, _event_ms(event, record.received_at_ms),
                                    record.message_id, record.source, event_name(event),
                                    only=counting)  # fmt: skip
            self.traits.flush(store)
            self.backfills.counted(store, records[-1].offset if records else 1 << 62)
            store.commit()
        except BaseException:
            self.traits.reset()
            store.rollback()
            raise

    def sweep(self) -> None:
        """Evaluate the next live profiles for the audiences whose counters are complete."""
        assert self.backfills is not None
        keys = self.backfills.sweeping()
        if not keys:
            return
        store = self.store
        after = min(self.backfills.audiences[k]["after"] for k in keys)
        store.begin()
        try:
            profiles = store.live_profiles(after, SWEEP_BATCH)
            self._update(dict.fromkeys(profiles), self.backfills.waiting() - set(keys))
            done = len(profiles) < SWEEP_BATCH
            self.backfills.swept(store, keys, profiles[-1] if profiles else after, done)
            store.commit()
        except BaseException:
            store.rollback()
            raise

    def expire(self) -> list[Change]:
        """Recompute windowed traits that moved, in transactions of a bounded size."""
        changes: list[Change] = []
        while True:
            self.store.begin()
            try:
                done = self.traits.expire(self.store, BATCH)
                self._touched = {c.segment_id: None for c in done}  # a window moved
                self._evaluate()
                self.store.commit()
            except BaseException:
                self.traits.reset()
                self._touched.clear()
                self.store.rollback()
                raise
            changes.extend(done)
            if not done:
                return changes


def _event_ms(event: dict[str, Any], fallback: int) -> int:
    try:
        return parse_ms(event.get("timestamp"), "timestamp")
    except ItemError:
        return fallback


def _traits_of(event: dict[str, Any]) -> dict[str, Any]:
    """``context.traits`` of any event, and an identify's ``traits`` over them."""
    found: dict[str, Any] = {}
    context = event.get("context")
    if isinstance(context, dict) and isinstance(context.get("traits"), dict):
        found.update(context["traits"])
    if event.get("type") == "identify" and isinstance(event.get("traits"), dict):
        found.update(event["traits"])
    return found


class SpaceConsumer:
    """Follows the log for one space on its own thread."""

    def __init__(self, space: SpaceConfig, log: EventLog, data_dir: Path,
                 now_ms: Callable[[], int] = wall_ms,
                 state: StateConfig | None = None) -> None:  # fmt: skip
        self.space = space
        self.log = log
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"headwater-unify-{space.name}")
        self._data_dir = data_dir
        self._state = state
        self._now_ms = now_ms
        self.standing_by = False  # another node writes the space's store (PostgreSQL)
        self._waiting: SqliteProfileStore | None = None  # the store, while standing by
        self._opened: SqliteProfileStore | None = None  # the last store _open made a writer
        self._stopped = False
        self.processor: SpaceProcessor | None = None
        self.position = 0
        self.on_change: list[Callable[[Change], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.retry_start = False  # started by a change: a store that fails now is retried

    def _open(self) -> SpaceProcessor:
        store, self._waiting = self._waiting, None  # kept open while standing by
        if store is None:
            store = open_profile_store(self._data_dir, self.space.name, self._state,
                                       writer=True)  # fmt: skip
        try:
            if store.try_writer():
                self._opened = store  # closed by stop() even if start() was cancelled
                return SpaceProcessor(self.space, store, self._now_ms)
        except BaseException:
            store.close()
            raise
        self._waiting = store
        raise NotTheWriter(f"space {self.space.name}: another node writes its profiles")

    async def start(self) -> None:
        """Open the store and follow the log; with a shared store another node may be its
        writer, and this consumer stands by (asking every :data:`STANDBY_SECS`)."""
        loop = asyncio.get_running_loop()
        try:
            await self._take_over(loop)
        except NotTheWriter:
            self._stand_by()
        except Exception:
            if not self.retry_start:
                raise
            logger.exception("space %s: cannot open its store now; retrying", self.space.name)
        self._task = loop.create_task(self._run(), name=f"unify:{self.space.name}")

    async def _take_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self.processor = await loop.run_in_executor(self._executor, self._open)
        self.position = await loop.run_in_executor(self._executor, self.processor.store.position)
        self.processor.traits.on_change.extend(self.on_change)
        if self.standing_by:
            logger.info("space %s: this node writes its profiles now (from offset %d)",
                        self.space.name, self.position)  # fmt: skip
        self.standing_by = False

    def _stand_by(self) -> None:
        if not self.standing_by:
            logger.info("space %s: another node writes its profiles; standing by",
                        self.space.name)  # fmt: skip
        self.standing_by = True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.space.recompute_interval_secs
        next_expiry = time.monotonic()
        while True:
            try:
                if self.processor is None:  # standing by, or after a failure
                    if self.standing_by:
                        await asyncio.sleep(STANDBY_SECS)
                    await self._take_over(loop)
                    continue
                if time.monotonic() >= next_expiry:
                    await loop.run_in_executor(self._executor, self.processor.expire)
                    next_expiry = time.monotonic() + interval
                records = await self.log.read(self.position, BATCH)
                if records:
                    await loop.run_in_executor(self._executor, self.processor.apply, records,
                                               self.position)  # fmt: skip
                    self.position = records[-1].offset
                if await self._backfill() or records:
                    continue
                await self.log.wait(self.position, min(WAIT_SECS, interval))
            except asyncio.CancelledError:
                raise
            except NotTheWriter:  # lost the store to another node (its session ended)
                await self._let_go(loop)
                self._stand_by()
            except Exception as exc:  # the store or the log failed: try again, never spin
                if isinstance(exc, PositionMoved):
                    logger.warning("%s; reading the position again", exc)
                else:
                    logger.exception("space %s: identity processing failed; retrying in 1 s",
                                     self.space.name)  # fmt: skip
                    await asyncio.sleep(1.0)
                # a new processor on the store as committed: what the failed transaction
                # did in memory (caches, a backfill's progress) is dropped with the old one,
                # and the position is read again (a COMMIT whose answer was lost may have
                # moved it)
                await self._let_go(loop)

    async def _let_go(self, loop: asyncio.AbstractEventLoop) -> None:
        processor, self.processor = self.processor, None
        self._opened = None
        if processor is not None:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._executor, processor.store.close)

    async def _backfill(self) -> bool:
        """One step of a new audience's backfill, between live batches; False when none is
        pending."""
        assert self.processor is not None
        loop = asyncio.get_running_loop()
        after = self.processor.backfill_after()
        if after is not None:
            history = await self.log.read(after, BATCH)
            await loop.run_in_executor(self._executor, self.processor.backfill, history)
            return True
        if self.processor.backfills and self.processor.backfills.sweeping():
            await loop.run_in_executor(self._executor, self.processor.sweep)
            return True
        return False

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for store in (self.processor.store if self.processor else None, self._waiting):
            if store is not None:
                store.interrupt()  # a call waiting for PostgreSQL gives up now
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        # what the thread was doing when the task was cancelled finishes first (an _open
        # whose store the cancelled task never got), then every store it made is closed
        await loop.run_in_executor(self._executor, lambda: None)
        stores = {id(s): s for s in (self.processor.store if self.processor else None,
                                     self._waiting, self._opened) if s is not None}  # fmt: skip
        for store in stores.values():
            await loop.run_in_executor(self._executor, store.close)
        self.processor = self._waiting = self._opened = None
        self._executor.shutdown(wait=True)


class Unify:
    """Every enabled space's consumer (what the worker process, or an inline gateway, runs)."""

    def __init__(self, spaces: list[SpaceConfig], log: EventLog, data_dir: Path,
                 now_ms: Callable[[], int] = wall_ms,
                 state: StateConfig | None = None) -> None:  # fmt: skip
        self._log, self._data_dir, self._now_ms, self._state = log, data_dir, now_ms, state
        self.consumers = [SpaceConsumer(s, log, data_dir, now_ms, state)
                          for s in spaces if s.enabled]  # fmt: skip
        self._changing = asyncio.Lock()  # one reconfigure at a time

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()

    async def reconfigure(self, spaces: list[SpaceConfig]) -> dict[str, str]:
        """Run these spaces from now on: a removed, disabled or changed space's consumer
        stops after the batch it is in (its position is committed with the batch), a new or
        changed one starts from its committed position, as at a start (new computed traits
        and audiences are filled in from the profiles as a start does)."""
        async with self._changing:
            return await self._reconfigure(spaces)

    async def _reconfigure(self, spaces: list[SpaceConfig]) -> dict[str, str]:
        wanted = {s.name: s for s in spaces if s.enabled}
        done: dict[str, str] = {}
        for consumer in list(self.consumers):
            if wanted.get(consumer.space.name) != consumer.space:
                await consumer.stop()
                self.consumers.remove(consumer)
                done[consumer.space.name] = "stopped"
        running = {c.space.name for c in self.consumers}
        for name, space in wanted.items():
            if name not in running:
                consumer = SpaceConsumer(space, self._log, self._data_dir, self._now_ms,
                                         self._state)  # fmt: skip
                consumer.retry_start = True
                await consumer.start()
                self.consumers.append(consumer)
                done[name] = "restarted" if name in done else "started"
        return done

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()
