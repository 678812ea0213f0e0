"""The child side: one function's code in a worker process of its own.

``python -I -m headwater.functions.runtime`` is started by :mod:`.pool` with an empty
environment, in a working directory of its own (never the data directory), with no file
descriptors but its pipes, and, when Headwater runs as root, as an unprivileged user. It
reads one ``load`` frame (the code, the settings, the limits), applies the limits, runs the
code, then answers ``events`` and ``request`` frames one at a time until its stdin closes.

What user code prints or logs is captured per call and sent back with the answer; the
process's own stdout is the answer channel, so fd 1 is pointed at /dev/null before any user
code runs.
"""

from __future__ import annotations

import io
import linecache
import logging
import math
import os
import resource
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from headwater.functions import api
from headwater.functions.protocol import HEADER, OVERRAN_EXIT, frame

HANDLERS = {
    "track": "on_track",
    "identify": "on_identify",
    "page": "on_page",
    "screen": "on_screen",
    "group": "on_group",
    "alias": "on_alias",
    "delete": "on_delete",
}
LOG_LIMIT_CHARS = 8192  # per call, like Segment's 4 KB console cap, a little more generous


class FunctionTimeout(BaseException):
    """Raised in the handler when its wall-clock limit passes."""


class MissingHandler(Exception):
    """The file defines none of the handlers its kind needs (the message says which)."""


OVERRUN_GRACE_SECS = 1.0


class _Watchdog:
    """Ends the process when a call runs ``grace`` seconds past its limit: the alarm raises
    :class:`FunctionTimeout` in the handler, which a handler can catch and go on. A thread,
    so it runs as long as the handler's Python code gives up the GIL now and then; a call
    stuck in C is the pool's to kill."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def arm(self, secs: float) -> None:
        with self._lock:
            self.deadline = time.monotonic() + secs + OVERRUN_GRACE_SECS

    def disarm(self) -> None:
        with self._lock:
            self.deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(0.1)
            with self._lock:
                overran = self.deadline is not None and time.monotonic() > self.deadline
            if overran:
                os._exit(OVERRAN_EXIT)


class _Capture(io.TextIOBase):
    """sys.stdout / sys.stderr during a call: what is written becomes log lines."""

    def __init__(self, sink: list[str]) -> None:
        self.sink = sink
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.size < LOG_LIMIT_CHARS:
            room = LOG_LIMIT_CHARS - self.size
            self.sink.append(text[:room])
            self.size += min(len(text), room)
        return len(text)


class _LogHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.capture: _Capture | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.capture is not None:
            self.capture.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")


class Runtime:
    """One loaded function."""

    def __init__(self, load: dict[str, Any]) -> None:
        self.name: str = load["name"]
        self.kind: str = load["kind"]
        self.file: str = load["file"]
        self.settings: dict[str, Any] = load.get("settings") or {}
        self.timeout_secs: float = float(load.get("timeout_secs") or 5.0)
        self.cpu_secs: float = float(load.get("cpu_secs") or self.timeout_secs)
        self.module = types.ModuleType(f"headwater_function_{self.name}")
        self.log_handler = _LogHandler()
        root = logging.getLogger()
        root.handlers[:] = [self.log_handler]
        root.setLevel(logging.INFO)
        signal.signal(signal.SIGALRM, _alarm)
        self.watchdog = _Watchdog()

    def load(self, code: str) -> None:
        """Run the function's file; raise with ``file:line`` when it cannot be used."""
        namespace = self.module.__dict__
        namespace.update(
            __file__=self.file,
            analytics=api.analytics,
            fetch=api.fetch,
            **{name: cls for name, cls in api.ERRORS.items()},
        )
        compiled = compile(code, self.file, "exec")
        # tracebacks show the code's lines without reading the file (which the unprivileged
        # user may not be able to read)
        linecache.cache[self.file] = (len(code), None, code.splitlines(True), self.file)
        sys.modules[self.module.__name__] = self.module
        logs: list[str] = []
        self._run(lambda: exec(compiled, namespace), logs)
        missing = self.missing_handlers()
        if missing:
            raise MissingHandler(missing)

    def missing_handlers(self) -> str | None:
        if self.kind == "source":
            if not callable(self.module.__dict__.get("on_request")):
                return "a source function defines on_request(request, settings)"
            return None
        names = [*HANDLERS.values(), "on_batch"]
        if not any(callable(self.module.__dict__.get(n)) for n in names):
            return f"a {self.kind} function defines at least one of {', '.join(names)}"
        return None

    def handler(self, name: str) -> Callable[..., Any] | None:
        found = self.module.__dict__.get(name)
        return found if callable(found) else None

    # ------------------------------------------------------------------ calls

    def events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        logs: list[str] = []
        started = time.perf_counter()
        # an insert function may change the events in place: their JSON from before says
        # what it did (and spares the engine the unchanged ones)
        before = [orjson.dumps(e) for e in events] if self.kind == "insert" else []
        batch = self.handler("on_batch")
        singles = all(self.handler(HANDLERS.get(str(e.get("type")), "")) for e in events)
        if batch is not None and (len(events) > 1 or not singles):
            results = self._batch(batch, events, logs)
        else:
            results = [self._one(event, logs) for event in events]
        answer: dict[str, Any] = {"results": results, "logs": logs}
        if self.kind == "insert":
            answer = Returned(results, before).answer(logs)
        answer["ms"] = (time.perf_counter() - started) * 1000
        return answer

    def _one(self, event: dict[str, Any], logs: list[str]) -> dict[str, Any]:
        kind = str(event.get("type"))
        name = HANDLERS.get(kind)
        handler = self.handler(name) if name else None
        if handler is None:
            message = f"function {self.name} has no {name or 'handler'} for {kind} events"
            if self.kind == "insert":
                return {"s": "skip", "m": message}
            return {"s": "err", "k": "EventNotSupported", "m": message}
        return self._call(lambda: handler(event, self.settings), logs)

    def _batch(
        self, handler: Callable[..., Any], events: list[dict[str, Any]], logs: list[str]
    ) -> list[dict[str, Any]]:
        """``on_batch(events, settings)``: a list aligned with the events says each one's
        fate (Segment's ``{"status": 200}`` items; an insert function's changed events or
        None); an error raised says it for all."""
        result = self._call(lambda: handler(events, self.settings), logs)
        if result["s"] != "ok":
            return [result] * len(events)
        value = result["v"]
        if value is None and self.kind != "insert":
            return [{"s": "ok", "v": None}] * len(events)
        if not isinstance(value, list) or len(value) != len(events):
            error = {"s": "err", "k": "Exception",
                     "m": f"on_batch must return a list of {len(events)} items, one per event "
                     f"(got {type(value).__name__})"}  # fmt: skip
            return [error] * len(events)
        return [self._batch_item(item) for item in value]

    def _batch_item(self, item: Any) -> dict[str, Any]:
        if self.kind == "insert":
            return {"s": "ok", "v": item}
        status = item.get("status", 200) if isinstance(item, dict) else 200
        message = str(item.get("errormessage", "")) if isinstance(item, dict) else ""
        if isinstance(status, int) and 200 <= status < 300:
            return {"s": "ok", "v": None}
        kind = "RetryError" if status == 429 or (isinstance(status, int) and status >= 500) else (
            "ValidationError")  # fmt: skip
        return {"s": "err", "k": kind, "m": f"{status}: {message}".strip(": ")}

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        logs: list[str] = []
        started = time.perf_counter()
        handler = self.handler("on_request")
        req = api.Request(request["method"], request["url"], request["headers"],
                          bytes.fromhex(request["body"]))  # fmt: skip
        api.analytics.take()
        assert handler is not None  # checked at load
        result = self._call(lambda: handler(req, self.settings), logs)
        emitted = api.analytics.take()
        value = result.pop("v", None) if result["s"] == "ok" else None
        if isinstance(value, dict):
            emitted.append(value)
        elif isinstance(value, list):
            emitted += [v for v in value if isinstance(v, dict)]
        ms = (time.perf_counter() - started) * 1000
        return {"results": [result], "emitted": emitted, "logs": logs, "ms": ms}

    def _call(self, fn: Callable[[], Any], logs: list[str]) -> dict[str, Any]:
        try:
            value = self._run(fn, logs)
        except FunctionTimeout:
            return {
                "s": "err",
                "k": "Timeout",
                "m": f"function {self.name} ran past its {self.timeout_secs:g} s limit",
            }
        except api.FunctionError as exc:
            return {"s": "err", "k": type(exc).__name__ if type(exc).__name__ in api.ERRORS
                    else _base_error(exc), "m": str(exc) or type(exc).__name__}  # fmt: skip
        except SystemExit as exc:
            message = f"the function called sys.exit({exc.code!r})"
            return {"s": "err", "k": "Exception", "m": message, "tb": _traceback()}
        except BaseException as exc:
            return {"s": "err", "k": "Exception", "m": f"{type(exc).__name__}: {exc}",
                    "tb": _traceback()}  # fmt: skip
        return {"s": "ok", "v": value}

    def _run(self, fn: Callable[[], Any], logs: list[str]) -> Any:
        capture = _Capture(logs)
        self.log_handler.capture = capture
        sys.stdout = sys.stderr = capture
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        with _suppress():
            resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used + self.cpu_secs) + 1, hard))
        signal.setitimer(signal.ITIMER_REAL, self.timeout_secs)
        self.watchdog.arm(self.timeout_secs)
        try:
            return fn()
        finally:
            self.watchdog.disarm()
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            self.log_handler.capture = None


class Returned:
    """An insert function's answer for a batch, compact because it runs for every event:
    ``results`` holds ``0`` for an event that came back unchanged, ``k`` ≥ 1 for one that
    changed (its JSON is the next ``lens`` bytes of the frame's tail; what changed is
    ``changes[k - 1]``, for the trace), and a result dict for anything else (an error, a
    skip, ``None`` or a value that is not an event).

    What changed is worked out once per kind of change: a batch's events are usually changed
    alike (a property added to each), so the previous event's change is tried first — undone
    on a copy of the returned event, it must give the event from before, byte for byte —
    and only when it does not fit are the two events compared path by path."""

    def __init__(self, results: list[dict[str, Any]], before: list[bytes]) -> None:
        self.compact: list[int | dict[str, Any]] = []
        self.texts: list[bytes] = []
        self.lens: list[int] = []
        self.changes: list[list[str]] = []
        self._index: dict[tuple[Change, ...], int] = {}
        self._last: tuple[tuple[Change, ...], int] | None = None
        for result, old in zip(results, before, strict=True):
            self.compact.append(self._one(result, old))

    def answer(self, logs: list[str]) -> dict[str, Any]:
        return {"results": self.compact, "logs": logs, "lens": self.lens,
                "changes": self.changes, "tail": b"".join(self.texts)}  # fmt: skip

    def _one(self, result: dict[str, Any], before: bytes) -> int | dict[str, Any]:
        value = result.get("v")
        if result.get("s") != "ok" or not isinstance(value, dict):
            return result
        try:
            encoded = orjson.dumps(value, default=str)
        except TypeError as exc:  # e.g. a key that is not a string
            return {"s": "err", "k": "Exception",
                    "m": f"the returned event cannot be written as JSON: {exc}"}  # fmt: skip
        if encoded == before:
            return 0
        self.texts.append(encoded)
        self.lens.append(len(encoded))
        if self._last is not None and undoes(self._last[0], value, before):
            return self._last[1]
        found = tuple(diff(orjson.loads(before), value))
        k = self._index.get(found)
        if k is None:
            self.changes.append([describe(c) for c in found])
            k = self._index[found] = len(self.changes)
        self._last = (found, k)
        return k


MAX_CHANGES = 10
Change = tuple[tuple[str, ...], str]
"""A path in the event and what happened there: ``added``, ``removed`` or ``changed``."""


def describe(change: Change) -> str:
    path, what = change
    return f"{'.'.join(path)} {what}" if path else f"the event {what}"


def diff(old: Any, new: Any, path: tuple[str, ...] = (), found: list[Change] | None = None
         ) -> list[Change]:  # fmt: skip
    """What differs between two events, as paths and what happened there (``properties.email``
    removed, ``properties.plan`` changed, ``context.ip`` added; at most :data:`MAX_CHANGES`).
    Equal subtrees are skipped at C speed."""
    found = [] if found is None else found
    if not (isinstance(old, dict) and isinstance(new, dict)):
        found.append((path, "changed"))
        return found
    removed = 0
    for key, value in old.items():
        if key not in new:
            removed += 1
            found.append(((*path, key), "removed"))
        elif new[key] != value:
            diff(value, new[key], (*path, key), found)
        if len(found) >= MAX_CHANGES:
            return found[:MAX_CHANGES]
    if len(new) != len(old) - removed:
        found += [((*path, key), "added") for key in new if key not in old]
    return found[:MAX_CHANGES]


def undoes(change: tuple[Change, ...], new: dict[str, Any], before: bytes) -> bool:
    """Whether ``change`` is all that turned the event of JSON ``before`` into ``new``: undone
    on a copy of ``new`` (only the objects on its paths are copied), it gives ``before``
    again. Exact — anything else that changed makes the two differ."""
    if len(change) >= MAX_CHANGES:
        return False  # cut short: it does not say everything
    old: Any = None
    top = dict(new)
    copies: dict[tuple[str, ...], dict[str, Any]] = {(): top}
    for path, what in change:
        if not path:
            return False
        parent = top
        for depth in range(1, len(path)):
            inner = copies.get(path[:depth])
            if inner is None:
                child = parent.get(path[depth - 1])
                if not isinstance(child, dict):
                    return False
                inner = copies[path[:depth]] = parent[path[depth - 1]] = dict(child)
            parent = inner
        leaf = path[-1]
        if what == "added":
            if leaf not in parent:
                return False
            del parent[leaf]
            continue
        if old is None:
            old = orjson.loads(before)
        value = old
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return False
            value = value[key]
        parent[leaf] = value
    if old is not None:
        return bool(top == old)
    try:
        return orjson.dumps(top, default=str) == before
    except TypeError:
        return False


def _base_error(exc: BaseException) -> str:
    """A subclass of one of the error classes counts as that class."""
    for name, cls in api.ERRORS.items():
        if isinstance(exc, cls):
            return name
    return "Exception"


def _alarm(signum: int, frame: Any) -> None:
    raise FunctionTimeout


def _traceback() -> str:
    """The traceback from the user's frames on (the runtime's own are noise)."""
    kind, exc, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[-8:]),
             *traceback.format_exception_only(kind, exc)]  # fmt: skip
    return "".join(lines)[-4000:]


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], (ValueError, OSError))  # type: ignore[arg-type]


def load_error(file: str, exc: BaseException) -> str:
    """``file:line: what`` for a function that cannot be loaded."""
    if isinstance(exc, SyntaxError):
        return f"{exc.filename or file}:{exc.lineno}: SyntaxError: {exc.msg}"
    if isinstance(exc, MissingHandler):
        return f"{file}:1: no handler: {exc}"
    line = 1
    for entry in traceback.extract_tb(exc.__traceback__):
        if entry.filename == file and entry.lineno:
            line = entry.lineno
    return f"{file}:{line}: {type(exc).__name__}: {exc}"


PRELOADED = ("base64", "binascii", "calendar", "collections", "csv", "dataclasses", "datetime",
             "decimal", "functools", "gzip", "hashlib", "hmac", "html", "itertools", "json",
             "math", "random", "re", "secrets", "string", "textwrap", "typing", "unicodedata",
             "urllib.parse", "uuid", "zlib", "ipaddress", "zoneinfo", "ssl", "http.client",
             "email.utils", "importlib.resources", "encodings.idna", "encodings.latin_1",
             "encodings.ascii", "httpx", "httpcore", "certifi", "h11", "anyio")  # fmt: skip
"""Modules imported before root is given up: the interpreter's own files may be where the
unprivileged user cannot read them (a Python under /root), so a handler's late ``import``
of these still works."""


def drop_privileges(owner: list[int] | None) -> None:
    """Become ``owner`` (uid, gid) for good, with no supplementary groups."""
    if not owner:
        return
    import importlib

    for name in PRELOADED:
        with _suppress_import():
            importlib.import_module(name)
    with _suppress_import():
        api.fetch_client()  # its TLS context reads certifi's bundle: while we can
    os.setgroups([])
    os.setgid(owner[1])
    os.setuid(owner[0])


class _suppress_import:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ImportError)  # type: ignore[arg-type]


def apply_limits(memory_bytes: int | None) -> None:
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames until the pool closes our stdin."""
    first = orjson.loads(_read(inp, HEADER.unpack(_read(inp, HEADER.size))[0]))
    runtime = Runtime(first)
    try:  # before any user code runs, its top level included
        drop_privileges(first.get("run_as"))
    except OSError as exc:
        out.write(frame({"ok": False, "error": f"{runtime.file}: cannot drop privileges: {exc}"}))
        out.flush()
        return
    try:
        apply_limits(first.get("memory_bytes"))
        runtime.load(first["code"])
    except BaseException as exc:
        out.write(frame({"ok": False, "error": load_error(runtime.file, exc)}))
        out.flush()
        return
    out.write(frame({"ok": True, "batch": runtime.handler("on_batch") is not None}))
    out.flush()
    while True:
        try:
            size = HEADER.unpack(_read(inp, HEADER.size))[0]
        except EOFError:
            return
        message = orjson.loads(_read(inp, size))
        if message["op"] == "events":
            answer = runtime.events(message["events"])
        else:
            answer = runtime.request(message["request"])
        tail = answer.pop("tail", b"")  # an insert function's returned events, as JSON
        if tail:
            answer["tail"] = len(tail)
        out.write(frame(answer) + tail)
        out.flush()


def main() -> None:
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # what user code writes to fd 1 must not corrupt the answers
    os.dup2(devnull, 2)
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
