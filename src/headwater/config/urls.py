"""URL and header settings shared by destinations and alert notifiers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Describe the body and its framing, which Headwater decides: never set by a user.
FRAMING_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "host"}
)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


def check_http_url(url: str, credentials_hint: str) -> str:
    """``url`` if it is an absolute ``http://`` or ``https://`` URL with a host, a valid port
    and no ``user:password@``: the URL is kept with every failed delivery, so a credential in
    it would be stored and shown (``credentials_hint`` says where it belongs instead)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{url!r} contains white space or control characters")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} has credentials in it (user:password@); {credentials_hint}")
    return url


def check_headers(headers: dict[str, str], reserved: frozenset[str]) -> dict[str, str]:
    """User-set request headers: valid names, no control characters in values, none of
    ``reserved`` (lower-case names Headwater sets itself)."""
    for name, value in headers.items():
        if name.lower() in reserved:
            raise ValueError(f"header {name!r} is set by Headwater and cannot be overridden")
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
            raise ValueError(f"the value of header {name!r} contains control characters")
    return headers


def field_path(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as the workspace file writes it: ``sources[1].name``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
