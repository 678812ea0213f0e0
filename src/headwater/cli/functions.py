"""``headwater functions list | url | logs | reload``: the functions of a running server.

They ask its management API (``--url`` / ``HEADWATER_URL``, the admin token in
``HEADWATER_ADMIN_TOKEN``). ``url`` prints a source function's URL on one line, to paste
into the webhook settings of Stripe, Typeform, ...; it holds the function's secret.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, out

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
    """Reload every function's file now (each process does within a second)."""
    doc = Api(url).post("/api/v1/functions/reload")
    out.print(f"reload requested for {', '.join(doc['requested']) or 'no function'}")
