"""Loading and reloading functions, and what a worker starts with: a syntax error or a
missing handler stops start-up with the file and line; a changed file is reloaded without
a restart, and a broken new version leaves the previous one running; a worker has an empty
environment and only its own settings."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from headwater.config.workspace import FunctionConfig, load_workspace
from headwater.errors import ConfigError
from headwater.functions.host import FunctionHost, read_stats, request_reload, restart_needed


def workspace_file(tmp_path: Path, code: str, kind: str = "destination") -> Path:
    (tmp_path / "fn.py").write_text(textwrap.dedent(code))
    where = {"destination": "sources: [website]", "source": "source: website",
             "insert": "destination: sink"}[kind]  # fmt: skip
    config = tmp_path / "workspace.yaml"
    config.write_text(
        "sources:\n  - {name: website, write_key: wk_website_load_1}\n"
        "destinations:\n  - {name: sink, type: devsink, sources: [website]}\n"
        f"functions:\n  - {{name: fn, kind: {kind}, file: fn.py, {where}}}\n"
    )
    return config


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("destination", "def on_track(event, settings)\n    pass\n", "fn.py:1: SyntaxError"),
        ("destination", "x = 1\n\n\ndef helper():\n    return 2\n", "fn.py:1: no handler"),
        ("source", "def on_track(event, settings):\n    pass\n", "defines on_request"),
        ("insert", "def on_track(event, settings):\n    return event\n\n\n1 +\n",
         "fn.py:5: SyntaxError"),
    ],
)  # fmt: skip
def test_a_broken_file_stops_start_up_with_file_and_line(
    tmp_path: Path, kind: str, code: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_workspace(workspace_file(tmp_path, code, kind))


async def test_a_failing_top_level_stops_start_up_with_file_and_line(tmp_path: Path) -> None:
    workspace = load_workspace(workspace_file(tmp_path, """
        import json

        def on_track(event, settings):
            pass

        json.loads("not json")
    """))  # fmt: skip
    host = FunctionHost(workspace.functions, ("destination",))
    with pytest.raises(ConfigError) as caught:
        await host.start()
    assert "function 'fn' cannot be loaded" in str(caught.value)
    assert "fn.py:7: JSONDecodeError" in str(caught.value)


async def wait_for(what: str, check: object, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old(tmp_path: Path) -> None:
    config = workspace_file(tmp_path, "def on_track(event, settings):\n    print('v1')\n")
    workspace = load_workspace(config)
    state = tmp_path / "state"
    host = FunctionHost(workspace.functions, ("destination",), state, "delivery")
    await host.start()
    try:
        pool = host.pool("fn")
        assert pool is not None

        async def prints() -> str:
            result = await pool.call_events([{"type": "track", "event": "E"}])
            return "".join(result.logs).strip()

        assert await prints() == "v1"
        version = pool.stats.version
        code = tmp_path / "fn.py"
        code.write_text("def on_track(event, settings):\n    print('v2')\n")
        os.utime(code, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime for sure
        await wait_for("the watcher to load v2", lambda: pool.stats.version != version)
        assert await prints() == "v2", "reloaded without a restart"

        code.write_text("def on_track(event, settings)\n    print('v3')\n")
        os.utime(code, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
        await wait_for("the failed reload to be reported", lambda: pool.stats.load_error)
        assert "SyntaxError" in str(pool.stats.load_error)
        assert await prints() == "v2", "the previous version keeps running"

        code.write_text("def on_track(event, settings):\n    print('v4')\n")
        request_reload(state)  # what `headwater functions reload` asks for
        await wait_for("the requested reload", lambda: not pool.stats.load_error)
        assert await prints() == "v4"
        await wait_for("the stats file", lambda: read_stats(state).get("fn", {}).get("version")
                       == pool.stats.version)  # fmt: skip
    finally:
        await host.close()


async def test_a_worker_has_an_empty_environment_and_only_its_own_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADWATER_ADMIN_TOKEN", "hwa_secret_of_the_server")
    code = tmp_path / "env.py"
    code.write_text(textwrap.dedent("""
        import json, os

        def others():
            # what this worker can read of the other workers: their memory map, environment
            found = {}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if b"headwater.functions.runtime" not in f.read():
                            continue
                except OSError:
                    continue
                if int(pid) == os.getpid():
                    continue
                for what in ("environ", "maps"):
                    try:
                        with open(f"/proc/{pid}/{what}", "rb") as f:
                            f.read(1)
                        found[f"{pid}/{what}"] = "read"
                    except OSError as exc:
                        found[f"{pid}/{what}"] = type(exc).__name__
            return found

        def on_track(event, settings):
            print(json.dumps({"environ": dict(os.environ), "settings": settings,
                              "cwd": os.getcwd(), "others": others()}))
    """))  # fmt: skip
    functions = [
        FunctionConfig(name=name, kind="destination", file=str(code), sources=["website"],
                       settings={"api_key": f"key-of-{name}"})
        for name in ("one", "two")
    ]  # fmt: skip
    host = FunctionHost(functions, ("destination",))
    await host.start()
    try:
        seen = {}
        for name in ("one", "two"):
            pool = host.pool(name)
            assert pool is not None
            result = await pool.call_events([{"type": "track", "event": "E"}])
            seen[name] = orjson.loads("".join(result.logs))
    finally:
        await host.close()
    # nothing of the server's: Python itself sets LC_CTYPE in a process started without a
    # locale (PEP 538), the only variable a worker has
    assert set(seen["one"]["environ"]) <= {"LC_CTYPE"} and set(seen["two"]["environ"]) <= {
        "LC_CTYPE"}  # fmt: skip
    assert seen["one"]["settings"] == {"api_key": "key-of-one"}
    assert seen["two"]["settings"] == {"api_key": "key-of-two"}
    assert seen["one"]["cwd"] != seen["two"]["cwd"], "each worker has a directory of its own"
    # the settings live in each worker's memory only: another function's worker, though it
    # runs as the same user, can read neither its memory map nor its environment
    assert os.geteuid() == 0, "the isolation promises are Headwater's when it runs as root"
    assert seen["one"]["others"] and seen["two"]["others"], "the other worker was found"
    assert set(seen["one"]["others"].values()) == {"PermissionError"}, seen["one"]["others"]
    assert set(seen["two"]["others"].values()) == {"PermissionError"}, seen["two"]["others"]


async def test_a_reload_with_the_workspace_read_again_applies_settings_and_limits(
    tmp_path: Path,
) -> None:
    code = tmp_path / "fn.py"
    code.write_text("import os\n\ndef on_track(event, settings):\n"
                    "    print(settings['label'], os.getpid())\n")  # fmt: skip
    first = FunctionConfig(name="fn", kind="destination", file=str(code), sources=["website"],
                           settings={"label": "v1"})  # fmt: skip
    state = tmp_path / "state"
    host = FunctionHost([first], ("destination",), state, "delivery")
    await host.start()
    try:
        pool = host.pool("fn")
        assert pool is not None

        async def printed() -> tuple[str, str]:
            result = await pool.call_events([{"type": "track", "event": "E"}])
            label, pid = "".join(result.logs).split()
            return label, pid

        assert (await printed())[0] == "v1"
        second = first.model_copy(update={"settings": {"label": "v2"},
                                          "limits": first.limits.model_copy(update={"workers": 2})})  # fmt: skip
        request_reload(state, [second])
        await wait_for("the new settings", lambda: pool.spec.settings == {"label": "v2"})
        pids = {(await printed())[1] for _ in range(6)}
        assert (await printed())[0] == "v2" and pool.spec.workers == 2 and len(pids) == 2

        moved = second.model_copy(update={"sources": ["backend"], "settings": {"label": "v3"}})
        assert restart_needed([second], [moved]) == ["function 'fn': its sources changed"]
        for request in ([moved], None):  # the second is seen once the first was dealt with
            request_reload(state, request)
            asked = (state / "reload").stat().st_mtime_ns
            await wait_for("the request to be seen", lambda asked=asked: host._reload_seen == asked)
        assert (await printed())[0] == "v2", "a function moved in the pipeline waits a restart"
    finally:
        await host.close()
    assert oct((state / "reload").stat().st_mode & 0o777) == "0o600", "settings may be secrets"
