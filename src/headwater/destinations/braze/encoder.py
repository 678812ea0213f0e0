"""Mapped payloads -> ``POST {endpoint}/users/track`` requests.

Each payload becomes objects of one array: an identify one ``attributes`` object, a track
one ``events`` object, an Order Completed one ``purchases`` object per product. Payloads
are packed in order into requests of at most 75 objects per array; each :class:`Packed`
remembers which event each object came from, so Braze's ``errors[].index`` can be read
back to the event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import HttpRequest
from headwater.destinations.braze.settings import BrazeSettings
from headwater.destinations.mapped import Mapped, json_body

PATH = "/users/track"
MAX_PER_ARRAY = 75
ARRAYS = {"attributes": "attributes", "event": "events", "purchase": "purchases"}
IDENTIFIER_FIELDS = ("external_id", "braze_id", "user_alias", "email")
DEFAULT_CURRENCY = "USD"  # as Segment's Braze destination


class Unsendable(ValueError):
    """A payload Braze would refuse: the message names the field."""


def _identifiers(payload: dict[str, Any], app_id: str | None) -> dict[str, Any]:
    ids = {k: payload[k] for k in IDENTIFIER_FIELDS if payload.get(k) is not None}
    if "external_id" in ids:
        ids["external_id"] = str(ids["external_id"])
    alias = ids.get("user_alias")
    if alias is not None and (
        not isinstance(alias, dict) or not {"alias_name", "alias_label"} <= set(alias)
    ):
        raise Unsendable("user_alias must be {alias_name, alias_label}")
    if set(ids) == {"user_alias"}:
        ids["_update_existing_only"] = True  # Braze's rule for alias-only objects
    if app_id is not None:
        ids["app_id"] = app_id
    return ids


def attributes(payload: dict[str, Any], app_id: str | None) -> list[dict[str, Any]]:
    custom = payload.get("custom_attributes")
    out: dict[str, Any] = {}
    if isinstance(custom, dict):
        for key, value in custom.items():
            if key.startswith("$"):
                raise Unsendable(
                    f"custom_attributes.{key}: Braze attribute names cannot start with $"
                )
            out[key] = value
    skip = {"custom_attributes", *IDENTIFIER_FIELDS}
    out.update({k: v for k, v in payload.items() if k not in skip and v is not None})
    out.update(_identifiers(payload, app_id))
    return [out]


def event(payload: dict[str, Any], app_id: str | None) -> list[dict[str, Any]]:
    out = {**_identifiers(payload, app_id), "name": payload["name"], "time": payload["time"]}
    if not isinstance(out["name"], str) or not out["name"].strip():
        raise Unsendable("name: an event needs a name")
    if isinstance(payload.get("properties"), dict):
        out["properties"] = payload["properties"]
    return [out]


def purchases(payload: dict[str, Any], app_id: str | None) -> list[dict[str, Any]]:
    products = payload.get("products")
    if not isinstance(products, list) or not products:
        raise Unsendable(
            "products: an Order Completed without products has no purchase to record in Braze"
        )
    if len(products) > MAX_PER_ARRAY:
        raise Unsendable(
            f"products: {len(products)} products; Braze takes {MAX_PER_ARRAY} a request"
        )
    ids = _identifiers(payload, app_id)
    props = payload.get("properties")
    props = {k: v for k, v in props.items() if k != "products"} if isinstance(props, dict) else None
    out = []
    for i, product in enumerate(products):
        if not isinstance(product, dict):
            raise Unsendable(f"products[{i}]: must be an object")
        for required in ("product_id", "price"):
            if product.get(required) is None:
                raise Unsendable(f"products[{i}].{required}: Braze needs it for a purchase")
        currency = product.get("currency") or payload.get("currency") or DEFAULT_CURRENCY
        item = {**ids, "product_id": str(product["product_id"]), "price": product["price"],
                "currency": str(currency).upper(), "quantity": product.get("quantity") or 1,
                "time": payload["time"]}  # fmt: skip
        if props:
            item["properties"] = props
        out.append(item)
    return out


BUILDERS = {"attributes": attributes, "event": event, "purchase": purchases}


def objects(item: Mapped, app_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The array an item goes in and its objects; Unsendable names what is wrong."""
    payload = item.payload
    if not isinstance(payload, dict):
        raise Unsendable(f"the mapping of action {item.action.name} must give an object")
    return ARRAYS[item.kind], BUILDERS[item.kind](payload, app_id)


@dataclass
class Packed:
    """One request's arrays, and the event each object of them came from."""

    arrays: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    owners: dict[str, list[OutboundEvent]] = field(default_factory=dict)

    def fits(self, array: str, count: int) -> bool:
        return len(self.arrays.get(array, ())) + count <= MAX_PER_ARRAY

    def add(self, array: str, objs: list[dict[str, Any]], owner: OutboundEvent) -> None:
        self.arrays.setdefault(array, []).extend(objs)
        self.owners.setdefault(array, []).extend([owner] * len(objs))

    def events(self) -> tuple[OutboundEvent, ...]:
        seen: dict[int, OutboundEvent] = {}
        for owners in self.owners.values():
            for e in owners:
                seen.setdefault(e.offset, e)
        return tuple(sorted(seen.values(), key=lambda e: e.offset))


def pack(built: Sequence[tuple[Mapped, str, list[dict[str, Any]]]]) -> list[Packed]:
    """Objects in requests, in order, at most 75 per array in each."""
    out: list[Packed] = [Packed()]
    for item, array, objs in built:
        if not out[-1].fits(array, len(objs)):
            out.append(Packed())
        out[-1].add(array, objs, item.event)
    return [p for p in out if p.arrays]


def encode(settings: BrazeSettings, packed: Packed) -> HttpRequest:
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {settings.api_key.get_secret_value()}"}  # fmt: skip
    body = {
        k: packed.arrays[k] for k in ("attributes", "events", "purchases") if k in packed.arrays
    }
    return HttpRequest("POST", f"{settings.endpoint}{PATH}", headers, json_body(body),
                       frozenset({"authorization"}))  # fmt: skip
