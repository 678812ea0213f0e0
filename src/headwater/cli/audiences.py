"""``headwater audiences list | show | why``: a space's audiences from a terminal, asking a
running server's management API (``--url`` / ``HEADWATER_URL``, the token in
``HEADWATER_ADMIN_TOKEN``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, out
from headwater.cli.profiles import JsonOption, ProfileArg, SpaceOption

audiences_app = typer.Typer(help="Audiences of a Unify space: sizes, members, why a profile "
                            "is in one or not.", no_args_is_help=True)  # fmt: skip
KeyArg = Annotated[str, typer.Argument(help="The audience's key.")]


def _base(space: str) -> str:
    return f"/api/v1/spaces/{quote(space)}/audiences"


@audiences_app.command("list")
def list_audiences(space: SpaceOption = "main", url: UrlOption = DEFAULT_URL,
                   json: JsonOption = False) -> None:  # fmt: skip
    """Each audience: its size and its entries and exits of the last hour."""
    doc = Api(url).get(_base(space))
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    table = Table("audience", "size", "entered 1h", "exited 1h", "destinations", "state")
    for a in doc["audiences"]:
        table.add_row(escape(a["key"]), str(a["size"]), str(a["last_hour"]["entered"]),
                      str(a["last_hour"]["exited"]),
                      ", ".join(d["name"] for d in a["destinations"]) or "-",
                      "enabled" if a["enabled"] else "disabled")  # fmt: skip
    out.print(table)


@audiences_app.command("show")
def show(key: KeyArg, space: SpaceOption = "main", url: UrlOption = DEFAULT_URL,
         json: JsonOption = False) -> None:  # fmt: skip
    """One audience: size, flow, the first members and the latest entries and exits."""
    doc = Api(url).get(f"{_base(space)}/{quote(key)}")
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    hour, day = doc["last_hour"], doc["last_day"]
    out.print(f"[bold]{escape(doc['key'])}[/]  {doc['size']} members; last hour "
              f"+{hour['entered']} −{hour['exited']}, last day +{day['entered']} "
              f"−{day['exited']}", highlight=False)  # fmt: skip
    for change in doc["changes"]:
        verb = "entered" if change["entered"] else "exited "
        cause = change["message_id"] or "a window moved"
        out.print(f"  {change['at']}  {verb}  {change['segment_id']}  ({escape(cause)})",
                  highlight=False)  # fmt: skip


@audiences_app.command("why")
def why(key: KeyArg, profile: ProfileArg, space: SpaceOption = "main",
        url: UrlOption = DEFAULT_URL, json: JsonOption = False) -> None:  # fmt: skip
    """Whether a profile is in the audience, condition by condition."""
    doc = Api(url).get(f"{_base(space)}/{quote(key)}/why/{quote(profile, safe=':')}")
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    state = f"a member since {doc['since']}" if doc["member"] else "not a member"
    out.print(f"{escape(profile)} ({doc['segment_id']}) is {state} of {escape(key)}",
              highlight=False)  # fmt: skip
    _tree(doc["why"], 1)


def _tree(verdict: dict[str, Any], depth: int) -> None:
    mark = "[green]✓[/]" if verdict["holds"] else "[red]✗[/]"
    out.print(f"{'  ' * depth}{mark} {verdict['condition']}: {escape(verdict['says'])}",
              highlight=False)  # fmt: skip
    for part in verdict.get("parts", []):
        _tree(part, depth + 1)


DestinationArg = Annotated[str, typer.Argument(help="One of the audience's destinations.")]


@audiences_app.command("pause")
def pause(key: KeyArg, destination: DestinationArg, space: SpaceOption = "main",
          url: UrlOption = DEFAULT_URL) -> None:  # fmt: skip
    """Stop sending the audience's entries and exits to the destination (membership keeps
    being computed)."""
    doc = Api(url).post(f"{_base(space)}/{quote(key)}/destinations/{quote(destination)}/pause")
    out.print(f"the sync of {escape(key)} to {escape(destination)} is paused since "
              f"{doc['paused_since']}", highlight=False)  # fmt: skip


@audiences_app.command("resume")
def resume(key: KeyArg, destination: DestinationArg, space: SpaceOption = "main",
           url: UrlOption = DEFAULT_URL) -> None:  # fmt: skip
    """Send the net changes since the pause (one entry or exit per profile), then resume."""
    doc = Api(url).post(f"{_base(space)}/{quote(key)}/destinations/{quote(destination)}/resume")
    out.print(f"resumed {escape(key)} → {escape(destination)}: {doc['messages']} message(s) "
              f"for {doc['profiles']} profile(s) whose membership changed",
              highlight=False)  # fmt: skip
