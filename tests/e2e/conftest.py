"""Whole-process tests: a real ``headwater serve`` subprocess on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from headwater.log.sqlite_reads import read_after
from headwater.status.canary import CANARY_SOURCE
from tests.fakes import free_port

ADMIN_TOKEN = "hwa_e2e_admin_token_0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
WRITE_KEY = "wk_e2e_website_1"
OTHER_KEY = "wk_e2e_backend_2"


@dataclass
class Server:
    """A running Headwater process. ``url`` is its base URL."""

    data_dir: Path
    config: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    output: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output = self.data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> None:
        cmd = [
            sys.executable, "-m", "headwater.cli", "serve",
            "--config", str(self.config), "--data-dir", str(self.data_dir),
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        with self.output.open("ab") as out:
            env = {**os.environ, "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"headwater exited early:\n{self.output.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"headwater did not start in {timeout_s}s:\n{self.output.read_text()}")

    def api(self, path: str, **params: Any) -> httpx.Response:
        """GET a management API path with the admin token."""
        return httpx.get(f"{self.url}{path}", params=params, headers=ADMIN, timeout=10)

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def events(self) -> list[dict[str, Any]]:
        """Every event in the log, oldest first, read straight from the SQLite files."""
        return [orjson.loads(payload) for _, payload in self.rows()]

    def rows(self) -> list[tuple[str, bytes]]:
        """(source, payload) of every stored event, oldest first, read from the SQLite files —
        except the canaries Headwater sends itself (source ``headwater-canary``)."""
        path = self.data_dir / "log" / "events.sqlite"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            records = read_after(conn, after=0, limit=10**9)
            return [(r.source, r.payload) for r in records if r.source != CANARY_SOURCE]
        finally:
            conn.close()


ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse_z(value: object, what: str) -> datetime:
    """A time as the server writes it (UTC, milliseconds, 'Z'), or a test failure."""
    assert isinstance(value, str), f"{what} should be a string, got {value!r}"
    try:
        return datetime.strptime(value, ISO_Z).replace(tzinfo=UTC)
    except ValueError:
        pytest.fail(f"{what} {value!r} is not the server's ISO form (UTC, ms, 'Z')")


def assert_stored_once(server: Server, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every id is in the log exactly once and nothing else is; returns id -> (source, event)."""
    assert len(set(ids)) == len(ids), f"test bug: repeated messageIds {Counter(ids).most_common(3)}"
    rows = [(source, orjson.loads(payload)) for source, payload in server.rows()]
    counts = Counter(event.get("messageId") for _, event in rows)
    missing = [m for m in ids if counts[m] == 0]
    twice = {m: n for m, n in counts.items() if n > 1}
    unknown = sorted(str(m) for m in set(counts) - set(ids))
    assert not missing, (
        f"{len(missing)} of {len(ids)} sent events are not in the log: {missing[:5]}"
    )
    assert not twice, f"{len(twice)} events are stored more than once: {list(twice.items())[:5]}"
    assert not unknown, f"the log holds {len(unknown)} events nobody sent: {unknown[:5]}"
    return {event["messageId"]: (source, event) for source, event in rows}


def write_workspace(path: Path, extra: str = "") -> Path:
    path.write_text(
        "sources:\n"
        f"  - name: website\n    write_key: {WRITE_KEY}\n"
        f"  - name: backend\n    write_key: {OTHER_KEY}\n" + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """``make_server(extra_yaml="")`` starts a server; all are stopped after the test."""
    started: list[Server] = []

    def make(extra_yaml: str = "", start: bool = True) -> Server:
        base = tmp_path / f"hw{len(started)}"
        base.mkdir()
        config = write_workspace(base / "workspace.yaml", extra_yaml)
        server = Server(data_dir=base / "data", config=config, port=free_port())
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Any) -> Server:
    return make_server()  # type: ignore[no-any-return]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.e2e)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
