"""The braze destination's presets: Segment's "Braze Cloud Mode (Actions)" default mappings.

Three kinds, one per array of ``/users/track``: ``attributes`` (identify), ``event``
(track) and ``purchase`` (Order Completed: one purchase per product). Every payload needs
one identifier: ``external_id`` (from userId), ``braze_id``, ``user_alias`` or ``email``.
"""

from __future__ import annotations

from typing import Any

from headwater.mapping.actions import ActionSpec

ECOMMERCE = ("Order Completed",)
IDENTIFIERS = "external_id|braze_id|user_alias|email"


def _path(path: str) -> dict[str, str]:
    return {"@path": path}


def _with_message_id(path: str) -> dict[str, Any]:
    objects = [_path(path), {"message_id": _path("$.messageId")}]
    return {"@merge": {"objects": objects, "direction": "right"}}


def _either(first: str, then: str) -> dict[str, Any]:
    return {"@if": {"exists": _path(first), "then": _path(first), "else": _path(then)}}


EVENT_IDS: dict[str, Any] = {
    "external_id": _path("$.userId"),
    "braze_id": _path("$.properties.braze_id"),
    "email": _either("$.context.traits.email", "$.properties.email"),
}
PROFILE: dict[str, Any] = {
    "external_id": _path("$.userId"),
    "braze_id": _path("$.traits.braze_id"),
    "email": _path("$.traits.email"),
    "first_name": _path("$.traits.firstName"),
    "last_name": _path("$.traits.lastName"),
    "gender": _path("$.traits.gender"),
    "phone": _path("$.traits.phone"),
    "dob": _path("$.traits.birthday"),
    "home_city": _path("$.traits.address.city"),
    "country": _path("$.context.location.country"),
    "image_url": _path("$.traits.avatar"),
    "current_location": {"@if": {
        "exists": _path("$.context.location.latitude"),
        "then": {"latitude": _path("$.context.location.latitude"),
                 "longitude": _path("$.context.location.longitude")},
    }},
    "custom_attributes": _path("$.traits"),
}  # fmt: skip
PRODUCT: dict[str, Any] = {
    "product_id": _path("product_id"), "price": _path("price"),
    "quantity": _path("quantity"), "currency": _path("currency"),
}  # fmt: skip
_NOT_ECOMMERCE = " and ".join(f'event != "{e}"' for e in ECOMMERCE)

PRESETS = (
    ActionSpec("update_user_profile", 'type = "identify"', PROFILE, (IDENTIFIERS,),
               kind="attributes"),
    ActionSpec(
        "track_event", f'type = "track" and {_NOT_ECOMMERCE}',
        {**EVENT_IDS, "name": _path("$.event"), "time": _path("$.timestamp"),
         "properties": _with_message_id("$.properties")},
        (IDENTIFIERS, "name", "time"), kind="event",
    ),
    ActionSpec(
        "track_purchase", 'type = "track" and event = "Order Completed"',
        {**EVENT_IDS, "time": _path("$.timestamp"), "currency": _path("$.properties.currency"),
         "products": {"@arrayPath": ["$.properties.products", PRODUCT]},
         "properties": _with_message_id("$.properties")},
        (IDENTIFIERS, "products", "time"), kind="purchase",
    ),
)  # fmt: skip
