"""``headwater plans …`` and ``headwater filters test``: tracking plans and filters.

``plans import`` and ``filters test`` work offline on files; ``plans list``, ``plans
violations`` and ``plans resend-blocked`` ask the running server (``--url`` /
``HEADWATER_URL``, admin token in ``HEADWATER_ADMIN_TOKEN``), which re-checks blocked events
against its current plan and stores the ones that pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from headwater.cli.common import DEFAULT_URL, Api, UrlOption, fail, out
from headwater.config.workspace import load_workspace
from headwater.errors import ConfigError
from headwater.processor.admin import preview
from headwater.processor.protocols.segment_import import segment_plan_yaml

plans_app = typer.Typer(help="Tracking plans: import, list, violations, re-send blocked events.",
                        no_args_is_help=True)  # fmt: skip
filters_app = typer.Typer(help="Destination filters: try them on a sample event.",
                          no_args_is_help=True)  # fmt: skip


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc}", 2) from exc
    except ValueError as exc:
        raise fail(f"{path} is not JSON: {exc}", 2) from exc


@plans_app.command("import")
def import_plan(
    file: Annotated[Path, typer.Argument(help="A tracking plan exported from Segment (JSON).")],
    name: Annotated[str | None, typer.Option(help="The plan's name in Headwater.")] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="A source the plan checks (repeat).")
    ] = None,
) -> None:
    """Print the YAML to add under ``tracking_plans:`` in the workspace file."""
    try:
        text = segment_plan_yaml(_json_file(file), name, source or [], origin=str(file))
    except ConfigError as exc:
        raise fail(str(exc), 1) from exc
    out.print(text, highlight=False, markup=False, end="")


@plans_app.command("list")
def list_plans(url: UrlOption = DEFAULT_URL) -> None:
    """The running server's tracking plans."""
    for plan in Api(url).get("/api/v1/tracking-plans")["trackingPlans"]:
        enforcement = plan["enforcement"]
        out.print(
            f"{plan['name']:24} sources: {', '.join(plan['sources']) or '-'}  rules: "
            f"{plan['rules']}  unplanned events: {enforcement['unplanned_events']}, "
            f"violations: {enforcement['on_violation']}  ({plan['origin']})",
            highlight=False, markup=False,
        )  # fmt: skip


@plans_app.command("violations")
def violations(
    source: Annotated[str, typer.Option("--source", "-s", help="The source.")],
    since: Annotated[str, typer.Option(help="How far back: 1h, 1d, 7d.")] = "1d",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Violations of a source's plan by event and field, with a sample each."""
    body = Api(url).get(f"/api/v1/sources/{source}/violations", window=since)
    out.print(f"{source}: {body['total']} violations since {since} (plan {body['plan']}); "
              f"{body['blockedKept']} blocked events kept", highlight=False)  # fmt: skip
    for event in body["events"]:
        out.print(f"  {event['event_type']} {event['event']!r}: {event['total']}",
                  highlight=False, markup=False)  # fmt: skip
        for field in event["fields"]:
            sample = field["samples"][0] if field["samples"] else None
            got = f" (expected {sample['expected']}, got {sample['got']}; {sample['message_id']})" \
                if sample else ""  # fmt: skip
            out.print(f"    {field['violation_type']:20} {field['field']:30} ×{field['count']}"
                      f"{got}", highlight=False, markup=False)  # fmt: skip


@plans_app.command("resend-blocked")
def resend_blocked(
    source: Annotated[str, typer.Option("--source", "-s", help="The source.")],
    since: Annotated[str, typer.Option(help="How far back: 1h, 1d, 30d.")] = "30d",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Re-check a source's blocked events with the server's current plan; store those that
    pass now (the rest stay blocked)."""
    body = Api(url).post(f"/api/v1/sources/{source}/blocked/resend", since=since)
    out.print(
        f"{body['resent']} re-sent, {body['stillBlocked']} still blocked, {body['refused']} "
        f"refused, {body['alreadyInLog']} already in the log",
        highlight=False,
    )


@filters_app.command("test")
def try_filters(
    destination: Annotated[str, typer.Option("--destination", "-d", help="The destination.")],
    event: Annotated[Path, typer.Option(help="A sample event (JSON file).")],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Workspace YAML file.", envvar="HEADWATER_CONFIG")
    ] = Path("workspace.yaml"),
) -> None:
    """Show what a destination's filters and transformations do to a sample event."""
    try:
        workspace = load_workspace(config)
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc
    dest = workspace.destination(destination)
    if dest is None:
        names = ", ".join(d.name for d in workspace.destinations) or "none"
        raise fail(f"no destination is named {destination!r}; the destinations are: {names}", 2)
    sample = _json_file(event)
    if not isinstance(sample, dict):
        raise fail(f"{event} must hold one event (a JSON object)", 2)
    result = preview(destination, list(dest.filters), list(workspace.transformations), sample)
    for step in result["filters"]:
        state = "matches" if step["matched"] else "does not match"
        label = f' ("{step["name"]}")' if step["name"] else ""
        out.print(f"filter {step['index'] + 1}{label}: {state} — if {step['if']}",
                  highlight=False, markup=False)  # fmt: skip
    if result["decision"] == "dropped":
        out.print(f"DROPPED: {result['reason']}", highlight=False, markup=False)
        raise typer.Exit(0)
    if result["decision"] == "modified":
        for change in result["changes"]:
            out.print(f"changed: {change}", highlight=False, markup=False)
    out.print(f"{result['decision'].upper()}; the destination gets:", highlight=False)
    out.print(orjson.dumps(result["event"], option=orjson.OPT_INDENT_2).decode(),
              highlight=False, markup=False)  # fmt: skip
