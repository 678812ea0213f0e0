"""Activation: an audience's entries and exits sent to its destinations as Segment sends
them, through the normal pipeline.

A space whose audiences name destinations gets a source of its own, ``engage-<space>``
(:func:`with_engage`: the process's running workspace adds it, as it adds the canary's, and
lists it among the sources of those destinations). The :class:`Activator` runs on the
gateway: it reads the changes the space's consumer wrote (``audience_changes``, an outbox
in the space's store) after the position it keeps in ``<data-dir>/engage/<space>.json`` (with
``state: {backend: postgres}``, in the shared store's ``meta``, with the pauses: every
gateway goes on from the same change, and a pause made on one counts on all),
makes for each change and destination an ``identify`` (trait ``<key>: true/false``) and/or
a ``track`` (``Audience Entered`` / ``Audience Exited``) with ``context.personas`` and
``integrations: {"All": false, "<destination>": true}``, and posts them to the Tracking API
in process, as a ``/v1/batch`` of that source. From there they are events like any other:
in the log, delivered with retries, in the ledger, traced by messageId.

Exactly once into the log: a change's messages have messageIds made from the change's id,
so a crash after the append and before the position moves sends them again and the log's
dedupe drops the copies. A profile with neither a userId nor an anonymousId cannot be
addressed; its change is skipped (counted, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from headwater.config.workspace import SourceConfig, Workspace
from headwater.engage.config import AudienceConfig, AudienceDestination, source_of
from headwater.gateway.normalize import iso_ms
from headwater.state import postgres
from headwater.unify.config import SpaceConfig
from headwater.unify.store import SqliteProfileStore, open_profile_store, profile_store_exists

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

logger = logging.getLogger(__name__)

STATE_DIR = "engage"
CHANGE_KEY, PAUSED_PREFIX = "activation.change", "activation.paused:"  # shared state's meta
BATCH = 200  # changes per post (each is at most two messages per destination)
POLL_SECS = 0.5
ENTERED, EXITED = "Audience Entered", "Audience Exited"

Submit = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
"""Posts a batch for a source (its name) and returns once it is in the log; raises if not."""


def activated(spaces: Iterable[SpaceConfig]) -> list[SpaceConfig]:
    """The spaces with an enabled audience that names a destination."""
    return [s for s in spaces if s.enabled and any(a.enabled and a.destinations
                                                   for a in s.audiences)]  # fmt: skip


def with_engage(workspace: Workspace, write_key: Callable[[str], str | None]) -> Workspace:
    """The running workspace: each activated space's source (with ``write_key(source)``)
    added, and listed by the destinations its audiences name."""
    spaces = activated(workspace.spaces)
    if not spaces:
        return workspace
    sources = [*workspace.sources,
               *(SourceConfig(name=source_of(s.name), write_key=write_key(source_of(s.name)))
                 for s in spaces)]  # fmt: skip
    wanted: dict[str, list[str]] = {}
    for space in spaces:
        for audience in space.audiences:
            for target in audience.destinations:
                names = wanted.setdefault(target.name, [])
                if source_of(space.name) not in names:
                    names.append(source_of(space.name))
    destinations = [
        d.model_copy(update={"sources": [*d.sources, *wanted[d.name]]}) if d.name in wanted
        else d
        for d in workspace.destinations
    ]  # fmt: skip
    # model_copy skips validation: the user's part was validated, the sources are ours
    return workspace.model_copy(update={"sources": sources, "destinations": destinations})


def _id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("/".join(parts).encode()).hexdigest()[:24]


@dataclass
class ActivationCounts:
    sent: int = 0  # messages into the log
    skipped: int = 0  # changes of profiles with neither userId nor anonymousId
    errors: int = 0


class SpaceActivator:
    """One space's outbox, read on a thread of its own (``step`` is synchronous)."""

    def __init__(self, space: SpaceConfig, data_dir: Path,
                 state: StateConfig | None = None) -> None:  # fmt: skip
        self.space = space
        self.source = source_of(space.name)
        self.audiences: dict[str, AudienceConfig] = {
            a.key: a for a in space.audiences if a.enabled and a.destinations
        }
        self.space_id = _id("spa_", space.name)
        self._data_dir = data_dir
        self._state_config = state
        self.shared = postgres.uses_postgres(state)
        self._state = data_dir / STATE_DIR / f"{space.name}.json"
        self._store: SqliteProfileStore | None = None
        self._paused: dict[str, Any] = {}  # as last read or written
        self._store_lock = threading.Lock()  # _open from the activator's thread and a caller's
        self.counts = ActivationCounts()

    def _exists(self) -> bool:
        return profile_store_exists(self._data_dir, self.space.name, self._state_config)

    def _read(self) -> dict[str, Any]:
        """The position and pauses: a file of this node's, or with shared state values in
        the space's store that every gateway reads (a pause made on one counts on all): the
        position, and one value per paused pair."""
        state: Any
        try:
            if self.shared:
                store = self._open()
                pauses = {k.removeprefix(PAUSED_PREFIX): store.meta(k)
                          for k in store.meta_keys(PAUSED_PREFIX)}  # fmt: skip
                state = {"change": store.meta(CHANGE_KEY),
                         "paused": {k: v for k, v in pauses.items() if v}}  # fmt: skip
            else:
                state = orjson.loads(self._state.read_bytes())
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict):
            state = {}
        paused = dict(state.get("paused") or {})
        self._paused = dict(paused)
        return {"change": int(state.get("change") or 0), "paused": paused}

    def _write(self, state: dict[str, Any], pair: str | None = None) -> None:
        """Keep ``state``; with shared state only what changed — the position, or the pause
        of ``pair`` (made, or gone) — so no gateway writes back what it read before another
        gateway changed it."""
        self._paused = dict(state["paused"])
        if self.shared:
            store = self._open()
            if pair is None:
                store.set_meta(CHANGE_KEY, state["change"])
            elif pair in state["paused"]:
                store.set_meta(PAUSED_PREFIX + pair, state["paused"][pair])
            else:
                store.forget([PAUSED_PREFIX + pair], [])
            return
        self._state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state))
        os.replace(tmp, self._state)

    def position(self) -> int:
        return int(self._read()["change"])

    def set_position(self, change: int) -> None:
        self._write({**self._read(), "change": change})

    def paused(self) -> dict[str, dict[str, Any]]:
        """``<audience>/<destination>`` → ``{"at": change, "since_ms": time}`` of each pause.
        With shared state, as last read (every poll, ≤ 0.5 s ago): this is asked on the
        event loop, which must not wait on PostgreSQL."""
        if self.shared:
            return dict(self._paused)
        return dict(self._read()["paused"])

    def pause(self, key: str, destination: str, now_ms: int) -> dict[str, Any]:
        state = self._read()
        pair = f"{key}/{destination}"
        if pair not in state["paused"]:
            state["paused"][pair] = {"at": state["change"], "since_ms": now_ms}
            self._write(state, pair)
        return dict(state["paused"][pair])

    def resumed(self, key: str, destination: str) -> tuple[list[dict[str, Any]], int]:
        """The net changes of a paused sync — per profile one entry or exit, only where its
        membership now differs from when the sync was paused — as messages for that
        destination, and how many profiles they are for."""
        state = self._read()
        pause = state["paused"].get(f"{key}/{destination}")
        audience = self.audiences.get(key)
        if pause is None or audience is None or not self._exists():
            return [], 0
        target = next(t for t in audience.destinations if t.name == destination)
        store = self._open()
        first: dict[str, tuple[int, int, bool]] = {}
        last: dict[str, tuple[int, int, bool]] = {}
        after = int(pause["at"])
        while True:
            rows = store.changes_after(after, 1000)
            rows = [r for r in rows if r[0] <= state["change"]]
            if not rows:
                break
            for change_id, at_ms, aud, segment_id, entered, _ in rows:
                if aud == key:
                    first.setdefault(segment_id, (change_id, at_ms, entered))
                    last[segment_id] = (change_id, at_ms, entered)
            after = rows[-1][0]
        messages: list[dict[str, Any]] = []
        profiles = 0
        for segment_id, (change_id, at_ms, entered) in last.items():
            if first[segment_id][2] != entered:
                continue  # in and out again (or out and in): nothing changed for it
            who = self._identifiers(store, segment_id)
            if who:
                profiles += 1
                messages += self.messages(audience, change_id, at_ms, entered, who, [target])
        return messages, profiles

    def unpause(self, key: str, destination: str) -> None:
        state = self._read()
        pair = f"{key}/{destination}"
        state["paused"].pop(pair, None)
        self._write(state, pair)

    def _open(self) -> SqliteProfileStore:
        with self._store_lock:
            if self._store is None:
                self._store = open_profile_store(self._data_dir, self.space.name,
                                                 self._state_config)  # fmt: skip
            return self._store

    def pending(self) -> tuple[int, list[dict[str, Any]]] | None:
        """The messages of the next changes and the change id they reach; None when there
        is no new change."""
        state = self._read()
        after, paused = int(state["change"]), state["paused"]
        if not self._exists():
            return None
        store = self._open()
        messages: list[dict[str, Any]] = []
        last = after
        for change_id, at_ms, key, segment_id, entered, _ in store.changes_after(after, BATCH):
            last = change_id
            audience = self.audiences.get(key)
            if audience is None:
                continue  # an audience without destinations (or no longer declared)
            who = self._identifiers(store, segment_id)
            if not who:
                self.counts.skipped += 1
                logger.warning("space %s: audience %s: profile %s has neither a userId nor an "
                               "anonymousId; its %s is not sent", self.space.name, key,
                               segment_id, "entry" if entered else "exit")  # fmt: skip
                continue
            targets = [t for t in audience.destinations if f"{key}/{t.name}" not in paused]
            messages += self.messages(audience, change_id, at_ms, entered, who, targets)
        return (last, messages) if last != after else None

    def messages(self, audience: AudienceConfig, change_id: int, at_ms: int, entered: bool,
                 who: dict[str, str], targets: list[AudienceDestination]
                 ) -> list[dict[str, Any]]:  # fmt: skip
        """Segment's messages for one entry or exit, per destination and mode."""
        key = audience.key
        personas = {"computation_class": "audience",
                    "computation_id": _id("aud_", self.space.name, key),
                    "computation_key": key, "namespace": self.space_id,
                    "space_id": self.space_id}  # fmt: skip
        ids = {k: v for k, v in (("userId", who.get("user_id")),
                                 ("anonymousId", who.get("anonymous_id"))) if v}  # fmt: skip
        email = {"email": who["email"]} if "email" in who else {}
        out: list[dict[str, Any]] = []
        for target in targets:
            base = {**ids, "timestamp": iso_ms(at_ms),
                    "context": {"personas": personas, **({"traits": email} if email else {})},
                    "integrations": {"All": False, target.name: True}}  # fmt: skip
            prefix = f"engage-{self.space.name}-{change_id}-{target.name}"
            if target.identify:
                out.append({**base, "type": "identify", "messageId": f"{prefix}-identify",
                            "traits": {key: entered, **email}})  # fmt: skip
            if target.track:
                out.append({**base, "type": "track", "messageId": f"{prefix}-track",
                            "event": ENTERED if entered else EXITED,
                            "properties": {"audience_key": key, key: entered}})  # fmt: skip
        return out

    @staticmethod
    def _identifiers(store: SqliteProfileStore, segment_id: str) -> dict[str, str]:
        """The profile's newest userId, anonymousId and email (its survivor's if it was
        merged away since); empty without a userId or an anonymousId."""
        live = store.resolve(segment_id) or segment_id
        newest: dict[str, tuple[int, str]] = {}
        for ext in store.external_ids(live):
            if ext.type in ("user_id", "anonymous_id", "email"):
                seen = newest.get(ext.type)
                if seen is None or ext.created_ms >= seen[0]:
                    newest[ext.type] = (ext.created_ms, ext.value)
        found = {t: v for t, (_, v) in newest.items()}
        return found if ("user_id" in found or "anonymous_id" in found) else {}

    def interrupt(self) -> None:
        if self._store is not None:
            self._store.interrupt()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class Activator:
    """Every activated space's outbox, sent through ``submit``."""

    def __init__(self, spaces: Iterable[SpaceConfig], data_dir: Path, submit: Submit,
                 state: StateConfig | None = None) -> None:  # fmt: skip
        self.spaces = [SpaceActivator(s, data_dir, state) for s in activated(spaces)]
        self._data_dir, self._state = data_dir, state
        self._submit = submit
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="headwater-engage")
        self._lock = asyncio.Lock()  # a resume and a step never interleave
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.spaces)

    def start(self) -> None:
        if self.spaces:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="engage")

    async def step(self) -> int:
        """Send what is pending in every space; the messages sent."""
        sent = 0
        for space in self.spaces:
            async with self._lock:
                if space in self.spaces:  # not closed by a change meanwhile
                    sent += await self._step(space)
        return sent

    async def _step(self, space: SpaceActivator) -> int:
        sent = 0
        while True:
            found = await self._thread(space.pending)
            if found is None:
                return sent
            last, messages = found
            if messages:
                await self._submit(space.source, messages)
                space.counts.sent += len(messages)
                sent += len(messages)
            await self._thread(space.set_position, last)

    def space(self, name: str) -> SpaceActivator | None:
        return next((s for s in self.spaces if s.space.name == name), None)

    def paused(self, space: str) -> dict[str, dict[str, Any]]:
        """The space's paused syncs (:meth:`SpaceActivator.paused`); none for a space that
        activates nothing."""
        found = self.space(space)
        return found.paused() if found is not None else {}

    async def pause(self, space: SpaceActivator, key: str, destination: str) -> dict[str, Any]:
        """Stop sending the audience's changes to the destination (membership keeps being
        computed)."""
        async with self._lock:
            space = self._current(space)
            return await self._thread(space.pause, key, destination, int(time.time() * 1000))  # type: ignore[no-any-return]

    async def resume(self, space: SpaceActivator, key: str, destination: str) -> dict[str, Any]:
        """Send the net changes since the pause, then the changes as they come."""
        async with self._lock:
            space = self._current(space)
            await self._step(space)  # everything up to now is seen, the pair's skipped
            messages, profiles = await self._thread(space.resumed, key, destination)
            if messages:
                await self._submit(space.source, messages)
                space.counts.sent += len(messages)
            await self._thread(space.unpause, key, destination)
        return {"messages": len(messages), "profiles": profiles}

    def _current(self, space: SpaceActivator) -> SpaceActivator:
        """The space's activator as it is now (a change of the space replaces it)."""
        found = self.space(space.space.name)
        if found is None:
            raise LookupError(f"space {space.space.name} activates nothing any more")
        return found

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store or the log failed: the position did not move
                for space in self.spaces:
                    space.counts.errors += 1
                logger.exception("engage: activation failed; retrying")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECS):
                    await self._wake.wait()
            self._wake.clear()

    async def reconfigure(self, spaces: Iterable[SpaceConfig]) -> None:
        """Activate these spaces from now on: a removed or changed space's outbox closes
        between two steps (what it has sent is recorded), a new or changed one opens at its
        recorded position."""
        wanted = {s.name: s for s in activated(spaces)}
        async with self._lock:
            kept = []
            for space in self.spaces:
                if wanted.get(space.space.name) == space.space:
                    kept.append(space)
                else:
                    space.interrupt()
                    await self._thread(space.close)
            names = {s.space.name for s in kept}
            kept += [SpaceActivator(s, self._data_dir, self._state)
                     for n, s in wanted.items() if n not in names]  # fmt: skip
            self.spaces = kept
        if self.spaces and self._task is None:
            self.start()
        self._wake.set()

    async def close(self) -> None:
        for space in self.spaces:
            space.interrupt()  # a step waiting for PostgreSQL gives up now
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for space in self.spaces:
            await self._thread(space.close)
        self._executor.shutdown(wait=True)

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """On the activator's one thread: each space's store is used from it only."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
