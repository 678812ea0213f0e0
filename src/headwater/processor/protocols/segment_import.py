"""A tracking plan exported from Segment, as a Headwater plan (``headwater plans import FILE``).

The shapes accepted (JSON, as Segment's APIs return them):

Public API (https://docs.segmentapis.com/tag/Tracking-Plans), rules as ``RuleV1``
``{type, key, version, jsonSchema, createdAt, updatedAt, deprecatedAt}``:
    ``{"data": {"rules": [...], "pagination": {...}}}``   GET /tracking-plans/{id}/rules
    ``{"rules": [...]}`` or a bare ``[...]``               the rules alone (as PUT takes them)
    ``{"trackingPlan": {...}, "rules": [...]}``           a plan with its rules (also in "data")

Config API (the older https://platform.segmentapis.com/v1beta, plans named ``rs_...``):
    ``{"name": "workspaces/<ws>/tracking-plans/rs_...", "display_name": "...",
      "rules": {"global": {...}, "events": [{"name", "version", "description", "rules"}],
                "identify": {...}, "group": {...}, "identify_traits": [], "group_traits": []}}``
    also wrapped as ``{"tracking_plan": {...}}`` (a create request) or
    ``{"tracking_plans": [{...}]}`` (a list with one plan).

``global`` becomes the COMMON rule, ``events[]`` TRACK rules, ``identify``/``group`` the
IDENTIFY/GROUP rules. Deprecated rules (``deprecatedAt`` set) are left out; anything
left out is listed as a comment at the top of the YAML. Anything else is refused, with a
message that says which shapes are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from headwater.config.urls import field_path
from headwater.errors import ConfigError
from headwater.processor.protocols.plans import TrackingPlanConfig

SHAPES = (
    "a Public API export ({'data': {'rules': [...]}}, {'rules': [...]}, a list of rules, or "
    "{'trackingPlan': {...}, 'rules': [...]}) or a Config API tracking plan "
    "({'display_name': ..., 'rules': {'events': [...], 'global': {...}, ...}})"
)
_RULE_KEYS = {"type", "key", "version", "jsonSchema"}
_RULE_META = {"createdAt", "updatedAt", "deprecatedAt"}


@dataclass
class ImportedPlan:
    """A converted plan and what was left out of it."""

    config: TrackingPlanConfig
    notes: list[str] = field(default_factory=list)
    origin: str = ""


def import_segment_plan(
    data: Any, name: str | None = None, sources: Sequence[str] = (), origin: str = "the export"
) -> TrackingPlanConfig:
    """The plan in a Segment export; ``name`` and ``sources`` override what it says.
    Raises ConfigError naming what is wrong (``origin`` is how the message names the file)."""
    return convert(data, name, sources, origin).config


def segment_plan_yaml(
    data: Any, name: str | None = None, sources: Sequence[str] = (), origin: str = "the export"
) -> str:
    """The YAML to add under the workspace file's ``tracking_plans:`` for a Segment export."""
    imported = convert(data, name, sources, origin)
    config = imported.config
    plan: dict[str, Any] = {
        "name": config.name,
        "sources": list(config.sources),
        "rules": [
            {
                "type": r.type,
                **({"key": r.key} if r.key is not None else {}),
                "version": r.version,
                "jsonSchema": r.json_schema,
            }
            for r in config.rules
        ],
        "enforcement": config.enforcement.model_dump(),
    }
    lines = [f"# Imported from {imported.origin} by `headwater plans import`."]
    if not config.sources:
        lines.append("# List the sources this plan checks under `sources:`.")
    lines += [f"# Left out: {note}" for note in imported.notes]
    body = yaml.safe_dump(
        {"tracking_plans": [plan]}, sort_keys=False, allow_unicode=True, width=100
    )
    return "\n".join(lines) + "\n" + body


def convert(data: Any, name: str | None, sources: Sequence[str], origin: str) -> ImportedPlan:
    """Recognise the export's shape and build the plan (see the module's docstring)."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]  # the Public API's envelope
    if isinstance(data, dict) and isinstance(data.get("tracking_plans"), list):
        plans = data["tracking_plans"]
        if len(plans) != 1:
            raise ConfigError(
                f"{origin}: the export lists {len(plans)} tracking plans; export one "
                "(GET /v1beta/workspaces/<ws>/tracking-plans/<rs_id>)"
            )
        data = plans[0]
    if isinstance(data, dict) and isinstance(data.get("tracking_plan"), dict):
        data = data["tracking_plan"]
    notes: list[str] = []
    if isinstance(data, list):
        rules, title, kind = _public_rules(data, notes, origin), None, "Segment's Public API"
    elif isinstance(data, dict) and isinstance(data.get("rules"), list):
        plan = data.get("trackingPlan")
        plan = plan if isinstance(plan, dict) else {}
        title = plan.get("slug") or plan.get("name")
        rules, kind = _public_rules(data["rules"], notes, origin), "Segment's Public API"
    elif isinstance(data, dict) and isinstance(data.get("rules"), dict):
        rules, kind = _config_rules(data["rules"], notes, origin), "Segment's Config API"
        title = data.get("display_name") or str(data.get("name", "")).rsplit("/", 1)[-1]
    elif isinstance(data, dict) and "trackingPlan" in data:
        raise ConfigError(
            f"{origin}: this is a tracking plan without its rules; export them with "
            "GET https://api.segmentapis.com/tracking-plans/<id>/rules"
        )
    else:
        raise ConfigError(f"{origin}: not a Segment tracking plan export; expected {SHAPES}")
    plan_name = name or _slug(title if isinstance(title, str) else "") or "imported"
    raw = {"name": plan_name, "sources": list(sources), "rules": rules}
    try:
        config = TrackingPlanConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_faults(origin, exc)) from exc
    return ImportedPlan(config, notes, f"a tracking plan of {kind}")


def _public_rules(items: list[Any], notes: list[str], origin: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "type" not in item or "jsonSchema" not in item:
            raise ConfigError(
                f"{origin}: rules[{i}] is not a Segment rule ({{type, key, version, "
                f"jsonSchema}}); expected {SHAPES}"
            )
        unknown = set(item) - _RULE_KEYS - _RULE_META
        if unknown:
            notes.append(f"rules[{i}]: fields {', '.join(sorted(unknown))}")
        if item.get("deprecatedAt"):
            notes.append(f"rules[{i}] ({item['type']} {item.get('key') or ''}): deprecated")
            continue
        kind = item["type"].upper() if isinstance(item["type"], str) else item["type"]
        rule = {"type": kind, "key": item.get("key"), "jsonSchema": item["jsonSchema"]}
        if item.get("version") is not None:
            rule["version"] = item["version"]
        rules.append(rule)
    return rules


def _config_rules(rules: dict[str, Any], notes: list[str], origin: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    events = rules.get("events") or []
    if not isinstance(events, list):
        raise ConfigError(f"{origin}: rules.events must be a list of events")
    for i, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("name"), str):
            raise ConfigError(f"{origin}: rules.events[{i}] has no name")
        rule = {"type": "TRACK", "key": event["name"], "jsonSchema": event.get("rules") or {}}
        if event.get("version") is not None:
            rule["version"] = event["version"]
        out.append(rule)
    for key, kind in (("identify", "IDENTIFY"), ("group", "GROUP"), ("global", "COMMON")):
        schema = rules.get(key)
        if schema:
            out.append({"type": kind, "jsonSchema": schema})
    for key in ("identify_traits", "group_traits"):
        if rules.get(key):
            count = len(rules[key])
            notes.append(
                f"rules.{key} ({count} trait{'s' if count != 1 else ''}): the Config API's "
                f"trait lists; the {key.split('_')[0]} rule's schema is imported"
            )
    unknown = set(rules) - {"events", "identify", "group", "global", "identify_traits",
                            "group_traits"}  # fmt: skip
    if unknown:
        notes.append(f"rules: fields {', '.join(sorted(unknown))}")
    return out


def _slug(title: str) -> str:
    """A workspace name from a plan's title: ``Acme Ecommerce TP`` → ``acme-ecommerce-tp``."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", title.lower()).strip("-_")
    return slug[:63].rstrip("-_")


def _faults(origin: str, exc: ValidationError) -> str:
    lines: list[str] = []
    for err in exc.errors():
        where = field_path(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        lines.extend(
            f"{origin}: {where + ': ' if where else ''}{line}" for line in message.splitlines()
        )
    return "\n".join(lines)
