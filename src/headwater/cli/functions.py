"""``headwater functions list | url | logs | reload | test``: functions, from a terminal.

``list``, ``url``, ``logs`` and ``reload`` ask a running server's management API (``--url`` /
``HEADWATER_URL``, the admin token in ``HEADWATER_ADMIN_TOKEN``). ``url`` prints a source
function's URL on one line, to paste into the webhook settings of Stripe, Typeform, ...; it
holds the function's secret. ``test`` needs no server: it runs the function of the workspace
file on one event (or one request body, for a source function) in a worker process with the
function's limits, as the pipeline would, and prints what it answered and logged.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.common import (
    DEFAULT_CONFIG,
    DEFAULT_URL,
    Api,
    ConfigOption,
    UrlOption,
    err,
    fail,
    out,
)
from headwater.config.workspace import FunctionConfig, load_workspace
from headwater.errors import ConfigError
from headwater.functions.host import spec_of
from headwater.functions.pool import CallResult, FunctionPool, LoadFailed

functions_app = typer.Typer(help="Functions: what they did, their logs, a source function's "
                            "URL; reload them.", no_args_is_help=True)  # fmt: skip

NameArg = Annotated[str, typer.Argument(help="The function (functions: in the workspace).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the JSON document.")]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


@functions_app.command("list")
def list_functions(url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> None:
    """Every function: kind, invocations, errors, p50/p99 duration."""
    doc = Api(url).get("/api/v1/functions")
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    table = Table("function", "kind", "where", "invocations", "errors", "p50", "p99", "state")
    for f in doc["functions"]:
        where = f.get("source") or ", ".join(f.get("sources") or []) or f.get("destination")
        state = "not running" if not f["running"] else (
            f"load error: {f['loadError']}" if f.get("loadError") else "running")  # fmt: skip
        table.add_row(escape(f["name"]), f["kind"], escape(str(where or "")),
                      str(f.get("invocations", 0)), str(f.get("errors", 0)), _ms(f.get("p50Ms")),
                      _ms(f.get("p99Ms")), escape(state))  # fmt: skip
    out.print(table)


@functions_app.command("url")
def url_of(name: NameArg, url: UrlOption = DEFAULT_URL) -> None:
    """A source function's URL, on one line (it holds the function's secret)."""
    doc = Api(url).get(f"/api/v1/functions/{quote(name)}/url")
    print(doc["url"])


@functions_app.command("logs")
def logs(name: NameArg, url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> None:
    """A function's last log lines (print and logging) and its sampled failures."""
    doc: dict[str, Any] = Api(url).get(f"/api/v1/functions/{quote(name)}")
    if json:
        out.print_json(orjson.dumps({k: doc.get(k, []) for k in ("logs", "failures")}).decode())
        return
    if not doc["running"]:
        out.print(f"function {escape(name)} has not run since the server started")
    for line in doc.get("logs", []):
        out.print(f"[dim]{_when(line['atMs'])}[/] {escape(line['line'])}")
    for failure in doc.get("failures", []):
        out.print(f"[red]{_when(failure['atMs'])} {escape(failure['kind'])}[/]: "
                  f"{escape(failure['message'])}")  # fmt: skip
        if failure.get("traceback"):
            out.print(escape(failure["traceback"].rstrip()))


@functions_app.command("reload")
def reload(url: UrlOption = DEFAULT_URL) -> None:
    """Reload every function's code, settings and limits now (each process does within a
    second); the server re-reads its workspace file for the settings."""
    doc = Api(url).post("/api/v1/functions/reload")
    out.print(f"reload requested for {', '.join(doc['requested']) or 'no function'}")
    for line in doc.get("restart_needed") or []:
        err.print(f"[bold yellow]Needs a restart:[/] {escape(line)}", highlight=False)


@functions_app.command("test")
def run_test(
    name: NameArg,
    event: Annotated[Path, typer.Option("--event", "-e", help="The event (a JSON file); for "
                                        "a source function, the request body.")],
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="A request "
                                                     "header of a source function, 'Name: "
                                                     "value' (repeatable).")] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    json: JsonOption = False,
) -> None:  # fmt: skip
    """Run one function of the workspace file on one event; its answer and its logs. Exits 1
    when it raised."""
    try:
        workspace = load_workspace(config)
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc
    found = {f.name: f for f in workspace.functions}
    function = found.get(name)
    if function is None:
        raise fail(f"no function is named {name!r} in {config}; the functions are: "
                   f"{', '.join(found) or 'none'}", 2)  # fmt: skip
    try:
        body = event.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {event}: {exc.strerror}", 2) from exc
    if function.kind == "source":
        headers = dict(_header(h) for h in header or [])
        request = {"method": "POST", "url": f"http://localhost/v1/functions/{name}/test",
                   "headers": headers, "body": body.hex()}  # fmt: skip
        result = _run(function, lambda pool: pool.call_request(request))
    else:
        try:
            sample = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise fail(f"{event} is not JSON: {exc}", 2) from exc
        if not isinstance(sample, dict):
            raise fail(f"{event} must hold one event (a JSON object)", 2)
        result = _run(function, lambda pool: pool.call_events([sample]))
    answer = result.results[0] if result.results else {"s": "ok"}
    if answer == 0:  # an insert function returned the event unchanged
        answer = {"s": "ok", "v": orjson.loads(body), "changes": []}
    elif type(answer) is int:  # ... or changed: its JSON, and what changed
        answer = {"s": "ok", "v": orjson.loads(next(result.returned())),
                  "changes": result.changes[answer - 1]}  # fmt: skip
    doc = {"function": name, "kind": function.kind, "result": answer, "emitted": result.emitted,
           "logs": "".join(result.logs).splitlines(), "ms": round(result.ms, 2)}  # fmt: skip
    if json:
        out.print_json(orjson.dumps(doc).decode())
    else:
        _show(doc)
    if answer.get("s") == "err":
        raise typer.Exit(1)


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise fail(f"--header {text!r} is not 'Name: value'", 2)
    return key.strip(), value.strip()


def _run(function: FunctionConfig, call: Any) -> CallResult:
    async def run() -> CallResult:
        pool = FunctionPool(spec_of(function, os.environ))
        try:
            await pool.start()
        except LoadFailed as exc:
            raise fail(f"function {function.name} cannot be loaded: {exc}", 2) from exc
        try:
            return await call(pool)  # type: ignore[no-any-return]
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except ConfigError as exc:  # a setting's environment variable is missing
        raise fail(str(exc), 2) from exc


def _show(doc: dict[str, Any]) -> None:
    answer = doc["result"]
    if answer.get("s") == "err":
        out.print(f"[red]{escape(str(answer.get('k')))}[/]: {escape(str(answer.get('m')))}")
        if answer.get("tb"):
            out.print(escape(str(answer["tb"]).rstrip()))
    elif doc["kind"] == "insert":
        value = answer.get("v")
        if value is None:
            out.print("dropped (returned None)")
        else:
            changed = answer.get("changes") or []
            out.print(f"returned (changed: {', '.join(changed)}):" if changed else
                      "returned unchanged:")  # fmt: skip
            out.print_json(orjson.dumps(value).decode())
    else:
        out.print(f"[green]ok[/] in {doc['ms']} ms")
    for emitted in doc["emitted"]:
        out.print_json(orjson.dumps(emitted).decode())
    for line in doc["logs"]:
        out.print(f"[dim]log[/] {escape(line)}")
