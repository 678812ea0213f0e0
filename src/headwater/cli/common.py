"""What the command groups share: the consoles, the common options, errors and the API client."""

from __future__ import annotations

import fcntl
import getpass
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape

from headwater.config.units import parse_seconds
from headwater.config.workspace import StateConfig, load_workspace
from headwater.errors import ConfigError
from headwater.state.admin_token import ENV_VAR
from headwater.state.audit import AuditLog
from headwater.state.migrations import MigrationError
from headwater.state.sql import StateUnavailable

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_URL = "http://127.0.0.1:8080"
UrlOption = Annotated[str, typer.Option(help="Headwater's URL.", envvar="HEADWATER_URL")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """An error to raise: printed on stderr, the command exits with ``code``."""
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)  # text from the server
    return typer.Exit(code)


def refuse(message: str) -> typer.Exit:
    """A usage error to raise (bad option, unknown name, missing data dir): exit code 2."""
    return fail(message, 2)


class Api:
    """The management API of a running server, with the admin token from the environment."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        token = os.environ.get(ENV_VAR)
        if not token:
            raise fail(
                f"set {ENV_VAR} to the admin token (printed when the server first started; "
                "`headwater admin-token --reset --data-dir DIR` makes a new one)",
                2,
            )
        self.headers = {"authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.call("GET", path, params)

    def post(self, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        return self.call("POST", path, params, body)

    def call(
        self, method: str, path: str, params: dict[str, Any], body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        try:
            response = httpx.request(
                method, f"{self.url}{path}", params=params, json=body,
                headers={**self.headers, **(headers or {})}, timeout=120,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise fail(f"could not reach Headwater at {self.url}: {exc}") from exc
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            answer = {"message": response.text}
        if not response.is_success:
            raise fail(_refusal(answer, response.status_code))
        return answer

    def stream(self, path: str) -> Iterator[tuple[str, str]]:
        """Server-Sent Events as (event, data) pairs."""
        try:
            with httpx.stream(
                "GET", f"{self.url}{path}", headers=self.headers, timeout=httpx.Timeout(30, read=60)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise fail(str(_message(response.content) or response.status_code))
                kind, data = "message", ""
                for line in response.iter_lines():
                    if not line:
                        if data:
                            yield kind, data
                        kind, data = "message", ""
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
        except httpx.HTTPError as exc:
            raise fail(f"the stream from {self.url} ended: {exc}") from exc


def _refusal(answer: dict[str, Any], status: int) -> str:
    """The server's message; with several faults (a refused change), each with its field."""
    faults = answer.get("errors")
    if isinstance(faults, list) and len(faults) > 1:
        return "the change was refused whole:\n" + "\n".join(
            f"  {f.get('field') or '-'}: {f.get('message')}" for f in faults if isinstance(f, dict)
        )
    if (
        isinstance(faults, list)
        and faults
        and isinstance(faults[0], dict)
        and faults[0].get("field")
    ):
        return f"{faults[0]['field']}: {faults[0].get('message')}"
    return str(answer.get("message") or f"HTTP {status}")


def _message(content: bytes) -> str | None:
    try:
        return str(orjson.loads(content).get("message"))
    except (ValueError, AttributeError):
        return None


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Workspace YAML file.", envvar="HEADWATER_CONFIG")
]
DataDirOption = Annotated[
    Path, typer.Option(help="Headwater's data directory.", envvar="HEADWATER_DATA_DIR")
]
DEFAULT_CONFIG = Path("workspace.yaml")
DEFAULT_DATA_DIR = Path(".headwater")


def parse_when(value: str, now: float | None = None) -> int:
    """A moment as epoch ms: ISO-8601 (``2026-11-26T10:00:00Z``, ``2026-11-26``), ``now``, or
    a duration meaning that long ago (``2h``, ``30m``, ``7d``)."""
    now = time.time() if now is None else now
    text = value.strip()
    if text == "now":
        return int(now * 1000)
    try:
        secs = parse_seconds(text)
    except ValueError:
        secs = None
    if isinstance(secs, int):
        return int((now - secs) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a time; write an ISO-8601 time (2026-11-26T10:00:00Z), "
            "a date, 'now', or how long ago (30m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def server_running(data_dir: Path) -> bool:
    """Whether a Headwater process holds this data dir's log (its writer lock)."""
    lock = data_dir / "log" / "LOCK"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def local_actor() -> str:
    """Who acts when a command writes to the data directory itself (no token involved): the
    operating-system user, as ``local:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"local:{user}"


def state_of(config: Path | None) -> StateConfig | None:
    """Where the workspace at ``config`` keeps state (None without a file: the data
    directory's)."""
    if config is None or not config.exists():
        return None
    try:
        return load_workspace(config).state
    except ConfigError as exc:
        raise refuse(f"cannot read {config}: {exc}") from None


def record_change(data_dir: Path, action: str, resource: str, diff: dict[str, Any],
                  state: StateConfig | None = None) -> None:  # fmt: skip
    """An audit entry for a change this command made (origin ``cli``), where the running
    server reads the trail: the data directory's file, or PostgreSQL with ``state``."""
    try:
        log = AuditLog.open(data_dir, state)
    except (StateUnavailable, MigrationError) as exc:
        raise refuse(f"the change is made, but not in the audit trail: {exc}") from None
    try:
        log.record(local_actor(), action, resource, diff, "cli")
    finally:
        log.close()
