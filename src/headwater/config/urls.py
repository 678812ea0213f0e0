"""URL settings shared by destinations and alert notifiers."""

from __future__ import annotations

from urllib.parse import urlsplit


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
