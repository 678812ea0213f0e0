"""The admin token's file: generated at first start, only its SHA-256 kept, in
``<data-dir>/auth/admin_token.sha256``, unless ``HEADWATER_ADMIN_TOKEN`` sets it
(:mod:`headwater.api.auth` says how requests present it).

Apart from the API's module, which loads the web framework: the CLI reads and resets the
token without it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from headwater.errors import ConfigError

ENV_VAR = "HEADWATER_ADMIN_TOKEN"
AUTH_DIR = "auth"
TOKEN_FILE = "admin_token.sha256"
TOKEN_PREFIX = "hwa_"
MIN_TOKEN_CHARS = 16


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AdminToken:
    """The admin token's digest, and where it came from (``env`` or ``file``)."""

    digest: str
    origin: str

    def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(_digest(presented), self.digest)

    def check_header(self, authorization: str | None) -> bool:
        """``Authorization: Bearer <token>`` (the scheme is case-insensitive)."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.check(value.strip())


def ensure_admin_token(data_dir: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """Make sure an admin token exists; returns a newly generated one (to print once), else
    None. Does nothing when ``HEADWATER_ADMIN_TOKEN`` is set."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return None
    path = data_dir / AUTH_DIR / TOKEN_FILE
    if path.exists():
        return None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_digest(token) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return token


def load_admin_token(data_dir: Path, environ: Mapping[str, str] | None = None) -> AdminToken:
    """The token to check requests against; generates one if there is none yet (the caller
    of :func:`ensure_admin_token` has printed it)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value:
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{ENV_VAR} is {len(value)} characters; use at least {MIN_TOKEN_CHARS} random "
                "characters (e.g. `openssl rand -hex 24`)"
            )
        return AdminToken(_digest(value), "env")
    path = data_dir / AUTH_DIR / TOKEN_FILE
    if not path.exists():
        ensure_admin_token(data_dir, env)
    digest = path.read_text(encoding="utf-8").strip()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(
            f"{path} does not hold a SHA-256 digest; delete it and restart to generate a new "
            f"admin token, or set {ENV_VAR}"
        )
    return AdminToken(digest, "file")


def reset_admin_token(data_dir: Path) -> str:
    """A new token replacing the stored one (``headwater admin-token --reset``)."""
    path = data_dir / AUTH_DIR / TOKEN_FILE
    path.unlink(missing_ok=True)
    token = ensure_admin_token(data_dir, {})
    assert token is not None
    return token
