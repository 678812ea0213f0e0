"""HTTP for destinations: one client, Segment's classification of answers, exchanges to keep.

Destinations build an :class:`HttpRequest`; :class:`HttpClient` sends it and translates the
client library's errors into :class:`HttpFailure` in this one place; :func:`classify` turns
the answer into an outcome by Segment's rules; :func:`exchange` keeps what was sent and
received, truncated and with secrets redacted, for the ledger.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from headwater.delivery.http1 import ConnectError, Http1Client, ProtocolError
from headwater.delivery.outcomes import Delivered, Discard, Exchange, Outcome, Retry

BODY_KEEP_BYTES = 4096  # bytes of a request or response body kept in the ledger
REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
RETRYABLE_4XX = frozenset({408, 429})
USER_AGENT = "Headwater (+https://github.com/headwater-cdp/headwater)"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    secret_headers: frozenset[str] = field(default_factory=frozenset)  # lower-case names
    secret_values: frozenset[str] = field(default_factory=frozenset)
    """Secrets a vendor wants in the body or URL (Amplitude's ``api_key``): replaced by
    ``[redacted]`` wherever they appear in the exchange kept for the ledger."""
    secret_query: frozenset[str] = field(default_factory=frozenset)
    """Names of query parameters that carry a secret (GA4's ``api_secret``): their values
    are redacted wherever the request is kept."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """No answer: ``timeout``, ``connect`` (refused, DNS, TLS) or ``protocol``."""

    kind: str
    message: str


class HttpClient:
    """One connection pool shared by every HTTP destination of the process
    (:mod:`headwater.delivery.http1`); errors become :class:`HttpFailure` here."""

    def __init__(self) -> None:
        self._client = Http1Client()

    async def send(self, request: HttpRequest, timeout_secs: float) -> HttpResponse | HttpFailure:
        headers = {"User-Agent": USER_AGENT, **request.headers}
        try:
            status, answer_headers, body = await self._client.request(
                request.method, request.url, headers, request.body, timeout_secs
            )
        except TimeoutError:
            return HttpFailure("timeout", f"no answer within {timeout_secs:g} s")
        except ConnectError as exc:
            return HttpFailure("connect", str(exc))
        except (ProtocolError, OSError, ValueError) as exc:
            return HttpFailure("protocol", f"{type(exc).__name__}: {exc}")
        return HttpResponse(status, answer_headers, body)

    async def close(self) -> None:
        await self._client.close()


def retry_after_secs(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        pass
    else:  # "inf" or "1e999" would make the retry time an infinite number of milliseconds
        return max(0.0, secs) if math.isfinite(secs) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def snippet(body: bytes, size: int = 200) -> str:
    """The first ``size`` bytes of an answer, for a reason."""
    text = body[:size].decode("utf-8", "replace").strip()
    return text + ("…" if len(body) > size else "")


def classify(result: HttpResponse | HttpFailure) -> Outcome:
    """Segment's rules: 2xx delivered; timeouts, connection errors, 408, 429 and 5xx retried
    (honouring ``Retry-After``); every other answer discarded with the answer as the reason."""
    if isinstance(result, HttpFailure):
        return Retry(f"{result.kind}: {result.message}")
    status = result.status
    if 200 <= status < 300:
        return Delivered(status)
    headers = {k.lower(): v for k, v in result.headers.items()}
    reason = f"HTTP {status}: {snippet(result.body)}" if result.body else f"HTTP {status}"
    if status in RETRYABLE_4XX or status >= 500:
        return Retry(reason, status, retry_after_secs(headers.get("retry-after")))
    if 300 <= status < 400:
        where = headers.get("location", "?")
        return Discard(
            f"HTTP {status}: redirected to {where}; set the destination's URL to it", status
        )
    return Discard(reason, status)


def _body(body: bytes, secrets: frozenset[str] = frozenset()) -> str:
    size = len(body)
    body = redact_bytes(body, secrets)  # before truncating: half a secret is still a leak
    text = body[:BODY_KEEP_BYTES].decode("utf-8", "replace")
    if len(body) > BODY_KEEP_BYTES:
        text += f"… ({size:,} bytes in all)"
    return text


def _forms(secret: str) -> set[str]:
    """A secret as it may appear: raw, URL-encoded, JSON-escaped."""
    return {s for s in (secret, quote_plus(secret), quote(secret, safe="")) if s}


def redact(text: str, secrets: frozenset[str]) -> str:
    """``text`` with every form of each secret replaced by ``[redacted]``."""
    for secret in sorted(secrets, key=len, reverse=True):
        for form in _forms(secret):
            text = text.replace(form, REDACTED)
    return text


def redact_bytes(body: bytes, secrets: frozenset[str]) -> bytes:
    if not secrets:
        return body
    for secret in sorted(secrets, key=len, reverse=True):
        for form in _forms(secret):
            body = body.replace(form.encode(), REDACTED.encode())
    return body


def redact_url(url: str, secret_query: frozenset[str]) -> str:
    """``url`` with the values of the ``secret_query`` parameters replaced by [redacted]."""
    if not secret_query:
        return url
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, REDACTED if k in secret_query else v) for k, v in pairs]
    return urlunsplit(parts._replace(query=urlencode(kept, safe="[]")))


def _secret_values(request: HttpRequest) -> list[str]:
    pairs = parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
    return [v for k, v in pairs if k in request.secret_query and v]


def exchange(request: HttpRequest, result: HttpResponse | HttpFailure) -> Exchange:
    """What went over the wire, safe to store and show: bodies truncated, secrets redacted
    (secret headers, and the values of secret query parameters wherever they appear)."""
    secret = SECRET_HEADERS | request.secret_headers
    values = request.secret_values
    if request.secret_query:
        values |= frozenset(_secret_values(request))
    sent: dict[str, object] = {
        "method": request.method,
        "url": redact(redact_url(request.url, request.secret_query), values),
        "headers": {k: REDACTED if k.lower() in secret else v for k, v in request.headers.items()},
        "body": _body(request.body, values),
    }
    if isinstance(result, HttpFailure):
        received: dict[str, object] = {
            "error": result.kind,
            "message": redact(result.message, values),
        }
    else:
        received = {
            "status": result.status,
            "headers": {
                k: REDACTED if k.lower() in secret else v for k, v in result.headers.items()
            },
            "body": _body(result.body, values),
        }
    return Exchange(sent, received)
