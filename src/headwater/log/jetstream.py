"""The event log on a NATS JetStream stream: the scale-out backend (docs/scale-out.md).

How the contract of :mod:`headwater.log.base` maps onto JetStream:

- **One stream per workspace** (``log.stream``), file storage, ``log.replicas`` copies. An
  event is a message on ``<stream>.e.<bucket>``; its offset is the stream sequence.
- **Ack means durable**: ``append`` returns once JetStream's publish ack came back, which on
  a replicated stream is sent after a quorum of servers stored the message.
- **Dedupe**: ``Nats-Msg-Id`` is the event's messageId (percent-encoded, so an id can never
  break the header), and the stream's duplicate window is 24 h (or ``max_age`` if shorter).
  A duplicate's ack carries the original's sequence. The key is the messageId alone, as in
  the embedded log: the stream is the workspace, and a write key being rotated must not
  let a retry through (docs/decisions.md).
- **Retention** is the stream's ``max_age`` / ``max_bytes`` with ``discard: old``; the
  servers apply it continuously, so :meth:`JetStreamLog.enforce_retention` only reports.
- **Back-pressure**: a publish that is not acknowledged in time (no quorum, no servers) or
  that JetStream refuses (its storage is full) raises :class:`LogUnavailable`, which the
  gateway answers with 503 + ``Retry-After``. A batch is not atomic here: part of a refused
  batch may be stored, and the client's retry is deduplicated by the window above.
- **Readers** follow with ephemeral pull consumers (no acks, in memory) cached by the next
  sequence they would deliver, so a follower's ``read(after=...)`` / ``wait`` reuse one
  consumer while it keeps up; small random reads use the leader's ``STREAM.MSG.GET``.
- **get(message_id)** walks the message's bucket subject (one of 65,536, by a hash of the
  id) with ``next_by_subj`` on the stream leader: the servers keep per-subject state for
  65,536 subjects, not one per event, and a lookup costs about retained/65,536 requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ClusterInfo,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from headwater.config import LogConfig
from headwater.errors import LogClosed, LogError, LogUnavailable
from headwater.log.base import (
    DEDUPE_WINDOW_SECS,
    AppendResult,
    LogStats,
    Record,
    Replica,
    RetentionReport,
    StoredRecord,
)

logger = logging.getLogger("headwater.log.jetstream")

SOURCE_HEADER = "Hw-Source"
TYPE_HEADER = "Hw-Type"
RECEIVED_HEADER = "Hw-Received-Ms"
ID_HEADER = "Nats-Msg-Id"

CONNECT_SECS = 10.0  # no server answers by then: start-up fails with the servers named
OPEN_SECS = 60.0  # connect and create the stream: the cluster may still be electing
PLACEMENT_SECS = 10.0  # placement refused this long (a peer offline, the cluster forming)
ACK_SECS = 5.0  # a publish not acknowledged by then: refused with 503 (retried by the SDK)
PING_SECS = 2  # a frozen or partitioned server is given up after 2 unanswered pings
REQUEST_SECS = 5.0  # a pull or a get answered by then, or the consumer is lost
HEARTBEAT_SECS = 2.0  # a lingering pull hears from its consumer this often
RETRY_AFTER_SECS = 2
REFUSING_SECS = 5.0  # stats() says "refusing" this long after a refused append
STATS_SECS = 1.0
SMALL_READ = 8  # reads up to this many records go to the leader, without a consumer
LEADER_READ = 100  # at most this many per read from the leader when no consumer can be made
CURSORS = 32  # consumers kept per process for readers that follow the log
CURSOR_IDLE_SECS = 60.0  # the servers drop a consumer nobody pulled from for this long
PUBLISH_ATTEMPTS = 4  # publishes refused for a passing reason are tried this often in all
IN_PROCESS = 10158  # "duplicate message id is in process": the same id is being stored
FULL_CODES = {10023, 10028, 10047, 10077}  # insufficient resources, storage, bytes, messages


def bucket_subject(stream: str, message_id: str) -> str:
    """The subject an event with this id is published on: one of 65,536 per stream."""
    return f"{stream}.e.{hashlib.blake2b(message_id.encode(), digest_size=2).hexdigest()}"


def _headers(r: Record) -> dict[str, str]:
    return {ID_HEADER: quote(r.message_id, safe=""), SOURCE_HEADER: r.source,
            TYPE_HEADER: r.type, RECEIVED_HEADER: str(r.received_at_ms)}  # fmt: skip


def _record(seq: int, headers: dict[str, str] | None, data: bytes) -> StoredRecord:
    h = headers or {}
    return StoredRecord(seq, unquote(h.get(ID_HEADER, "")), h.get(SOURCE_HEADER, ""),
                        h.get(TYPE_HEADER, ""), int(h.get(RECEIVED_HEADER, 0)), data)  # fmt: skip


def _status(msg: Msg) -> str | None:
    """A JetStream status message's code (``404`` no messages, ``408`` expired, ``100``
    heartbeat, ``409`` consumer gone or leader changed), None for an event."""
    headers = msg.headers
    return headers.get("Status") if headers and not msg.data else None


def _stream_seq(reply: str) -> int:
    """The stream sequence in a delivered message's ack subject: ``$JS.ACK.<stream>.
    <consumer>.<delivered>.<sseq>...`` (9 tokens), or with domain and account hash before
    the stream (12 tokens)."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) < 11 else tokens[7])


class _Cursor:
    """One ephemeral pull consumer and what it delivered that nobody read yet.

    Deliveries land through the subscription's callback (one task for all of them, not one
    per event), in ``arrived``; ``pull`` turns them into records."""

    def __init__(self, name: str, next_seq: int) -> None:
        self.name = name
        self.sub: Subscription | None = None
        self.next_seq = next_seq  # the sequence the reader wants next
        self.buffer: deque[StoredRecord] = deque()
        self.arrived: deque[Msg] = deque()
        self.signal = asyncio.Event()
        self.lost = False

    async def on_msg(self, msg: Msg) -> None:
        self.arrived.append(msg)
        self.signal.set()

    def take(self, limit: int) -> list[StoredRecord]:
        out = [self.buffer.popleft() for _ in range(min(limit, len(self.buffer)))]
        if out:
            self.next_seq = out[-1].offset + 1
        return out

    def _keep(self, msg: Msg) -> None:
        seq = _stream_seq(msg.reply)
        if seq >= self.next_seq and (not self.buffer or seq > self.buffer[-1].offset):
            self.buffer.append(_record(seq, msg.headers, msg.data))

    async def _next(self, within_secs: float) -> Msg | None:
        while not self.arrived:
            self.signal.clear()
            try:
                await asyncio.wait_for(self.signal.wait(), max(within_secs, 0.001))
            except TimeoutError:
                return None
        return self.arrived.popleft()

    async def pull(self, nc: Client, stream: str, batch: int, wait_secs: float | None) -> None:
        """Ask for up to ``batch`` events: what there is now (``wait_secs`` None), or the
        first to arrive within ``wait_secs``. Marks the cursor lost when its consumer is."""
        assert self.sub is not None
        request: dict[str, Any] = {"batch": batch}
        if wait_secs is None:
            request["no_wait"] = True
            deadline = time.monotonic() + REQUEST_SECS
        else:
            request["expires"] = max(int(wait_secs * 1e9), 1_000_000)
            if wait_secs > 2 * HEARTBEAT_SECS:
                request["idle_heartbeat"] = int(HEARTBEAT_SECS * 1e9)
            deadline = time.monotonic() + wait_secs + REQUEST_SECS
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.name}"
        try:
            await nc.publish(subject, orjson.dumps(request), reply=self.sub.subject)
        except nats.errors.Error:
            self.lost = True
            return
        got = 0
        while got < batch:
            quiet = deadline - time.monotonic()
            if "idle_heartbeat" in request:
                quiet = min(quiet, 3 * HEARTBEAT_SECS)  # no heartbeat for this long: lost
            msg = await self._next(quiet)
            if msg is None:
                self.lost = True
                return
            status = _status(msg)
            if status is None:
                self._keep(msg)
                got += 1
                if wait_secs is not None:
                    return  # the first arrival is what a waiter waits for
            elif status == "100":
                continue
            elif status in ("404", "408"):
                return
            else:  # 409 and the like: the consumer is gone or moved
                self.lost = True
                return


class JetStreamLog:
    """The event log on a JetStream stream; see the module docstring for the mapping."""

    def __init__(self, config: LogConfig, *, ack_secs: float = ACK_SECS) -> None:
        if config.backend != "jetstream" or not config.servers:
            raise LogError("JetStreamLog needs log.backend: jetstream and log.servers")
        self.config = config
        self.stream = config.stream
        self.subjects = f"{config.stream}.>"  # every event's subject
        self.ack_secs = ack_secs
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self._cursors: dict[int, list[_Cursor]] = {}  # by the next sequence they deliver
        self._stats_task: asyncio.Task[None] | None = None
        self._appended = 0
        self._duplicates = 0
        self._latency_ms = 0.0
        self._refused: tuple[str, float] | None = None  # reason, monotonic time
        self._first: int | None = None
        self._last: int | None = None
        self._records = 0
        self._bytes = 0
        self._replicas: tuple[Replica, ...] = ()
        self._oldest_ms: int | None = None
        self._dropped = 0  # records retention dropped, seen by the stats refresher
        self._unreachable = False  # the last stats refresh got no answer from the stream

    # -- connection ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and create (or update) the stream; raises LogError naming the servers
        when the cluster cannot be reached within a minute."""
        await self._ready()

    async def _ready(self) -> JetStreamContext:
        if self._closed:
            raise LogClosed("the event log is closed")
        if self._js is not None:
            return self._js
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._js is None:
                await self._connect()
            assert self._js is not None
            return self._js

    async def _connect(self) -> None:
        deadline = time.monotonic() + OPEN_SECS
        last: Exception | None = None
        refused_since: float | None = None
        while time.monotonic() < deadline and not self._closed:
            try:
                if self._nc is None:
                    self._nc = await self._dial()
                js = self._nc.jetstream(timeout=REQUEST_SECS)
                await self._ensure_stream(js)
                self._js = js
                await self._refresh_once()  # the stream's end, before any read trusts it
                self._stats_task = asyncio.create_task(self._refresh_stats())
                return
            except nats.js.errors.BadRequestError as exc:
                said = exc.description or ""
                if "no suitable peers" in said or "insufficient" in said:
                    # too little storage: no election changes that, so at once; too few
                    # peers (one offline, the cluster still forming) may pass: a while
                    refused_since = refused_since or time.monotonic()
                    storage = "storage" in said and "offline" not in said
                    if storage or time.monotonic() - refused_since >= PLACEMENT_SECS:
                        await self._hang_up()
                        raise LogError(self._placement_refused(said, storage)) from exc
                else:
                    refused_since = None
                last = exc
                await asyncio.sleep(0.5)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                refused_since = None
                last = exc
                await asyncio.sleep(0.5)
        await self._hang_up()
        raise LogError(
            f"cannot use JetStream at {', '.join(self.config.servers)}: {last!r}. Start the "
            "servers (with -js), check log.servers, and that a quorum of them is up"
        )

    def _placement_refused(self, said: str, storage: bool) -> str:
        where = f"cannot use JetStream at {', '.join(self.config.servers)}: the servers refuse " \
                f"stream {self.stream} ({said})."  # fmt: skip
        if storage:
            return (f"{where} Lower log.retention_max_bytes, or give the servers more room "
                    "(jetstream max_file_store) or disk")  # fmt: skip
        return (f"{where} A stream of {self.config.replicas} replicas needs that many "
                "servers up with JetStream and room: start the missing ones, or lower "
                "log.replicas")  # fmt: skip

    async def _hang_up(self) -> None:
        """Open failed: the connection (reconnecting on its own) is closed, not left behind."""
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _dial(self) -> Client:
        nc = Client()
        try:
            await asyncio.wait_for(nc.connect(
                servers=self.config.servers, connect_timeout=2,
                max_reconnect_attempts=-1, reconnect_time_wait=1,
                ping_interval=PING_SECS, max_outstanding_pings=2,
                allow_reconnect=True, error_cb=self._on_error,
                disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect,
                name=f"headwater-log-{self.stream}",
            ), CONNECT_SECS)  # fmt: skip
        except TimeoutError:
            await nc.close()
            raise LogError(
                f"cannot use JetStream at {', '.join(self.config.servers)}: no server answered "
                f"within {CONNECT_SECS:.0f} s. Start the servers (nats-server -js), or fix "
                "log.servers"
            ) from None
        return nc

    def _stream_config(self) -> StreamConfig:
        max_age = float(self.config.retention_max_age_secs)
        return StreamConfig(
            name=self.stream, subjects=[self.subjects], num_replicas=self.config.replicas,
            storage=StorageType.FILE, retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD, max_age=max_age,
            max_bytes=int(self.config.retention_max_bytes),
            duplicate_window=min(float(DEDUPE_WINDOW_SECS), max_age),
            description="Headwater's event log (docs/scale-out.md)",
        )  # fmt: skip

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        wanted = self._stream_config()
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            info = await js.add_stream(wanted)
        have = info.config
        if (have.num_replicas, have.max_age, have.max_bytes, have.duplicate_window) != (
            wanted.num_replicas,
            wanted.max_age,
            wanted.max_bytes,
            wanted.duplicate_window,
        ):
            await js.update_stream(wanted)
            logger.info("stream %s: limits updated from the workspace", self.stream)
        elected_by = time.monotonic() + REQUEST_SECS
        while info.cluster is not None and not info.cluster.leader:  # a new stream elects one
            if time.monotonic() > elected_by:
                raise TimeoutError(f"stream {self.stream} has no leader")
            await asyncio.sleep(0.05)
            info = await js.stream_info(self.stream)

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("JetStream connection: %s", exc)

    async def _on_disconnect(self) -> None:
        if not self._closed:
            logger.warning("JetStream: disconnected from %s; reconnecting", self.stream)

    async def _on_reconnect(self) -> None:
        nc = self._nc
        logger.info("JetStream: reconnected (%s)", nc.connected_url.netloc if nc and
                    nc.connected_url else "?")  # fmt: skip

    # -- writes -------------------------------------------------------------------------------

    async def append(self, records: Sequence[Record]) -> list[AppendResult]:
        await self._ready()
        if not records:
            return []
        started = time.perf_counter()
        first_of: dict[str, int] = {}  # an id twice in one batch is published once
        unique = [r for i, r in enumerate(records) if first_of.setdefault(r.message_id, i) == i]
        acks = await self._publish(unique)
        for attempt in range(1, PUBLISH_ATTEMPTS):
            again = [r for r, ack in zip(unique, acks, strict=True) if ack is None]
            if not again:
                break
            # "in process": once the other copy is stored, ours is its duplicate; "no
            # responders": the stream's leader is moving. Those again, a moment later.
            await asyncio.sleep(0.1 * attempt)
            retried = iter(await self._publish(again, last=attempt == PUBLISH_ATTEMPTS - 1))
            acks = [ack if ack is not None else next(retried) for ack in acks]
        by_id = {r.message_id: ack for r, ack in zip(unique, acks, strict=True)}
        results: list[AppendResult] = []
        for i, r in enumerate(records):
            ack = by_id[r.message_id]
            assert ack is not None
            duplicate = bool(ack.duplicate) or first_of[r.message_id] != i
            results.append(AppendResult(ack.seq, duplicate))
            if duplicate:
                self._duplicates += 1
                continue
            self._appended += 1
            self._records += 1
            self._bytes += len(r.payload)
            self._last = max(self._last or 0, ack.seq)
            if self._first is None:
                self._first, self._oldest_ms = ack.seq, r.received_at_ms
        self._refused = None
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._latency_ms = elapsed_ms if not self._latency_ms else (
            0.9 * self._latency_ms + 0.1 * elapsed_ms)  # fmt: skip
        return results

    async def _publish(self, records: Sequence[Record], last: bool = False) -> list[Any]:
        """Each record's publish ack, or None where it is worth publishing again at once:
        JetStream said its id is "in process" (the same id in flight from another append),
        or no stream answered (a leader election). Raises LogUnavailable for the rest, and
        for those too when this is the ``last`` attempt."""
        js = await self._ready()
        futures: list[asyncio.Future[Any]] = []
        try:
            # wait_stall=None: no timer per event, so the loop does not yield between events
            # and the client writes the batch to the socket at once; asyncio.timeout bounds a
            # stall on the client's window of pending publishes instead
            async with asyncio.timeout(self.ack_secs):
                for r in records:
                    subject = bucket_subject(self.stream, r.message_id)
                    ack = await js.publish_async(subject, r.payload, headers=_headers(r),
                                                 wait_stall=None)  # fmt: skip
                    futures.append(ack)
            _, pending = await asyncio.wait(futures, timeout=self.ack_secs)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            for future in futures:
                future.cancel()
            raise self._refuse("jetstream_unavailable", f"cannot publish: {exc!r}") from exc
        if pending:
            for future in pending:
                future.cancel()  # frees its slot in the client's window of pending publishes
            raise self._refuse("jetstream_unavailable",
                               f"{len(pending)} of {len(futures)} events not acknowledged "
                               f"by a quorum within {self.ack_secs:.0f} s")  # fmt: skip
        acks: list[Any] = []
        refused: BaseException | None = None
        for future in futures:  # every exception is retrieved, the first one is raised
            error = future.exception()
            if error is None:
                acks.append(future.result())
            elif not last and (isinstance(error, nats.js.errors.NoStreamResponseError)
                               or getattr(error, "err_code", None) == IN_PROCESS):  # fmt: skip
                acks.append(None)
            else:
                refused = refused or error
        if refused is not None:
            code = getattr(refused, "err_code", None)
            reason = "jetstream_full" if code in FULL_CODES else "jetstream_unavailable"
            raise self._refuse(reason, f"JetStream refused an event: {refused!r}") from refused
        return acks

    def _refuse(self, reason: str, detail: str) -> LogUnavailable:
        self._refused = (reason, time.monotonic())
        what = ("JetStream's storage is full: free space on the servers or raise "
                "jetstream.max_file_store" if reason == "jetstream_full" else
                "JetStream is unavailable (no quorum or no server reachable)")  # fmt: skip
        return LogUnavailable(f"{what}; {detail}", reason=reason,
                              retry_after_secs=RETRY_AFTER_SECS)  # fmt: skip

    # -- reads --------------------------------------------------------------------------------

    async def read(self, after: int, limit: int = 500) -> list[StoredRecord]:
        await self._ready()
        if limit <= 0:
            return []
        cursor = self._take_cursor(after + 1)
        if cursor is None and limit > SMALL_READ:
            cursor = await self._new_cursor(after + 1)
        if cursor is None:  # a small read, or no consumer can be made now (a failover)
            return await self._read_from_leader(after, min(limit, LEADER_READ))
        try:
            out = cursor.take(limit)
            if len(out) < limit and not cursor.buffer:
                await cursor.pull(self._client(), self.stream, limit - len(out), None)
                out += cursor.take(limit - len(out))
        finally:
            self._keep_cursor(cursor)
        if not out and (cursor.lost or after < (self._last or 0)):
            # [] must mean "nothing after": not "consumer lost", nor "its replica lags"
            return await self._read_from_leader(after, min(limit, LEADER_READ))
        return out

    async def wait(self, after: int, timeout_secs: float) -> bool:
        await self._ready()
        deadline = time.monotonic() + timeout_secs
        while True:
            cursor = self._take_cursor(after + 1) or await self._new_cursor(after + 1)
            if cursor is None:
                return await self._wait_on_leader(after, max(0.0, deadline - time.monotonic()))
            try:
                left = deadline - time.monotonic()
                if not cursor.buffer and left > 0:
                    await cursor.pull(self._client(), self.stream, 1, left)
                if cursor.buffer:
                    return True
                lost = cursor.lost
            finally:
                self._keep_cursor(cursor)
            # The pull ended empty before its time (its consumer lost or moved, or placed on
            # a replica that lags): the leader has the last word.
            with contextlib.suppress(LogError):
                if await self._read_from_leader(after, 1):
                    return True
            if time.monotonic() >= deadline:
                return False
            if lost:
                await asyncio.sleep(0.1)  # a new consumer next time round, not at once

    async def _wait_on_leader(self, after: int, timeout_secs: float) -> bool:
        """Poll the leader while no consumer can be made; an unreachable cluster is "nothing
        yet" to a waiter (reads and appends report it), never an exception."""
        deadline = time.monotonic() + timeout_secs
        while True:
            try:
                if await self._read_from_leader(after, 1):
                    return True
            except LogError:
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(0.2, max(deadline - time.monotonic(), 0)))

    async def _read_from_leader(self, after: int, limit: int) -> list[StoredRecord]:
        out: list[StoredRecord] = []
        seq = after + 1
        while len(out) < limit:
            found = await self._get_next(seq, self.subjects)
            if found is None:
                break
            out.append(found)
            seq = found.offset + 1
        return out

    async def _get_next(self, seq: int, subject: str) -> StoredRecord | None:
        js = await self._ready()
        try:
            raw = await js.get_msg(self.stream, seq=max(seq, 1), subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise LogError(f"cannot read stream {self.stream} from JetStream: {exc!r}") from exc
        assert raw.seq is not None
        return _record(raw.seq, raw.headers, raw.data or b"")

    async def get(self, message_id: str) -> StoredRecord | None:
        subject = bucket_subject(self.stream, message_id)
        seq = 1
        while (found := await self._get_next(seq, subject)) is not None:
            if found.message_id == message_id:
                return found
            seq = found.offset + 1
        return None

    def _client(self) -> Client:
        assert self._nc is not None
        return self._nc

    def _take_cursor(self, next_seq: int) -> _Cursor | None:
        waiting = self._cursors.get(next_seq)
        if not waiting:
            return None
        cursor = waiting.pop()
        if not waiting:
            del self._cursors[next_seq]
        return cursor

    def _keep_cursor(self, cursor: _Cursor) -> None:
        if cursor.lost or self._closed:
            self._drop(cursor)
            return
        self._cursors.setdefault(cursor.next_seq, []).append(cursor)
        while sum(map(len, self._cursors.values())) > CURSORS:  # the oldest-kept first
            oldest = next(iter(self._cursors))
            dropped = self._take_cursor(oldest)
            if dropped is not None:
                self._drop(dropped)

    async def _new_cursor(self, next_seq: int) -> _Cursor | None:
        """A consumer from ``next_seq`` on; None (and a warning) when the cluster cannot
        make one now, e.g. while it moves leaders after losing a server."""
        js = await self._ready()
        nc = self._client()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(next_seq, 1),
            ack_policy=AckPolicy.NONE, inactive_threshold=CURSOR_IDLE_SECS,
            num_replicas=1, mem_storage=True, max_waiting=16,
        )  # fmt: skip
        try:
            info = await js.add_consumer(self.stream, config)
            assert info.name is not None
            cursor = _Cursor(info.name, next_seq)
            cursor.sub = await nc.subscribe(nc.new_inbox(), cb=cursor.on_msg)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            logger.warning("stream %s: cannot make a consumer now (%r); reading from the "
                           "stream leader", self.stream, exc)  # fmt: skip
            return None
        return cursor

    def _drop(self, cursor: _Cursor) -> None:
        async def release() -> None:
            try:
                if cursor.sub is not None:
                    await cursor.sub.unsubscribe()
                if self._js is not None and not self._closed:
                    await self._js.delete_consumer(self.stream, cursor.name)
            except (nats.errors.Error, nats.js.errors.Error):
                pass  # the servers drop it after CURSOR_IDLE_SECS anyway

        task = asyncio.ensure_future(release())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- retention and stats ------------------------------------------------------------------

    async def enforce_retention(self, now_ms: int | None = None) -> RetentionReport:
        """JetStream applies max_age / max_bytes itself; this reports what it dropped since
        the last call (records only: the servers do not say how many bytes)."""
        await self._ready()
        await self._refresh_once()
        dropped, self._dropped = self._dropped, 0
        return RetentionReport(segments_dropped=0, records_dropped=dropped, bytes_dropped=0)

    async def _refresh_stats(self) -> None:
        while not self._closed:
            try:
                await self._refresh_once()
                self._unreachable = False
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, LogError):
                self._unreachable = True  # stats() says so: status shows the log down
            except Exception:
                logger.exception("JetStream stats refresh failed")
            await asyncio.sleep(STATS_SECS)

    async def _refresh_once(self) -> None:
        js = self._js
        if js is None:
            return
        info = await js.stream_info(self.stream)
        state = info.state
        self._replicas = replicas_of(info.cluster)
        if state.messages == 0:
            first: int | None = None
        else:
            first = state.first_seq
        if self._first is not None and (first is None or first > self._first):
            self._dropped += (first or state.last_seq + 1) - self._first
        if first is not None and first != self._first:
            head = await self._get_next(first, self.subjects)
            self._oldest_ms = head.received_at_ms if head else None
        self._first = first
        self._last = state.last_seq if state.messages else None
        self._records = state.messages
        self._bytes = state.bytes
        if first is None:
            self._oldest_ms = None

    def stats(self) -> LogStats:
        refusing = None
        if self._refused is not None and time.monotonic() - self._refused[1] < REFUSING_SECS:
            refusing = self._refused[0]
        elif self._unreachable or (self._nc is not None and not self._nc.is_connected):
            refusing = "jetstream_unavailable"  # seen without an append having to fail
        return LogStats(
            first_offset=self._first, last_offset=self._last, records=self._records,
            payload_bytes=self._bytes, disk_bytes=self._bytes * self.config.replicas,
            segments=0, oldest_received_at_ms=self._oldest_ms, appended_total=self._appended,
            duplicates_total=self._duplicates, commit_latency_ms=self._latency_ms,
            refusing=refusing, replicas=self._replicas,
        )  # fmt: skip

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stats_task is not None:
            self._stats_task.cancel()
        nc, self._nc, self._js = self._nc, None, None
        self._cursors.clear()
        if nc is not None:  # every append already has its acks: nothing is left to drain
            await nc.close()


def replicas_of(cluster: ClusterInfo | None) -> tuple[Replica, ...]:
    """The stream's copies as its leader reports them, the leader first. A peer's
    ``active`` is the nanoseconds since the leader last heard from it."""
    if cluster is None or not cluster.leader:
        return ()
    found = [Replica(cluster.leader, True, True, False, 0.0, 0)]
    for peer in cluster.replicas or []:
        found.append(Replica(peer.name or "?", False, bool(peer.current), bool(peer.offline),
                             (peer.active or 0) / 1e9, int(peer.lag or 0)))  # fmt: skip
    return tuple(found)
