"""What a worker promises, each checked with a real worker process: one that dies, one that
catches its timeout and goes on, one past its CPU limit — each call answered as a lost
worker (retryable) and the worker replaced; user code, its top level included, runs as
the unprivileged user; every handler and error class, ``logging``, ``fetch``'s timeout, a
source function's every ``analytics`` call and returned list; a file whose handlers are
imported passes the start-up check; a top-level ``KeyError`` is named with its line."""

from __future__ import annotations

import os
import pwd
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from headwater.config.workspace import load_workspace
from headwater.delivery.outcomes import EventState
from headwater.errors import ConfigError
from headwater.functions.host import FunctionHost
from headwater.functions.pool import FunctionPool, FunctionSpec, LoadFailed
from tests.delivery.conftest import FAST, event
from tests.functions.test_loading import workspace_file

HOSTILE = """
import os, time

def on_track(event, settings):
    how = event["event"]
    if how == "die":
        os._exit(3)
    if how == "stubborn":  # catches the timeout, again and again
        while True:
            try:
                time.sleep(60)
            except BaseException:
                pass
    if how == "burn":
        while True:
            pass
    print("fine")
"""


def spec(tmp_path: Path, code: str, **limits: Any) -> FunctionSpec:
    path = tmp_path / "fn.py"
    path.write_text(textwrap.dedent(code))
    return FunctionSpec("fn", "destination", str(path), {}, **limits)


@pytest.fixture
async def pools() -> Any:
    started: list[FunctionPool] = []

    async def start(s: FunctionSpec) -> FunctionPool:
        pool = FunctionPool(s)
        await pool.start()
        started.append(pool)
        return pool

    yield start
    for pool in started:
        await pool.close()


@pytest.mark.parametrize(
    ("how", "limits", "reason"),
    [
        ("die", {}, "the worker exited with status 3"),
        ("stubborn", {"timeout_secs": 0.5}, "the call ran past its limit and went on"),
        ("burn", {"timeout_secs": 60, "cpu_secs": 1}, "died of SIGXCPU (its CPU limit)"),
    ],
)
async def test_a_lost_worker_is_replaced_and_its_call_is_retryable(
    tmp_path: Path, pools: Callable[..., Any], how: str, limits: dict[str, Any], reason: str
) -> None:
    pool = await pools(spec(tmp_path, HOSTILE, **limits))
    result = await pool.call_events([{"type": "track", "event": how}])
    (answer,) = result.results
    assert answer["k"] == "WorkerLost" and reason in answer["m"], answer
    assert result.lost is not None, "every event of the call is retryable"
    assert pool.stats.restarts == 1
    again = await pool.call_events([{"type": "track", "event": "ok"}])
    assert again.results == [{"s": "ok", "v": None}] and "fine" in "".join(again.logs)


async def test_user_code_runs_unprivileged_from_its_first_line(
    tmp_path: Path, pools: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert os.geteuid() == 0, "the isolation promises are Headwater's when it runs as root"
    private = tmp_path_factory.mktemp("data")
    (private / "secrets.json").write_text("{}")
    private.chmod(0o700)
    pool = await pools(spec(tmp_path, f"""
        import os
        UID = os.getuid()
        try:
            open({str(private / "secrets.json")!r}).read()
            READ = "read it"
        except OSError as exc:
            READ = type(exc).__name__

        def on_track(event, settings):
            print(UID, READ)
    """))  # fmt: skip
    result = await pool.call_events([{"type": "track", "event": "E"}])
    uid, read = "".join(result.logs).split()
    assert int(uid) == pwd.getpwnam("nobody").pw_uid, "the top level ran as nobody too"
    assert read == "PermissionError"


HANDLERS = """
import logging
from headwater.functions import EventNotSupported, InvalidEventPayload

log = logging.getLogger("crm")

def on_identify(event, settings):
    log.info("identify %s", event["userId"])

def on_page(event, settings):
    print("page", event["name"])

def on_group(event, settings):
    print("group", event["groupId"])

def on_screen(event, settings):
    raise EventNotSupported("screens are not sent to the CRM")

def on_alias(event, settings):
    raise InvalidEventPayload("alias without previousId")
"""


async def test_every_handler_and_error_class_in_the_delivery_path(
    make_fn_pipeline: Callable[..., Any], code_dir: Callable[[str, str], str]
) -> None:
    fn = {"name": "crm", "kind": "destination", "file": code_dir("crm", HANDLERS),
          "sources": ["website"], "delivery": {**FAST, "batch_max_events": 10}}  # fmt: skip
    p = await make_fn_pipeline([fn])
    events = [event(type="identify", userId="u1"), event(type="page", name="Home"),
              event(type="group", groupId="g1"), event(type="screen", name="Cart"),
              event(type="alias", userId="u1"), event(type="track", event="Clicked")]  # fmt: skip
    ids = await p.send(events)
    await p.wait_states("crm", ids[:3], EventState.DELIVERED)
    await p.wait_states("crm", ids[3:], EventState.DISCARDED)
    reasons = [next(r.reason for r in await p.ledger("crm", i) if r.state is
                    EventState.DISCARDED) for i in ids[3:]]  # fmt: skip
    assert reasons == ["EventNotSupported: screens are not sent to the CRM",
                       "InvalidEventPayload: alias without previousId",
                       "EventNotSupported: function crm has no on_track for track events"]  # fmt: skip
    stats = p.engine.functions.pool("crm").stats.snapshot()  # type: ignore[union-attr]
    lines = [line["line"] for line in stats["logs"]]
    assert "INFO crm: identify u1" in lines, "logging is captured, as print is"
    assert "page Home" in lines and "group g1" in lines


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


async def test_fetch_gives_up_at_its_timeout(
    tmp_path: Path, pools: Callable[..., Any], silent_port: int
) -> None:
    pool = await pools(spec(tmp_path, f"""
        import httpx
        from headwater.functions import RetryError, fetch

        def on_track(event, settings):
            try:
                fetch("http://127.0.0.1:{silent_port}/", timeout=0.3)
            except httpx.TimeoutException as exc:
                raise RetryError(f"the API did not answer: {{type(exc).__name__}}")
    """, timeout_secs=30))  # fmt: skip
    (answer,) = (await pool.call_events([{"type": "track", "event": "E"}])).results
    assert answer == {"s": "err", "k": "RetryError", "m": "the API did not answer: ReadTimeout"}


async def test_a_source_function_emits_each_kind_and_returned_lists(
    tmp_path: Path, pools: Callable[..., Any]
) -> None:
    path = tmp_path / "src.py"
    path.write_text(textwrap.dedent("""
        from headwater.functions import analytics

        def on_request(request, settings):
            who = request.json()["user"]
            analytics.page(user_id=who, name="Pricing")
            analytics.screen({"name": "Cart"}, anonymous_id="a-1")
            analytics.group(user_id=who, group_id="g-1", traits={"plan": "pro"})
            analytics.alias(user_id=who, previous_id="a-1")
            return [{"type": "track", "event": "One", "userId": who},
                    {"type": "track", "event": "Two", "userId": who}, "not an event"]
    """))  # fmt: skip
    pool = await pools(FunctionSpec("src", "source", str(path), {}))
    body = b'{"user": "u-9"}'
    result = await pool.call_request({"method": "POST", "url": "http://localhost/x",
                                      "headers": {}, "body": body.hex()})  # fmt: skip
    assert result.results == [{"s": "ok"}]
    assert result.emitted == [
        {"type": "page", "userId": "u-9", "name": "Pricing"},
        {"type": "screen", "name": "Cart", "anonymousId": "a-1"},
        {"type": "group", "userId": "u-9", "groupId": "g-1", "traits": {"plan": "pro"}},
        {"type": "alias", "userId": "u-9", "previousId": "a-1"},
        {"type": "track", "event": "One", "userId": "u-9"},
        {"type": "track", "event": "Two", "userId": "u-9"},
    ]


async def test_a_reload_to_a_file_without_handlers_keeps_the_old(
    tmp_path: Path, pools: Callable[..., Any]
) -> None:
    s = spec(tmp_path, "def on_track(event, settings):\n    print('old')\n")
    pool = await pools(s)
    spec(tmp_path, "def helper():\n    pass\n")  # the same file, rewritten
    with pytest.raises(LoadFailed, match=r"fn\.py:1: no handler: a destination function defines"):
        await pool.reload()
    assert "no handler" in str(pool.stats.load_error)
    result = await pool.call_events([{"type": "track", "event": "E"}])
    assert "".join(result.logs).strip() == "old"


@pytest.mark.parametrize(
    "code",
    [
        "from json import loads as on_track\n",
        "on_track: object = lambda event, settings: None\n",
        "from helpers import *\n",
    ],
)
def test_handlers_bound_otherwise_than_by_def_pass_the_start_up_check(
    tmp_path: Path, code: str
) -> None:
    workspace = load_workspace(workspace_file(tmp_path, code))
    assert [f.name for f in workspace.functions] == ["fn"]


async def test_a_top_level_lookup_error_is_named_with_its_line(tmp_path: Path) -> None:
    code = "def on_track(event, settings):\n    pass\n\nSETTINGS = {}\nSETTINGS['url']\n"
    workspace = load_workspace(workspace_file(tmp_path, code))
    host = FunctionHost(workspace.functions, ("destination",))
    with pytest.raises(ConfigError, match=r"fn\.py:5: KeyError: 'url'"):
        await host.start()
