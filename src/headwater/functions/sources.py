"""Source functions on the gateway: a webhook (Stripe, Typeform, ...) turned into events.

Each source function answers at its own URL on the Tracking API's address,
``/v1/functions/<name>/<secret>`` (any method; the body up to :data:`MAX_BODY_BYTES`). The
secret is made when the function is first served and kept in
``<data-dir>/functions/secrets.json`` (mode 0600), so the URL a provider was given stays
valid across restarts; ``headwater functions url NAME`` prints it. A wrong secret or an
unknown name is a plain 404 that says nothing about which functions exist.

The handler runs in the function's worker pool (never in the gateway); the events it emits
(``analytics.track(...)`` or returned) are then taken exactly as a ``/v1/batch`` of the
function's source would be — normalised, checked by the source's tracking plan, written
to the log before the answer. What the caller is told follows what webhook senders do with
it: 200 when the events are stored; 400 when the function refused the request
(``ValidationError``, ``InvalidEventPayload``, ``EventNotSupported``: sending it again will
not help); 503 with ``Retry-After`` when it asked for a retry, ran out of time or its worker
died (the sender retries); 500 for any other exception (the traceback goes to the function's
failures, never to the caller).
"""

from __future__ import annotations

import fcntl
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from headwater.config.workspace import FunctionConfig
from headwater.errors import IngestError
from headwater.functions.host import FunctionHost

PREFIX = "/v1/functions/"
SECRETS_FILE = "secrets.json"
MAX_BODY_BYTES = 512 * 1024
RETRY_AFTER_SECS = 5
REFUSED = frozenset({"ValidationError", "InvalidEventPayload", "EventNotSupported"})
RETRIED = frozenset({"RetryError", "Timeout"})


class SecretStore:
    """The secrets of the source functions' URLs, one per function name, on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SECRETS_FILE

    def _read(self) -> dict[str, str]:
        try:
            found = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise RuntimeError(f"{self.path} is not JSON ({exc}); remove it to make new "
                               "secrets (the functions' URLs change)") from None  # fmt: skip
        return {str(k): str(v) for k, v in found.items()}

    def get(self, names: Iterable[str]) -> dict[str, str]:
        """The secret of each name, made (and stored) for the names that have none yet.
        A lock file keeps the server and a CLI from making two for one name."""
        wanted = list(names)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            known = self._read()
            missing = [n for n in wanted if n not in known]
            if missing:
                known.update({n: secrets.token_urlsafe(24) for n in missing})
                tmp = self.path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(orjson.dumps(known, option=orjson.OPT_INDENT_2))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
        return {n: known[n] for n in wanted}


def url_path(name: str, secret: str) -> str:
    return f"{PREFIX}{name}/{secret}"


class SourceFunctions:
    """The source functions of a workspace, served by the gateway."""

    def __init__(self, functions: Iterable[FunctionConfig], state_dir: Path) -> None:
        configs = [f for f in functions if f.kind == "source"]
        self.host = FunctionHost(configs, ("source",), state_dir, "gateway")
        self.store = SecretStore(state_dir)
        self.sources = {f.name: str(f.source) for f in configs}
        self._secrets: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.sources)

    async def start(self) -> None:
        """Load every source function (a file that cannot load stops start-up) and make
        the secrets of new ones."""
        if not self.sources:
            return
        await self.host.start()
        self._secrets = self.store.get(self.sources)

    async def close(self) -> None:
        await self.host.close()

    def path_of(self, name: str) -> str | None:
        secret = self._secrets.get(name)
        return url_path(name, secret) if secret is not None else None

    def named(self, path: str) -> str:
        """The function a request path names with the right secret, else a 404."""
        name, _, secret = path[len(PREFIX) :].partition("/")
        known = self._secrets.get(name)
        if known is None or not hmac.compare_digest(secret.encode(), known.encode()):
            raise IngestError(
                "not_found",
                "no source function answers at this URL; `headwater functions url NAME` "
                "prints a source function's URL",
                404,
            )
        return name

    async def run(self, name: str, method: str, url: str, headers: Mapping[str, str],
                  body: bytes) -> list[dict[str, object]]:  # fmt: skip
        """The events the function emitted for this request, or the IngestError to answer."""
        pool = self.host.pool(name)
        if pool is None:  # closed while the request was read
            raise IngestError("unavailable", f"function {name} is not running; retry", 503)
        request = {"method": method, "url": url, "headers": dict(headers), "body": body.hex()}
        result = await pool.call_request(request)
        if result.lost:
            raise IngestError("function_unavailable", f"{result.lost}; retry", 503)
        answer = result.results[0] if result.results else {"s": "ok"}
        if answer.get("s") == "err":
            kind, message = str(answer.get("k")), str(answer.get("m"))
            if kind in REFUSED:
                raise IngestError("function_refused", f"function {name}: {kind}: {message}", 400)
            if kind in RETRIED:
                raise IngestError("function_retry", f"function {name}: {kind}: {message}", 503)
            raise IngestError(
                "function_failed",
                f"function {name} failed ({message}); its traceback is in `headwater functions "
                f"logs {name}`",
                500,
            )
        return [e for e in result.emitted if isinstance(e, dict)]
