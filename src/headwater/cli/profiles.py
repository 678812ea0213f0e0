"""``headwater profiles get | merges | delete``: one profile of a space, from a terminal.

They ask a running server's Profile API (``--url`` / ``HEADWATER_URL``) with the admin token
in ``HEADWATER_ADMIN_TOKEN``. A profile is named ``<type>:<value>`` (``user_id:u-42``,
``email:jane@example.com``) or by its ``segment_id`` (``use_...``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, fail, out

profiles_app = typer.Typer(help="Profiles of a Unify space: look one up, see its merges, "
                           "delete it.", no_args_is_help=True)  # fmt: skip

SpaceOption = Annotated[str, typer.Option("--space", "-s", help="The space (spaces: in the "
                                          "workspace).", envvar="HEADWATER_SPACE")]  # fmt: skip
ProfileArg = Annotated[str, typer.Argument(help="user_id:u-42, email:..., or a segment_id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the JSON document.")]


def _call(url: str, method: str, space: str, profile: str, what: str = "") -> dict[str, Any]:
    api = Api(url)
    path = f"/v1/spaces/{quote(space)}/collections/users/profiles/{quote(profile, safe=':')}"
    try:
        response = httpx.request(method, f"{api.url}{path}{what}", headers=api.headers,
                                 timeout=60)  # fmt: skip
    except httpx.HTTPError as exc:
        raise fail(f"could not reach Headwater at {api.url}: {exc}") from exc
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if not response.is_success:
        error = body.get("error") or {}
        message = error.get("message") or f"HTTP {response.status_code}"
        if response.status_code == 404 and error.get("message") == "Profile was not found.":
            message = f"no profile {profile!r} in space {space!r}"
        raise fail(message)
    return body


@profiles_app.command("get")
def get(profile: ProfileArg, space: SpaceOption = "main", url: UrlOption = DEFAULT_URL,
        json: JsonOption = False) -> None:  # fmt: skip
    """A profile: identifiers, traits (computed ones marked), recent events, merges."""
    doc = _call(url, "GET", space, profile)
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    meta = doc["metadata"]
    out.print(f"[bold]{doc['segment_id']}[/]  space {escape(space)}  created "
              f"{meta['created_at']}  updated {meta['updated_at']}")  # fmt: skip
    ids = Table("type", "value", "source", "first seen", title="identifiers")
    for e in doc["external_ids"]:
        ids.add_row(e["type"], escape(e["id"]), escape(e["source_id"] or ""), e["created_at"])
    out.print(ids)
    traits = Table("trait", "value", "source", "updated", title="traits")
    computed = set(doc["computed_traits"])
    for name, t in sorted(doc["traits"].items()):
        label = f"{name} (computed)" if name in computed else name
        traits.add_row(escape(label), escape(orjson.dumps(t["value"]).decode()),
                       escape(t["source_id"] or ""), t["updated_at"])  # fmt: skip
    out.print(traits)
    out.print(f"{len(doc['events'])} recent events; {len(doc['merges'])} history entries "
              f"(`headwater profiles merges {escape(profile)}`)")  # fmt: skip


@profiles_app.command("merges")
def merges(profile: ProfileArg, space: SpaceOption = "main", url: UrlOption = DEFAULT_URL,
           json: JsonOption = False) -> None:  # fmt: skip
    """The merge history: creations, merges with the identifiers that linked them, refusals."""
    doc = _call(url, "GET", space, profile, "/merges")
    if json:
        out.print_json(orjson.dumps(doc).decode())
        return
    for entry in doc["data"]:
        kind = entry["kind"]
        if kind == "merged":
            what = (f"merged {entry['other_id']} into {entry['segment_id']}, linked by "
                    f"{', '.join(entry.get('identifiers', []))}")  # fmt: skip
        elif kind == "created":
            what = f"created {entry['segment_id']} with {', '.join(entry.get('identifiers', []))}"
        else:
            what = f"{kind}: {entry.get('dropped')} kept off — {entry.get('reason')}"
        out.print(f"{entry['at']}  {escape(what)}  (messageId {escape(entry['message_id'])})")


@profiles_app.command("delete")
def delete(
    profile: ProfileArg,
    space: SpaceOption = "main",
    url: UrlOption = DEFAULT_URL,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete a profile with its identifiers and traits (its events stay in the log)."""
    if not yes:
        typer.confirm(f"delete profile {profile} of space {space}?", abort=True)
    doc = _call(url, "DELETE", space, profile)
    out.print(f"deleted {doc['deleted']} ({doc['identifiers']} identifiers); its events stay "
              "in the log until they age out")  # fmt: skip
