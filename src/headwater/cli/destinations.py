"""``headwater destinations test NAME``: send one event through a destination and show the
exact request and the vendor's answer.

It asks the running server (``--url`` / ``HEADWATER_URL``, admin token in
``HEADWATER_ADMIN_TOKEN``), which uses the destination's real mapping and client; the test
event is not written to the log or the delivery ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, fail, out

destinations_app = typer.Typer(help="Destinations: send a test event.", no_args_is_help=True)

OK_RESULTS = frozenset({"delivered", "validated", "not_sent"})


@destinations_app.command("test")
def run_destination_test(
    name: Annotated[str, typer.Argument(help="The destination.")],
    event: Annotated[
        Path | None,
        typer.Option(
            help="The event to send (JSON file); default: a sample of a type the destination sends."
        ),
    ] = None,
    send: Annotated[
        bool,
        typer.Option(
            "--send",
            help="Deliver it for real (default: a dry run, or the vendor's "
            "validation endpoint where it has one).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """One event through the destination's filters, transformations and mapping; the
    request and, when sent, the answer. Exits 1 when the destination refuses it or a
    filter drops it."""
    body: dict[str, Any] = {"send": send}
    if event is not None:
        sample = _event_file(event)
        if not isinstance(sample, dict):
            raise fail(f"{event} must hold one event (a JSON object)", 2)
        body["event"] = sample
    doc = Api(url).post(f"/api/v1/destinations/{quote(name, safe='')}/test", body)
    if json_out:
        out.print(_json(doc), highlight=False, markup=False)
    else:
        print_test(doc)
    if doc["outcome"]["result"] not in OK_RESULTS:
        raise typer.Exit(1)


def _event_file(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc}", 2) from exc
    except orjson.JSONDecodeError as exc:
        raise fail(f"{path} is not JSON: {exc}", 2) from exc


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _say(text: str) -> None:
    out.print(text, highlight=False, markup=False)  # the server's and the vendor's text


def print_test(doc: dict[str, Any]) -> None:
    what = "a sample " if doc.get("sample") else ""
    _say(f"Destination {doc['destination']} ({doc['type']}), {what}{doc['input']['type']} event "
         f"{doc['input'].get('messageId')}")  # fmt: skip
    filters = doc.get("filters") or {}
    _say(f"  filters: {filters.get('decision')} — {filters.get('detail')}")
    shaped = doc.get("transformations")
    if shaped and shaped["decision"] != "unchanged":
        _say(f"  transformations: {shaped['detail']}")
    for action in (doc.get("mapping") or {}).get("actions", []):
        line = f"  action {action['name']} ({action['trigger']}): {action['decision']}"
        _say(line + (f" — {action['reason']}" if action.get("reason") else ""))
    for i, exchange in enumerate(doc.get("requests") or [], 1):
        _print_exchange(i, exchange)
    for message in doc.get("messages") or []:
        _say(f"  vendor says: {message}")
    outcome = doc["outcome"]
    status = f" (HTTP {outcome['status']})" if outcome.get("status") else ""
    reason = f": {outcome['reason']}" if outcome.get("reason") else ""
    _say(f"{outcome['result'].upper()}{status}{reason}")
    if outcome.get("detail"):
        _say(f"  {outcome['detail']}")
    _say(f"Note: {doc['note']}.")


def _print_exchange(index: int, exchange: dict[str, Any]) -> None:
    request = exchange.get("request") or {}
    _say(f"  request {index}: {request.get('method', '')} {request.get('url', '')}".rstrip())
    for header, value in (request.get("headers") or {}).items():
        _say(f"    {header}: {value}")
    if request.get("body"):
        _say(f"    {request['body']}")
    response = exchange.get("response")
    if response is None:
        _say("  not sent")
    elif response.get("status") is not None:
        _say(f"  answer: HTTP {response['status']}")
        if response.get("body"):
            _say(f"    {response['body']}")
    else:
        _say(f"  no answer: {response.get('error')} — {response.get('message')}")
