"""``headwater tail | trace | diagnose``: "where did my event go?" from a terminal.

They ask a running server (``--url`` or ``HEADWATER_URL``, default
``http://127.0.0.1:8080``) and authenticate with the admin token in
``HEADWATER_ADMIN_TOKEN``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.markup import escape

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, err, fail, out
from headwater.observe.debugger import KEEP
from headwater.state.admin_token import reset_admin_token

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _time(iso: str | None) -> str:
    return (iso or "")[11:23]


def _entry_line(entry: dict[str, Any]) -> str:
    at = _time(entry.get("at"))
    if entry["kind"] == "rejected":
        r = entry["rejection"]
        return f"{at}  REJECTED  {r['status']} {r['code']:20} {r['scope']}  {r['message']}"
    mark = "DUPLICATE " if entry["kind"] == "duplicate" else ""
    return (
        f"{at}  {mark}{entry.get('type', '?'):8} {entry.get('name') or '':30} "
        f"{entry.get('messageId')}"
    )


def tail(
    source: Annotated[str, typer.Option("--source", "-s", help="The source to follow.")],
    url: UrlOption = DEFAULT_URL,
    raw: Annotated[bool, typer.Option(help="Print each event's JSON.")] = False,
    history: Annotated[int, typer.Option(help="Show this many recent entries first.")] = 10,
) -> None:
    """Follow a source's events live, and the requests refused (the debugger)."""
    api = Api(url)
    limit = min(KEEP, max(1, history))  # the debugger keeps no more than that
    recent = api.get(f"/api/v1/sources/{source}/debugger", limit=limit)["entries"]
    for entry in reversed(recent[:history]):
        _print_entry(entry, raw)
    err.print(f"[dim]following {escape(source)} (Ctrl-C to stop)[/]")
    try:
        for kind, data in api.stream(f"/api/v1/sources/{source}/debugger/stream"):
            if kind == "entry":
                _print_entry(orjson.loads(data), raw)
            elif kind == "missed":
                err.print(f"[yellow]… {data} entries skipped (the terminal was too slow)[/]")
    except KeyboardInterrupt:
        pass


def _print_entry(entry: dict[str, Any], raw: bool) -> None:
    out.print(_entry_line(entry), highlight=False, markup=False)
    if raw and entry.get("event") is not None:
        out.print(orjson.dumps(entry["event"], option=orjson.OPT_INDENT_2).decode(),
                  highlight=False, markup=False)  # fmt: skip


def trace(
    message_id: Annotated[str, typer.Argument(help="The event's messageId.")],
    url: UrlOption = DEFAULT_URL,
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole trace as JSON.")] = (
        False
    ),
) -> None:
    """Where did this event go: received when and from where, what each stage decided,
    and its state with each destination."""
    body = Api(url).get(f"/api/v1/events/{quote(message_id, safe='')}")  # ids may hold / ? #
    if json_out:
        out.print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode(), highlight=False,
                  markup=False)  # fmt: skip
        return
    event = body["event"]
    what = event.get("event") or event.get("name") or ""
    # messageIds and event names are the sender's text: brackets in them are not markup
    label = escape(f"{body['type']} {what}")
    out.print(f"[bold]{escape(body['messageId'])}[/]  {label}", highlight=False)
    out.print(f"  received {body['receivedAt']} from source {body['source']} "
              f"(log offset {body['offset']})", highlight=False, markup=False)  # fmt: skip
    for stage in body.get("stages", [])[1:]:
        out.print(f"  {stage['stage']}: {stage['decision']} — {stage['detail']}",
                  highlight=False, markup=False)  # fmt: skip
    if not body["destinations"]:
        out.print("  no destination is connected to this source", highlight=False)
    for dest in body["destinations"]:
        line = f"  → {dest['destination']}: {dest['state'].upper()}"
        if dest.get("attempts"):
            line += f" after {dest['attempts']} attempt(s)"
        if dest.get("status"):
            line += f", HTTP {dest['status']}"
        out.print(line, highlight=False, markup=False)
        if dest.get("reason"):
            out.print(f"      {dest['reason']}", highlight=False, markup=False)
        shaping = dest.get("filters")
        if shaping and shaping["decision"] != "unchanged":
            out.print(f"      filters and transformations (today's): {shaping['decision']} — "
                      f"{shaping['detail']}", highlight=False, markup=False)  # fmt: skip
        if dest.get("nextAttemptMs"):
            out.print(f"      next attempt at {_ms(dest['nextAttemptMs'])}", highlight=False)
        for row in dest.get("history", []):
            status = f" HTTP {row['status']}" if row.get("status") else ""
            took = f" in {row['durationMs']:.0f} ms" if row.get("durationMs") else ""
            out.print(f"      {_ms(row['atMs'])}  {row['state']}{status}{took}",
                      highlight=False, markup=False)  # fmt: skip


def _ms(value: int) -> str:
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def diagnose(
    url: UrlOption = DEFAULT_URL,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    since: Annotated[str, typer.Option(help="How far back: 15m, 1h, 1d, 7d.")] = "1h",
    json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = (False),
) -> None:
    """Run the incident playbook: the most likely causes of missing events, with evidence
    and the fix. Exits 1 when something needs attention."""
    params: dict[str, Any] = {"since": since}
    if source:
        params["source"] = source
    if destination:
        params["destination"] = destination
    body = Api(url).get("/api/v1/diagnose", **params)
    if json_out:
        out.print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode(), highlight=False,
                  markup=False)  # fmt: skip
    else:
        _print_findings(body)
    if not body["healthy"]:
        raise typer.Exit(1)


def _print_findings(body: dict[str, Any]) -> None:
    window = body["window"]
    findings = body["findings"]
    if not findings:
        out.print(f"Nothing wrong found since {window['since']}: events arrive and are "
                  "delivered.", highlight=False)  # fmt: skip
        return
    for finding in findings:
        style = SEVERITY_STYLE.get(finding["severity"], "")
        out.print(f"[{style}]{finding['severity'].upper()}[/] {escape(finding['title'])}",
                  highlight=False)  # fmt: skip
        out.print(f"  evidence: {finding['detail']}", highlight=False, markup=False)
        ids = finding["evidence"].get("sampleMessageIds")
        if ids:
            out.print(f"  sample messageIds: {', '.join(ids)}", highlight=False, markup=False)
        out.print(f"  fix: {finding['fix']}", highlight=False, markup=False)


def admin_token(
    data_dir: Annotated[
        Path, typer.Option(help="The server's data directory.", envvar="HEADWATER_DATA_DIR")
    ] = Path(".headwater"),
    reset: Annotated[bool, typer.Option("--reset", help="Replace the admin token.")] = False,
) -> None:
    """Make a new admin token (the old one stops working once the server restarts)."""
    if not reset:
        raise fail("the admin token is kept only as a hash; use --reset to make a new one", 2)
    token = reset_admin_token(data_dir)
    out.print(f"New admin token: [bold]{token}[/]\n  restart the server to use it; it is "
              "shown only this once", highlight=False)  # fmt: skip
