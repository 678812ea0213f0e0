"""The Tracking API: Segment's ``/v1`` endpoints as a bare ASGI app.

This is the hot path, so it is plain ASGI rather than a framework router: one dict lookup
picks the handler, bodies are read with their limits enforced while reading, and the answer
is sent only after the log has committed the events (``Ack means durable``).

Errors are JSON ``{"code", "message"}`` (the keys analytics-python reads). Statuses follow
what SDKs do with them: 400 for a request they must not retry (invalid JSON, oversize),
401 for an unknown write key, 503 + ``Retry-After`` when the log applies back-pressure (SDKs
keep the events and retry).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from headwater.config.workspace import GatewayConfig, SourceConfig
from headwater.errors import IngestError, LogError, LogUnavailable
from headwater.functions.sources import MAX_BODY_BYTES as FUNCTION_BODY_BYTES
from headwater.functions.sources import PREFIX as FUNCTIONS_PREFIX
from headwater.functions.sources import RETRY_AFTER_SECS as FUNCTION_RETRY_AFTER_SECS
from headwater.functions.sources import SourceFunctions
from headwater.gateway.bodies import RequestBody, gunzip, refuse, respond_error
from headwater.gateway.hooks import Blocked, IngestProcessor, Processed, SourceHook
from headwater.gateway.normalize import (
    Envelope,
    ItemError,
    iso_ms,
    normalize,
    normalize_event,
    parse_ms,
    to_record,
)
from headwater.gateway.stats import IngestStats, Rejection, redact_key
from headwater.log.base import AppendResult, EventLog, Record

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_REQUEST_BYTES = 32 * 1024  # one event per request
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500

logger = logging.getLogger("headwater.gateway")

SINGLE_PATHS = {
    "/v1/track": "track", "/v1/t": "track",
    "/v1/identify": "identify", "/v1/i": "identify",
    "/v1/page": "page", "/v1/p": "page",
    "/v1/screen": "screen", "/v1/s": "screen",
    "/v1/group": "group", "/v1/g": "group",
    "/v1/alias": "alias", "/v1/a": "alias",
}  # fmt: skip
BATCH_PATHS = frozenset({"/v1/batch", "/v1/b", "/v1/import"})
SETTINGS_PREFIX = "/v1/projects/"

_OK = b'{"success":true}'
_OK_LENGTH = str(len(_OK)).encode()
_JSON = (b"content-type", b"application/json")
_CORS_METHODS = (b"access-control-allow-methods", b"GET, POST, OPTIONS")
_CORS_MAX_AGE = (b"access-control-max-age", b"86400")
_VARY = (b"vary", b"Origin")
_DEFAULT_ALLOW_HEADERS = b"Content-Type, Authorization, X-Retry-Count"


OnAccepted = Callable[[str, Sequence[Record], Sequence[AppendResult], int], None]
"""Told of the records the log took for a source, and how many were duplicates (the
debugger and the flow counts)."""


class TrackingAPI:
    """ASGI app for ``/v1/*``. ``sources`` maps write keys to sources."""

    def __init__(
        self,
        sources: list[SourceConfig],
        log: EventLog,
        stats: IngestStats,
        config: GatewayConfig,
        on_accepted: OnAccepted | None = None,
        processor: IngestProcessor | None = None,
        functions: SourceFunctions | None = None,
    ) -> None:
        self._on_accepted = on_accepted
        self._functions = functions
        self._by_name = {s.name: s for s in sources}
        self._processor = processor
        self._log = log
        self._stats = stats
        self._config = config
        self._trusted = config.trusted_proxies
        self.reconfigure(sources)

    def reconfigure(
        self, sources: list[SourceConfig], retired: Mapping[str, tuple[str, int]] | None = None
    ) -> None:
        """Take these sources from the next request on. Everything is built first and then
        assigned without an ``await`` in between, so a request sees the old sources or the
        new ones, never half of each. ``retired`` maps write keys replaced by a rotation to
        (their source, valid until in ms since the epoch)."""
        by_key: dict[str, SourceConfig] = {s.write_key: s for s in sources if s.write_key}
        by_name = {s.name: s for s in sources}
        grace = {
            key: (by_name[name], until)
            for key, (name, until) in (retired or {}).items()
            if name in by_name and key not in by_key
        }
        origins = {o for s in sources for o in s.cors_origins}
        source_origins = {
            s.name: (None if "*" in s.cors_origins else frozenset(s.cors_origins)) for s in sources
        }
        self._by_key, self._retired = by_key, grace
        self._any_origin, self._origins = "*" in origins, frozenset(origins)
        self._source_origins = source_origins

    def _source(self, key: str) -> SourceConfig | None:
        found = self._by_key.get(key)
        if found is None and self._retired:  # a key replaced by a rotation, in its grace
            old = self._retired.get(key)
            if old is not None and old[1] > time.time() * 1000:
                return old[0]
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        headers = _headers(scope)
        origin = headers.get("origin")
        body = RequestBody(scope, receive, headers)
        try:
            method = scope["method"]
            if method == "OPTIONS":
                await self._preflight(send, origin, headers)
                return
            single = SINGLE_PATHS.get(path)
            if single is not None or path in BATCH_PATHS:
                if method != "POST":
                    raise IngestError("method_not_allowed", f"use POST for {path}", 405)
                await self._ingest(scope, body, send, headers, path, single)
            elif path.startswith(FUNCTIONS_PREFIX) and self._functions:
                await self._function(scope, body, send, headers, path)
            elif path.startswith(SETTINGS_PREFIX) and path.endswith("/settings"):
                if method != "GET":
                    raise IngestError("method_not_allowed", f"use GET for {path}", 405)
                await self._settings(send, headers, path, origin)
            else:
                raise IngestError(
                    "not_found",
                    f"{path} is not a Tracking API endpoint; use /v1/track, /v1/identify, "
                    "/v1/page, /v1/screen, /v1/group, /v1/alias or /v1/batch",
                    404,
                )
        except IngestError as exc:
            await refuse(send, body, exc, self._cors(origin))

    # ------------------------------------------------------------------ ingestion

    async def _ingest(
        self,
        scope: Scope,
        request_body: RequestBody,
        send: Send,
        headers: dict[str, str],
        path: str,
        single: str | None,
    ) -> None:
        limit = MAX_REQUEST_BYTES if single else MAX_BATCH_BYTES
        ip = self._client_ip(scope, headers)
        origin = headers.get("origin")
        context = _RequestContext(self._stats, path, ip, headers.get("user-agent"))
        header_key: str | None = None
        try:
            header_key = _basic_key(headers)
            body = await _read_body(request_body, headers, limit)
            data = _parse_json(body)
            key = header_key or _body_key(data)
        except IngestError as exc:  # filed under the source when the header named one
            context.refuse(exc, scope=self._scope_of(header_key), body=None)
            raise
        context.key = key
        one_id = _message_id(data) if single else None  # a single call's refusal names it
        source = self._source(key)
        if source is None:
            unknown = IngestError(
                "invalid_write_key",
                f"write key {redact_key(key)!r} is not known to this Headwater; use the key "
                "of one of the workspace's sources",
                401,
            )
            context.refuse(unknown, scope=self._scope_of(key), body=body, message_id=one_id)
            raise unknown
        await self._take(send, source, data, single, context, body, one_id, origin, ip)

    async def _take(
        self,
        send: Send,
        source: SourceConfig,
        data: dict[str, Any],
        single: str | None,
        context: _RequestContext,
        body: bytes,
        one_id: str | None,
        origin: str | None,
        ip: str | None,
        function: str | None = None,
    ) -> None:
        """A request's events for ``source``: checked, processed, in the log, answered. For
        a source ``function``'s events (a batch), the answer always counts them, and the
        source's CORS origins do not apply (webhooks come from servers)."""
        try:
            if not source.enabled:
                raise IngestError(
                    "source_disabled", f"source {source.name!r} is disabled in the workspace", 401
                )
            if function is None and origin is not None and not self._origin_allowed(source, origin):
                raise IngestError(
                    "origin_not_allowed",
                    f"origin {origin} may not send to source {source.name!r}; add it to the "
                    "source's cors_origins",
                    403,
                )
            env, items = _envelope(data, source.name, ip, single)
        except IngestError as exc:
            context.refuse(exc, scope=source.name, body=body, message_id=one_id)
            raise
        hook = self._processor.hook(source.name) if self._processor is not None else None
        blocked: list[tuple[int, Blocked]] = []
        decided: list[tuple[str, Processed]] = []
        mixed = False
        if hook is None:
            records, refused = self._normalize(items, single, env, context, source.name)
        else:
            records, refused, mixed = self._process(
                items, single, env, context, source.name, hook, blocked, decided
            )
        if single and refused:
            raise refused[0][1]
        try:
            if (blocked or decided) and self._processor is not None:
                keep = self._keep(self._processor, [b for _, b in blocked], decided)
                results, _ = await asyncio.gather(self._append(records), keep)
            else:
                results = await self._append(records)
        except LogError as exc:  # LogUnavailable says how long to wait; other faults: 5 s
            retry_after = exc.retry_after_secs if isinstance(exc, LogUnavailable) else 5
            error = IngestError("unavailable", str(exc), 503)
            context.refuse(error, scope=source.name, body=None)
            retry = (b"retry-after", str(retry_after).encode())
            await respond_error(send, error, [*self._cors(origin), retry])
            return
        duplicates = sum(1 for r in results if r.duplicate)
        self._accepted(source.name, records, results, duplicates, mixed)
        if not refused and not duplicates and not blocked and function is None:
            await _respond(send, 200, _OK, self._cors(origin))
            return
        answer: dict[str, Any] = {"success": True, "accepted": len(records)}
        if duplicates:
            answer["duplicates"] = duplicates
        if blocked:
            answer["blocked"] = [
                {"index": i, "messageId": b.event.get("messageId"), "code": b.reason,
                 "message": b.detail}
                for i, b in blocked
            ]  # fmt: skip
        if refused:
            answer["rejected"] = [
                {"index": i, "messageId": _message_id(items[i]), "code": e.code,
                 "message": e.message}
                for i, e in refused
            ]  # fmt: skip
        await _respond(send, 200, orjson.dumps(answer), self._cors(origin))

    async def _function(
        self, scope: Scope, request_body: RequestBody, send: Send, headers: dict[str, str],
        path: str,
    ) -> None:  # fmt: skip
        """A source function's webhook: the function's events, taken for its source."""
        assert self._functions is not None
        ip = self._client_ip(scope, headers)
        name = self._functions.named(path)  # a 404 before the body is read
        shown = f"{FUNCTIONS_PREFIX}{name}/…"  # the secret never reaches a sample
        context = _RequestContext(self._stats, shown, ip, headers.get("user-agent"))
        source = self._by_name[self._functions.sources[name]]
        try:
            body = await _read_body(
                request_body, headers, FUNCTION_BODY_BYTES, "a source function takes at most 512 KB"
            )
            query = scope.get("query_string", b"").decode("latin-1")
            url = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}{scope['path']}"
            events = await self._functions.run(name, scope["method"],
                                               url + (f"?{query}" if query else ""), headers,
                                               body)  # fmt: skip
        except IngestError as exc:
            context.refuse(exc, scope=source.name, body=None)
            if exc.status == 503:
                retry = (b"retry-after", str(FUNCTION_RETRY_AFTER_SECS).encode())
                await respond_error(send, exc, [retry])
                return
            raise
        data: dict[str, Any] = {"batch": events}
        await self._take(send, source, data, None, context, body, None, None, ip, name)

    @staticmethod
    async def _keep(
        processor: IngestProcessor, blocked: list[Blocked], decided: list[tuple[str, Processed]]
    ) -> None:
        """The processor's durable part of the request: a fault there is answered 503, like
        the log's, so the sender retries (blocked events are kept once per messageId)."""
        try:
            await processor.keep(blocked, decided)
        except Exception as exc:
            logger.exception("the processor could not keep blocked events")
            raise LogUnavailable(
                f"blocked events could not be kept ({exc}); retry", reason="processor",
                retry_after_secs=5,
            ) from exc  # fmt: skip

    async def _append(self, records: list[Record]) -> list[AppendResult]:
        return await self._log.append(records) if records else []

    def _accepted(
        self,
        source: str,
        records: list[Record],
        results: list[AppendResult],
        duplicates: int,
        mixed: bool = False,
    ) -> None:
        """Count what was stored, per source (``mixed``: forwarded events of other sources
        are among the records)."""
        if not records:
            return
        if mixed:
            groups: dict[str, tuple[list[Record], list[AppendResult]]] = {}
            for record, result in zip(records, results, strict=True):
                group = groups.setdefault(record.source, ([], []))
                group[0].append(record)
                group[1].append(result)
            for name, (recs, res) in groups.items():
                dups = sum(1 for r in res if r.duplicate)
                self._stats.accepted(name, len(res) - dups, dups)
                if self._on_accepted is not None:
                    self._on_accepted(name, recs, res, dups)
            return
        self._stats.accepted(source, len(results) - duplicates, duplicates)
        if self._on_accepted is not None:
            self._on_accepted(source, records, results, duplicates)

    def _process(
        self,
        items: list[Any],
        single: str | None,
        env: Envelope,
        context: _RequestContext,
        source: str,
        hook: SourceHook,
        blocked: list[tuple[int, Blocked]],
        decided: list[tuple[str, Processed]],
    ) -> tuple[list[Record], list[tuple[int, IngestError]], bool]:
        """Like :meth:`_normalize`, with the source's processor deciding each event's fate;
        also says whether events were forwarded to other sources."""
        records: list[Record] = []
        refused: list[tuple[int, IngestError]] = []
        received = env.received_ms
        mixed = False
        for index, item in enumerate(items):
            try:
                event = normalize_event(item, single, env)
                result = hook(event)
                own: list[Record] = []
                if result.event is None:
                    to_record(event, source, received)  # a blocked event obeys the size limit
                else:
                    own.append(to_record(result.event, source, received))
                own += [to_record(extra, other, received) for other, extra in result.extra]
            except (ItemError, TypeError, ValueError, RecursionError) as exc:
                self._refuse_item(context, source, item, index, single, exc, refused)
                continue
            records += own
            mixed = mixed or bool(result.extra)
            if result.event is None:
                reason = result.blocked or "blocked"
                detail = result.detail or reason
                blocked.append((index, Blocked(source, received, event, reason, detail,
                                               result.decisions, result.opaque)))  # fmt: skip
            elif result.decisions:
                decided.append((source, result))
        return records, refused, mixed

    def _normalize(
        self,
        items: list[Any],
        single: str | None,
        env: Envelope,
        context: _RequestContext,
        source: str,
    ) -> tuple[list[Record], list[tuple[int, IngestError]]]:
        records: list[Record] = []
        refused: list[tuple[int, IngestError]] = []
        for index, item in enumerate(items):
            try:
                records.append(normalize(item, single, env))
            except (ItemError, TypeError, ValueError, RecursionError) as exc:
                self._refuse_item(context, source, item, index, single, exc, refused)
        return records, refused

    @staticmethod
    def _refuse_item(
        context: _RequestContext,
        source: str,
        item: Any,
        index: int,
        single: str | None,
        exc: Exception,
        refused: list[tuple[int, IngestError]],
    ) -> None:
        """One event of a request refused alone. Besides the checks' ItemErrors, an event
        the log cannot store (nested more than 255 levels, which JSON encoding refuses) is
        refused here rather than failing the whole request."""
        if isinstance(exc, ItemError):
            error = IngestError(exc.code, exc.message, 400)
        else:
            error = IngestError(
                "invalid_event",
                f"the event cannot be stored ({exc}); objects and lists may nest at most 255 "
                "levels deep",
                400,
            )
        refused.append((index, error))
        try:
            body = orjson.dumps(item) if isinstance(item, dict) else None
        except (TypeError, ValueError):
            body = None
        context.refuse(
            error,
            scope=source,
            body=body,
            message_id=_message_id(item),
            index=None if single else index,
        )

    def _scope_of(self, key: str | None) -> str:
        """Where a refusal is filed: the source, a redacted unknown key, or ``unknown``."""
        if key is None:
            return "unknown"
        source = self._source(key)
        return source.name if source is not None else f"key:{redact_key(key)}"

    def _client_ip(self, scope: Scope, headers: dict[str, str]) -> str | None:
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if not self._trusted or peer is None:
            return peer
        forwarded = headers.get("x-forwarded-for")
        if not forwarded or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):  # the right-most address not of a trusted proxy
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    # ------------------------------------------------------------------ CORS and settings

    def _origin_allowed(self, source: SourceConfig, origin: str) -> bool:
        allowed = self._source_origins.get(source.name)
        return allowed is None or origin in allowed

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), _VARY]

    async def _preflight(self, send: Send, origin: str | None, headers: dict[str, str]) -> None:
        if origin is None or not (self._any_origin or origin in self._origins):
            raise IngestError(
                "origin_not_allowed",
                f"origin {origin} is not in any source's cors_origins",
                403,
            )
        requested = headers.get("access-control-request-headers")
        allow = requested.encode("latin-1") if requested else _DEFAULT_ALLOW_HEADERS
        extra = [_CORS_METHODS, (b"access-control-allow-headers", allow), _CORS_MAX_AGE]
        await _respond(send, 204, b"", self._cors(origin) + extra, content_type=False)

    async def _settings(
        self, send: Send, headers: dict[str, str], path: str, origin: str | None
    ) -> None:
        key = path[len(SETTINGS_PREFIX) : -len("/settings")]
        source = self._source(key)
        if source is None:
            raise IngestError("not_found", "no source has this write key", 404)
        if self._config.public_url:
            public = self._config.public_url.rstrip("/")
        else:
            public = f"http://{headers.get('host', '127.0.0.1')}"
        protocol, _, host = public.partition("://")
        body = {
            "integrations": {
                "Segment.io": {
                    "apiKey": key,
                    "apiHost": f"{host}/v1",
                    "protocol": protocol,
                    "unbundledIntegrations": [],
                    "addBundledMetadata": True,
                    "maybeBundledConfigIds": {},
                }
            },
            "plan": {
                "track": {"__default": {"enabled": True, "integrations": {}}},
                "identify": {"__default": {"enabled": True}},
                "group": {"__default": {"enabled": True}},
            },
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }
        await _respond(send, 200, orjson.dumps(body), self._cors(origin))


class _RequestContext:
    """What every refusal of one request shares, so each is recorded the same way."""

    __slots__ = ("ip", "key", "path", "stats", "user_agent")

    def __init__(self, stats: IngestStats, path: str, ip: str | None, ua: str | None) -> None:
        self.stats = stats
        self.path = path
        self.ip = ip
        self.user_agent = ua
        self.key: str | None = None  # once known, redacted out of every sample

    def excerpt(self, body: bytes | None) -> str | None:
        if not body:
            return None
        text = body[:1024].decode("utf-8", "replace")
        return text.replace(self.key, redact_key(self.key)) if self.key else text

    def refuse(
        self,
        error: IngestError,
        *,
        scope: str,
        body: bytes | None,
        message_id: str | None = None,
        index: int | None = None,
    ) -> None:
        self.stats.refuse(
            Rejection(
                at=iso_ms(time.time_ns() // 1_000_000), scope=scope, code=error.code,
                message=error.message, status=error.status, path=self.path, ip=self.ip,
                user_agent=self.user_agent, message_id=message_id, index=index,
                excerpt=self.excerpt(body),
            )
        )  # fmt: skip


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def _read_body(
    body: RequestBody, headers: Mapping[str, str], limit: int, advice: str | None = None
) -> bytes:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise IngestError(
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported; send plain or gzip bodies",
            415,
        )

    def too_large() -> IngestError:
        if advice is not None:
            why = advice
        elif limit == MAX_REQUEST_BYTES:
            why = "one event must be under 32 KB: trim its properties, traits or context"
        else:
            why = (
                f"send fewer events per batch (at most {MAX_BATCH_BYTES // 1024} KB and "
                f"{MAX_BATCH_EVENTS} events)"
            )
        return IngestError(
            "payload_too_large",
            f"the request body is over {limit // 1024} KB, the limit for this endpoint; {why}",
            400,
        )

    data = await body.read(limit, too_large)
    return gunzip(data, limit, too_large) if encoding == "gzip" else data


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise IngestError("invalid_json", "the request body is empty; send a JSON object", 400)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError("invalid_json", f"the body is not valid JSON: {exc}", 400) from None
    if not isinstance(data, dict):
        raise IngestError("invalid_json", "the body must be a JSON object", 400)
    return data


def _basic_key(headers: Mapping[str, str]) -> str | None:
    """The write key of an ``Authorization: Basic`` header, None when there is none."""
    auth = headers.get("authorization")
    if not auth or auth[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
        raise IngestError(
            "invalid_authorization",
            "the Authorization header is not valid Basic auth; send base64('<writeKey>:')",
            401,
        ) from None
    return decoded.partition(":")[0] or None


def _body_key(data: dict[str, Any]) -> str:
    body_key = data.get("writeKey")
    if isinstance(body_key, str) and body_key:
        return body_key
    raise IngestError(
        "missing_write_key",
        "no write key: send it as HTTP Basic auth (user = write key, empty password) or as "
        "'writeKey' in the body",
        401,
    )


def _envelope(
    data: dict[str, Any], source: str, ip: str | None, single: str | None
) -> tuple[Envelope, list[Any]]:
    received_ms = time.time_ns() // 1_000_000
    received_iso = iso_ms(received_ms)
    if single is not None:
        return Envelope(source, received_ms, received_iso, ip), [data]
    items = data.get("batch")
    if not isinstance(items, list):
        raise IngestError("invalid_batch", "a batch body needs 'batch': a list of events", 400)
    if len(items) > MAX_BATCH_EVENTS:
        raise IngestError(
            "batch_too_large",
            f"the batch has {len(items)} events; the limit is {MAX_BATCH_EVENTS} — split it",
            400,
        )
    context = data.get("context")
    integrations = data.get("integrations")
    if context is not None and not isinstance(context, dict):
        raise IngestError("invalid_field", "the batch's context must be an object", 400)
    if integrations is not None and not isinstance(integrations, dict):
        raise IngestError("invalid_field", "the batch's integrations must be an object", 400)
    sent_ms: int | None = None
    if data.get("sentAt") is not None:
        try:
            sent_ms = parse_ms(data["sentAt"], "the batch's sentAt")
        except ItemError as exc:
            raise IngestError(exc.code, exc.message, 400) from None
    env = Envelope(
        source, received_ms, received_iso, ip,
        sent_at_ms=sent_ms, sent_at_iso=None if sent_ms is None else iso_ms(sent_ms),
        context=context, integrations=integrations,
    )  # fmt: skip
    return env, items


def _message_id(item: object) -> str | None:
    value = item.get("messageId") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]],
    *,
    content_type: bool = True,
) -> None:
    # a Content-Length spares uvicorn chunked framing and a second write per response
    length = (b"content-length", _OK_LENGTH if body is _OK else str(len(body)).encode())
    headers = [_JSON, length, *extra] if content_type else [length, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
