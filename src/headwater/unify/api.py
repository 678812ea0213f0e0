"""Segment's Profile API, served by the gateway beside the Tracking API.

``GET /v1/spaces/<space>/collections/users/profiles/<id>/<what>`` where ``<id>`` is
``<type>:<value>`` (``user_id:u-42``, ``email:jane%40x.com``) or a ``segment_id``
(``use_...``, also one merged away), and ``<what>`` one of ``traits``, ``external_ids``,
``events``, ``links``, ``metadata`` — Segment's query parameters and response shapes
(docs/unify.md#profile-api) — and ``merges`` (Headwater's own: the merge history with the
messageIds that linked each pair). ``DELETE .../profiles/<id>`` removes a profile.

Auth: HTTP Basic with a token as user name and an empty password (Segment's way), or
``Authorization: Bearer <token>``; which tokens may read is decided by the one function the
gateway passes in (the admin token today; a ``profiles_read`` role later). Errors are
Segment's ``{"error": {"code", "message"}}``; every answer has a ``Request-Id`` header.

Reads go to the space's store as a WAL reader on a thread of their own, never on the
gateway's event loop; the consumer in the worker process writes it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from headwater.engage.audiences import AudienceEngine
from headwater.engage.backfill import progress_of
from headwater.engage.config import AudienceConfig
from headwater.gateway.normalize import iso_ms
from headwater.log.base import StoredRecord
from headwater.unify.config import SpaceConfig
from headwater.unify.consumer import wall_ms
from headwater.unify.identifiers import Extractor
from headwater.unify.store import AUDIENCE_SOURCE, SqliteProfileStore, open_profile_store

if TYPE_CHECKING:
    from headwater.config.workspace import StateConfig

PREFIX = "/v1/spaces/"
TRAITS_LIMIT, TRAITS_MAX = 10, 200
IDS_LIMIT, IDS_MAX = 25, 100
EVENTS_LIMIT, EVENTS_MAX = 10, 100
LINKS_LIMIT = 20
MERGES_MAX = 1000

Authorize = Callable[[str, str], bool]
"""Whether a token (the Basic user name) holds a permission (``profiles:read``,
``profiles:write`` for deletion)."""
"""Whether a presented token may read profiles."""
FetchEvent = Callable[[str], Awaitable[StoredRecord | None]]
"""The log's record of a messageId (events are references into the log)."""


class ProfileError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


NOT_FOUND = ProfileError(404, "not_found", "Profile was not found.")


class SpaceReader:
    """One space's store, read on the readers' thread."""

    def __init__(self, space: SpaceConfig, data_dir: Path,
                 state: StateConfig | None = None) -> None:  # fmt: skip
        self.space = space
        self.extractor = Extractor(space.identity)
        self.audiences = AudienceEngine(space.audiences)
        self._data_dir = data_dir
        self._state = state
        self._store: SqliteProfileStore | None = None
        self._closed = False  # replaced by a change of the space: never opens again

    def store(self) -> SqliteProfileStore:
        if self._closed:
            raise ProfileError(503, "changing", f"space {self.space.name} is being changed; "
                               "ask again")  # fmt: skip
        if self._store is None:
            self._store = open_profile_store(self._data_dir, self.space.name, self._state)
        return self._store

    def interrupt(self) -> None:
        if self._store is not None:
            self._store.interrupt()

    def close(self) -> None:
        self._closed = True
        if self._store is not None:
            self._store.close()
            self._store = None

    def segment_id(self, name: str) -> str:
        """The live profile a path's id names, or NOT_FOUND (400 for an unknown type)."""
        store = self.store()
        if name.startswith("use_") and ":" not in name:
            found = store.resolve(name)
        elif name.startswith("segment_id:"):
            found = store.resolve(name.partition(":")[2])
        else:
            try:
                ident = self.extractor.parse(name)
            except ValueError as exc:
                raise ProfileError(400, "validation_error", str(exc)) from None
            found = store.find(ident)
        if found is None:
            raise NOT_FOUND
        return found


class Profiles:
    """The documents of the Profile API, the console's profile page and the CLI."""

    def __init__(self, spaces: list[SpaceConfig], data_dir: Path, fetch: FetchEvent,
                 state: StateConfig | None = None) -> None:  # fmt: skip
        self.readers = {s.name: SpaceReader(s, data_dir, state) for s in spaces}
        self._data_dir, self._state = data_dir, state
        self._fetch = fetch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="headwater-profiles")
        self._totals: dict[str, list[tuple[str, str, int]]] = {}

    def reader(self, space: str) -> SpaceReader:
        reader = self.readers.get(space)
        if reader is None:
            known = ", ".join(sorted(self.readers)) or "none (declare spaces: in the workspace)"
            raise ProfileError(404, "not_found", f"no space is named {space!r}; the spaces are "
                               f"{known}")  # fmt: skip
        return reader

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def reconfigure(self, spaces: list[SpaceConfig]) -> None:
        """Read these spaces from now on (a changed space's reader is made again)."""
        wanted = {s.name: s for s in spaces}
        old = self.readers
        readers = {n: r for n, r in old.items() if wanted.get(n) == r.space}
        for name, space in wanted.items():
            if name not in readers:
                readers[name] = SpaceReader(space, self._data_dir, self._state)
        self.readers = readers  # new requests get the new readers from here on
        for name, reader in old.items():
            if readers.get(name) is not reader:  # after the reads queued before it
                await self.run(reader.close)

    async def close(self) -> None:
        for reader in self.readers.values():
            reader.interrupt()  # a read waiting for PostgreSQL gives up now
        for reader in self.readers.values():
            await self.run(reader.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ documents

    async def traits(self, space: str, name: str, q: dict[str, str]) -> dict[str, Any]:
        reader = self.reader(space)
        segment_id, traits = await self.run(_traits, reader, name)
        include = _names(q.get("include"))
        wanted = q.get("class")
        if wanted not in (None, "", "computed_trait", "audience", "trait"):
            raise ProfileError(400, "validation_error", f"class {wanted!r} is not one of "
                               "computed_trait, audience")  # fmt: skip
        rows = [t for t in traits if (not include or t.name in include)
                and (wanted in (None, "") or _class(t) == wanted)]  # fmt: skip
        limit = _limit(q, TRAITS_LIMIT, TRAITS_MAX)
        start = q.get("next") or ""
        rows = [t for t in rows if t.name >= start]
        page, more = rows[:limit], len(rows) > limit
        verbose = _flag(q, "verbose")
        body = {
            t.name: {"value": t.value, "source_id": t.source, "updated_at": iso_ms(t.updated_ms)}
            if verbose else t.value
            for t in page
        }  # fmt: skip
        nxt = rows[limit].name if more else ""
        return {"traits": body, "cursor": self._cursor(space, segment_id, "traits", more, nxt,
                                                       limit, q)}  # fmt: skip

    async def external_ids(self, space: str, name: str, q: dict[str, str]) -> dict[str, Any]:
        reader = self.reader(space)
        segment_id, ids = await self.run(_external_ids, reader, name)
        include = _names(q.get("include"))
        rows = [e for e in ids if not include or e.type in include]
        limit = _limit(q, IDS_LIMIT, IDS_MAX)
        start = _int(q.get("next"), "next")
        page, more = rows[start : start + limit], len(rows) > start + limit
        data = [{"source_id": e.source, "collection": "users", "id": e.value, "type": e.type,
                 "created_at": iso_ms(e.created_ms), "encoding": "none",
                 "first_message_id": e.first_message_id} for e in page]  # fmt: skip
        return {"data": data, "cursor": self._cursor(space, segment_id, "external_ids", more,
                                                     str(start + limit) if more else "", limit,
                                                     q)}  # fmt: skip

    async def events(self, space: str, name: str, q: dict[str, str]) -> dict[str, Any]:
        reader = self.reader(space)
        limit = _limit(q, EVENTS_LIMIT, EVENTS_MAX)
        asc = (q.get("sort") or "desc") == "asc"
        if q.get("sort") not in (None, "", "asc", "desc"):
            raise ProfileError(400, "validation_error", "sort must be asc or desc")
        cursor = _int(q.get("next"), "next") if q.get("next") else None
        include, exclude = _names(q.get("include")), _names(q.get("exclude"))
        start, end = _time(q.get("start"), "start"), _time(q.get("end"), "end")
        segment_id, refs = await self.run(_events, reader, name, asc, cursor)
        picked = [
            r
            for r in refs
            if (not include or r.name in include)
            and not (exclude and r.name in exclude)
            and (start is None or r.ts_ms >= start)
            and (end is None or r.ts_ms <= end)
        ]
        page = picked[:limit]
        more = len(picked) > limit or (len(refs) == _SCAN and bool(page))
        data = [await self._event(reader, segment_id, r) for r in page]
        nxt = str(page[-1].offset) if more and page else ""
        return {"data": data, "cursor": self._cursor(space, segment_id, "events", more, nxt,
                                                     limit, q)}  # fmt: skip

    async def _event(self, reader: SpaceReader, segment_id: str, ref: Any) -> dict[str, Any]:
        record = await self._fetch(ref.message_id)
        event = orjson.loads(record.payload) if record is not None else {}
        ids = reader.extractor.extract(event).identifiers if event else []
        return {
            "external_ids": [{"collection": "users", "type": t, "id": v, "encoding": "none"}
                             for t, v in ids],
            "context": event.get("context", {}),
            "type": ref.type,
            "message_id": ref.message_id,
            "source_id": ref.source,
            "timestamp": iso_ms(ref.ts_ms),
            "properties": event.get("properties", {}),
            "event": ref.name,
            "related": {"users": segment_id},
            **({} if record is not None else {"expired": True}),
        }  # fmt: skip

    async def metadata(self, space: str, name: str) -> dict[str, Any]:
        p = await self.run(_profile, self.reader(space), name)
        return {"metadata": {
            "created_at": iso_ms(p.created_ms), "updated_at": iso_ms(p.updated_ms),
            "expires_at": None, "first_message_id": p.first_message_id,
            "first_source_id": p.first_source, "last_message_id": p.last_message_id,
            "last_source_id": p.last_source}}  # fmt: skip

    async def links(self, space: str, name: str, q: dict[str, str]) -> dict[str, Any]:
        """The accounts the profile belongs to (the groupIds of its group calls), each as
        Segment answers a link: the collection and the linked profile's external ids."""
        limit = _limit(q, LINKS_LIMIT, LINKS_LIMIT)
        start = _int(q.get("next"), "next")
        segment_id, links = await self.run(_links, self.reader(space), name, limit + 1, start)
        page, more = links[:limit], len(links) > limit
        data = [{"to_collection": k.collection, "external_ids": [
                    {"id": k.value, "type": k.type, "source_id": k.source,
                     "collection": k.collection, "created_at": iso_ms(k.created_ms),
                     "encoding": "none", "first_message_id": k.first_message_id}]}
                for k in page]  # fmt: skip
        return {"data": data, "cursor": self._cursor(space, segment_id, "links", more,
                                                     str(start + limit) if more else "", limit,
                                                     q)}  # fmt: skip

    async def merges(self, space: str, name: str) -> dict[str, Any]:
        segment_id, entries = await self.run(_history, self.reader(space), name)
        return {
            "segment_id": segment_id,
            "data": [{**e.as_dict(), "at": iso_ms(e.at_ms)} for e in entries[-MERGES_MAX:]],
        }

    async def profile(self, space: str, name: str) -> dict[str, Any]:
        """Everything about one profile at once (the console and ``headwater profiles get``)."""
        reader = self.reader(space)
        segment_id = await self.run(reader.segment_id, name)
        meta = await self.metadata(space, segment_id)
        traits = await self.traits(space, segment_id, {"limit": "200", "verbose": "true"})
        return {
            "segment_id": segment_id,
            "space": space,
            **meta,
            "traits": traits["traits"],
            "computed_traits": sorted(c.key for c in reader.space.computed_traits),
            "external_ids": (await self.external_ids(space, name, {"limit": "100"}))["data"],
            "events": (await self.events(space, name, {"limit": "20"}))["data"],
            "merges": (await self.merges(space, name))["data"],
        }

    # ---------------------------------------------------------------- audiences

    async def audiences(self, space: str) -> dict[str, Any]:
        """Each audience of the space: its size and its entries and exits of the last hour."""
        reader = self.reader(space)

        def read() -> list[dict[str, Any]]:
            store = reader.store()
            sizes = store.audience_sizes()
            hour_ago = wall_ms() - 3_600_000
            found = []
            for audience in reader.space.audiences:
                entered, exited = store.audience_flow(audience.key, hour_ago)
                backfill = progress_of(store, reader.audiences, audience)
                found.append({**_audience_doc(audience), "size": sizes.get(audience.key, 0),
                              "last_hour": {"entered": entered, "exited": exited},
                              "backfill": backfill})  # fmt: skip
            return found

        return {"space": space, "audiences": await self.run(read)}

    async def audience(self, space: str, key: str, q: dict[str, str]) -> dict[str, Any]:
        """One audience: its definition, size, flow over the last hour and day, a page of
        members (``limit``, ``next``) and the latest entries and exits."""
        reader = self.reader(space)
        audience = audience_of(reader, key)
        limit = _limit(q, 100, 1000)
        after = _member_cursor(q.get("next") or "")

        def read() -> dict[str, Any]:
            store = reader.store()
            now = wall_ms()
            page = store.audience_members(key, limit + 1, after)
            more = len(page) > limit
            page = page[:limit]
            hour = store.audience_flow(key, now - 3_600_000)
            day = store.audience_flow(key, now - 86_400_000)
            size = store.audience_sizes().get(key, 0)
            hourly = _size_over_time(size, now, store.audience_hourly(key, now - 86_400_000))
            return {
                **_audience_doc(audience), "space": space,
                "size": size,
                "backfill": progress_of(store, reader.audiences, audience),
                "hourly": hourly,
                "last_hour": {"entered": hour[0], "exited": hour[1]},
                "last_day": {"entered": day[0], "exited": day[1]},
                "members": [{"segment_id": seg, "since": iso_ms(at)} for seg, at in page],
                "cursor": {"has_more": more,
                           "next": f"{page[-1][1]}.{page[-1][0]}" if more else ""},
                "changes": [{"at": iso_ms(at), "segment_id": seg, "entered": entered,
                             "message_id": mid}
                            for at, seg, entered, mid in store.audience_changes(key, 20)],
            }  # fmt: skip

        return await self.run(read)  # type: ignore[no-any-return]

    async def why(self, space: str, key: str, name: str) -> dict[str, Any]:
        """Whether the profile ``name`` is in the audience, and which condition decides it."""
        reader = self.reader(space)
        audience = audience_of(reader, key)

        def read() -> dict[str, Any]:
            segment_id = reader.segment_id(name)
            store = reader.store()
            verdict = reader.audiences.explain(store, audience, segment_id, wall_ms())
            since = store.memberships(segment_id).get(key)
            return {"space": space, "audience": key, "segment_id": segment_id,
                    "member": since is not None, "since": iso_ms(since) if since else None,
                    "holds_now": verdict.holds, "why": verdict.as_dict()}  # fmt: skip

        return await self.run(read)  # type: ignore[no-any-return]

    async def delete(self, space: str, name: str) -> dict[str, Any]:
        segment_id, gone = await self.run(_delete, self.reader(space), name)
        return {"deleted": segment_id, "identifiers": gone}

    async def problems(self, space: str, since_ms: int, limit: int = 200) -> dict[str, Any]:
        reader = self.reader(space)

        def read() -> dict[str, Any]:
            store = reader.store()
            return {"problems": store.problems(since_ms, limit), "counters": store.counters()}

        return await self.run(read)  # type: ignore[no-any-return]

    async def refresh(self) -> None:
        """The snapshot /metrics renders (read before a scrape, never during it)."""

        def read() -> dict[str, list[tuple[str, str, int]]]:
            return {name: r.store().counter_totals() for name, r in self.readers.items()}

        self._totals = await self.run(read)

    def collect(self) -> Iterator[Metric]:
        if not self.readers:  # a workspace without spaces serves no identity metric
            return
        problems = CounterMetricFamily(
            "headwater_identity_problems",
            "Identifier values the Identity Graph refused to merge, stopped at a limit, blocked "
            "or skipped, and events it could not apply, per space, kind and identifier type.",
            labels=["space", "kind", "id_type"],
        )
        for space, totals in sorted(self._totals.items()):
            for kind, id_type, n in totals:
                problems.add_metric([space, kind, id_type], n)
        yield problems

    async def of_message(self, space: str, message_id: str,
                         offset: int) -> dict[str, Any] | None:  # fmt: skip
        """What the event (its messageId, at its log offset) did in the space."""
        reader = self.reader(space)

        def read() -> dict[str, Any] | None:
            store = reader.store()
            joined = store.profile_of_event(offset)
            history = store.history_of_message(message_id)
            if joined is None and not history:
                return None
            return {"space": space, "joined": joined,
                    "live": store.resolve(joined) if joined else None,
                    "history": [h.as_dict() for h in history]}  # fmt: skip

        return await self.run(read)  # type: ignore[no-any-return]

    def _cursor(self, space: str, segment_id: str, what: str, more: bool, nxt: str, limit: int,
                q: dict[str, str]) -> dict[str, Any]:  # fmt: skip
        url = f"/v1/spaces/{space}/collections/users/profiles/{segment_id}/{what}"
        params = {k: v for k, v in q.items() if k != "next"}
        if nxt:
            params["next"] = nxt
        if params:
            url += "?" + urlencode(params, quote_via=quote)
        return {"url": url, "has_more": more, "next": nxt, "limit": limit}


_SCAN = 1000  # event references read per page before filtering


def _class(trait: Any) -> str:
    """A trait's ``class`` (Segment's): an audience's membership, a computed trait, or a
    trait the events set."""
    if trait.computed:
        return "audience" if trait.source == AUDIENCE_SOURCE else "computed_trait"
    return "trait"


def audience_of(reader: SpaceReader, key: str) -> AudienceConfig:
    found = next((a for a in reader.space.audiences if a.key == key), None)
    if found is None:
        known = ", ".join(a.key for a in reader.space.audiences) or "none"
        raise ProfileError(404, "not_found", f"space {reader.space.name!r} has no audience "
                           f"{key!r}; its audiences: {known}")  # fmt: skip
    return found


def _size_over_time(size: int, now_ms: int, hours: list[tuple[int, int, int]]
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """The last 24 hours, each with its entries, exits and the size at its end (worked back
    from the size now)."""
    changes = {h: (e, x) for h, e, x in hours}
    current = now_ms // 3_600_000
    out: list[dict[str, Any]] = []
    for hour in range(current, current - 24, -1):
        entered, exited = changes.get(hour, (0, 0))
        out.append({"hour": iso_ms(hour * 3_600_000), "entered": entered, "exited": exited,
                    "size": size})  # fmt: skip
        size -= entered - exited
    return out[::-1]


def _audience_doc(audience: AudienceConfig) -> dict[str, Any]:
    return {"key": audience.key, "name": audience.title, "enabled": audience.enabled,
            "where": audience.where.model_dump(by_alias=True, exclude_none=True),
            "destinations": [d.model_dump() for d in audience.destinations]}  # fmt: skip


def _traits(reader: SpaceReader, name: str) -> tuple[str, list[Any]]:
    segment_id = reader.segment_id(name)
    return segment_id, reader.store().traits(segment_id)


def _external_ids(reader: SpaceReader, name: str) -> tuple[str, list[Any]]:
    segment_id = reader.segment_id(name)
    return segment_id, reader.store().external_ids(segment_id)


def _links(reader: SpaceReader, name: str, limit: int, skip: int) -> tuple[str, list[Any]]:
    segment_id = reader.segment_id(name)
    return segment_id, reader.store().links(segment_id, limit, skip)


def _events(reader: SpaceReader, name: str, asc: bool, cursor: int | None) -> tuple[str, list[Any]]:
    segment_id = reader.segment_id(name)
    store = reader.store()
    if asc:
        return segment_id, store.events(segment_id, _SCAN, after=cursor or 0)
    return segment_id, store.events(segment_id, _SCAN, before=cursor)


def _profile(reader: SpaceReader, name: str) -> Any:
    profile = reader.store().profile(reader.segment_id(name))
    if profile is None:
        raise NOT_FOUND
    return profile


def _history(reader: SpaceReader, name: str) -> tuple[str, list[Any]]:
    segment_id = reader.segment_id(name)
    return segment_id, reader.store().history(segment_id)


def _delete(reader: SpaceReader, name: str) -> tuple[str, int]:
    segment_id = reader.segment_id(name)
    store = reader.store()
    store.begin()
    try:
        gone = store.delete(segment_id)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return segment_id, gone


def _names(text: str | None) -> set[str]:
    return {n.strip() for n in (text or "").split(",") if n.strip()}


def _flag(q: dict[str, str], key: str) -> bool:
    return q.get(key, "").lower() in ("true", "1", "yes")


def _int(text: str | None, what: str) -> int:
    if not text:
        return 0
    try:
        return max(0, int(text))
    except ValueError:
        message = f"{what} {text!r} is not a cursor this API gave out; pass 'next' as it came"
        raise ProfileError(400, "validation_error", message) from None


def _member_cursor(text: str) -> tuple[int, str]:
    """An audience's ``next``: ``<since ms>.<segment_id>`` of the last member shown."""
    if not text:
        return (-1, "")
    since, _, segment_id = text.partition(".")
    if not since.isdigit() or not segment_id:
        raise ProfileError(400, "validation_error", f"next {text!r} is not a cursor of "
                           "this audience's members; pass a page's cursor.next")  # fmt: skip
    return (int(since), segment_id)


def _limit(q: dict[str, str], default: int, most: int) -> int:
    text = q.get("limit")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise ProfileError(400, "validation_error", f"limit must be between 1 and {most}, "
                           f"not {text!r}")  # fmt: skip
    return value


def _time(text: str | None, what: str) -> int | None:
    if not text:
        return None
    from headwater.destinations.values import epoch_ms

    value = epoch_ms(text)
    if value is None:
        raise ProfileError(400, "validation_error", f"{what} {text!r} is not an ISO-8601 time")
    return value


# ---------------------------------------------------------------------- HTTP


def _token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0]
    return None


def _answer(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json",
                    headers={"Request-Id": secrets.token_hex(8)})  # fmt: skip


def _error(exc: ProfileError) -> Response:
    return _answer(exc.status, {"error": {"code": exc.code, "message": exc.message}})


def routes(profiles: Profiles, authorize: Authorize) -> list[Route]:
    """The Profile API's routes (the gateway sends ``/v1/spaces/...`` here)."""

    def endpoint(what: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            token = _token(request.headers.get("authorization"))
            need = "profiles:write" if request.method == "DELETE" else "profiles:read"
            if not token or not authorize(token, need):
                return _error(ProfileError(401, "authentication_error", "send a token as the "
                              "user name of HTTP Basic auth (curl -u TOKEN:); the admin token "
                              "may read profiles"))  # fmt: skip
            space, name = request.path_params["space"], request.path_params["id"]
            q = dict(request.query_params)
            try:
                if request.method == "DELETE":
                    return _answer(200, await profiles.delete(space, name))
                if what in ("metadata", "merges"):
                    return _answer(200, await getattr(profiles, what)(space, name))
                if what == "profile":
                    return _answer(200, await profiles.profile(space, name))
                return _answer(200, await getattr(profiles, what)(space, name, q))
            except ProfileError as exc:
                return _error(exc)

        return handle

    base = "/v1/spaces/{space}/collections/users/profiles/{id}"
    found = [
        Route(f"{base}/{what}", endpoint(what), methods=["GET"])
        for what in ("traits", "external_ids", "events", "links", "metadata", "merges")
    ]
    found.append(Route(base, endpoint("profile"), methods=["GET", "DELETE"]))
    return found
