"""How the console turns documents into HTML: the Jinja2 environment, its filters, the static
files and the security headers every console response carries.

Templates are autoescaped (``select_autoescape`` on ``.html``), so event content — which
anyone with a write key can send — is always text, never markup. The page loads one
stylesheet and one script, both from ``/console/static/`` (the Content-Security-Policy
allows nothing else), named with a hash of their content so browsers may keep them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.console.processing import action_text

PREFIX = "/console"

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",  # pages show event data; static files set their own
}


class SecurityHeaders:
    """ASGI middleware: the headers above on every response of the console (set only when
    the response has not set the header itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    version: str  # a hash of the content, for the URL


def load_static() -> dict[str, StaticFile]:
    """The console's stylesheet and script, read once from the package."""
    folder = resources.files("headwater.console") / "static"
    types = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}
    out: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        kind = entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and kind in types:
            body = entry.read_bytes()
            out[entry.name] = StaticFile(body, types[kind], hashlib.sha256(body).hexdigest()[:12])
    return out


# ---------------------------------------------------------------------- filters


def _epoch_ms(value: int | float | str | None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def iso(value: int | float | str | None) -> str:
    """A time (epoch ms or ISO text) as ISO-8601 UTC with milliseconds, for ``datetime=``."""
    ms = _epoch_ms(value)
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def human_time(value: int | float | str | None) -> str:
    """``2026-01-31 12:00:05 UTC``, or an em dash for no time."""
    ms = _epoch_ms(value)
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: int | float | str | None) -> str:
    """``12:00:05.123`` — the debugger's short form (UTC)."""
    text = iso(value)
    return text[11:23] if text else "—"


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def compact(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def pretty_body(text: Any) -> str:
    """A request or response body: pretty JSON when it is JSON, else as it was."""
    if text is None:
        return ""
    if not isinstance(text, str):
        return pretty(text)
    try:
        return pretty(orjson.loads(text))
    except orjson.JSONDecodeError:
        return text


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def latency(value: int | None) -> str:
    """A percentile from the ledger's histogram: the upper bound of its bucket."""
    if value is None:
        return "—"
    return f"≤ {value / 1000:g} s" if value >= 1000 else f"≤ {value} ms"


def omit(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


def scalars(mapping: dict[str, Any]) -> dict[str, Any]:
    """The entries whose values are plain (text, numbers, nothing): shown as a list."""
    return {k: v for k, v in mapping.items() if v is None or isinstance(v, str | int | float)}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("headwater.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=iso, human_time=human_time, clock=clock, pretty=pretty, compact=compact,
        pretty_body=pretty_body, number=number, latency=latency, omit=omit, scalars=scalars,
        action_text=action_text,
    )  # fmt: skip
    return env
