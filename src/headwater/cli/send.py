"""``headwater send``: try a running server with one event."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import httpx
import typer

from headwater import __version__
from headwater.cli.common import DEFAULT_URL, err, out

TYPES = ("track", "identify", "page", "screen", "group", "alias")


def _parse_pairs(pairs: list[str], option: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint=option)
        try:
            parsed[name] = json.loads(raw)
        except ValueError:
            parsed[name] = raw
    return parsed


def send(
    write_key: Annotated[
        str,
        typer.Option(
            "--write-key", "-k", help="A source's write key.", envvar="HEADWATER_WRITE_KEY"
        ),
    ],
    type_: Annotated[
        str, typer.Option("--type", "-t", help=f"One of {', '.join(TYPES)}.")
    ] = "track",
    event: Annotated[str, typer.Option("--event", "-e", help="Event name (track).")] = "Test Event",
    name: Annotated[str | None, typer.Option(help="Page or screen name.")] = None,
    user_id: Annotated[str | None, typer.Option("--user-id", "-u")] = None,
    anonymous_id: Annotated[str | None, typer.Option("--anonymous-id")] = None,
    group_id: Annotated[str | None, typer.Option("--group-id", help="Group id (group).")] = None,
    previous_id: Annotated[
        str | None, typer.Option("--previous-id", help="Old id (alias).")
    ] = None,
    prop: Annotated[
        list[str], typer.Option("--property", "-p", help="NAME=VALUE; VALUE may be JSON.")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
    trait: Annotated[
        list[str], typer.Option("--trait", help="NAME=VALUE; VALUE may be JSON.")
    ] = [],  # noqa: B006
    url: Annotated[
        str, typer.Option(help="Headwater's URL.", envvar="HEADWATER_URL")
    ] = DEFAULT_URL,
) -> None:
    """Send one test event to a running Headwater and print its answer."""
    if type_ not in TYPES:
        raise typer.BadParameter(f"{type_!r}; use one of {', '.join(TYPES)}", param_hint="--type")
    body: dict[str, Any] = {"messageId": f"cli-{uuid.uuid4()}"}
    if user_id:
        body["userId"] = user_id
    if anonymous_id or not user_id:
        body["anonymousId"] = anonymous_id or f"cli-{uuid.uuid4().hex[:12]}"
    properties = _parse_pairs(prop, "--property")
    traits = _parse_pairs(trait, "--trait")
    if type_ == "track":
        body["event"] = event
    if type_ in ("page", "screen") and name:
        body["name"] = name
    if type_ == "group":
        body["groupId"] = group_id or ""
    if type_ == "alias":
        body["previousId"] = previous_id or ""
    if properties:
        body["properties"] = properties
    if traits:
        body["traits"] = traits
    body["context"] = {"library": {"name": "headwater-cli", "version": __version__}}
    endpoint = f"{url.rstrip('/')}/v1/{type_}"
    try:
        response = httpx.post(endpoint, json=body, auth=(write_key, ""), timeout=10)
    except httpx.HTTPError as exc:
        err.print(f"[bold red]Could not reach Headwater at {url}:[/] {exc}", highlight=False)
        err.print("Is it running? Start it with `headwater serve` or set --url / HEADWATER_URL.")
        raise typer.Exit(1) from exc
    style = "green" if response.is_success else "red"
    out.print(f"[{style}]{response.status_code}[/] POST {endpoint}", highlight=False)
    out.print(f"messageId: {body['messageId']}", highlight=False)
    out.print(response.text, highlight=False)
    if not response.is_success:
        raise typer.Exit(1)
