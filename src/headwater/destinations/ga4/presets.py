"""The ga4 destination's presets: Segment's "Google Analytics 4 Cloud" default mappings.

Every preset makes one GA4 event (kind ``event``); the encoder turns ``timestamp`` into
``timestamp_micros``, wraps ``user_properties`` values as ``{"value": ...}`` and gives the
event its GA4 name (Segment's ecommerce names renamed as GA4 recommends, others
snake_cased). ``message_id`` (a param) carries the messageId, so exported rows can be
matched to Headwater's trace and deduplicated: GA4 has no dedupe key of its own.
"""

from __future__ import annotations

from typing import Any

from headwater.mapping.actions import ActionSpec

MULTI_PRODUCT = ("Order Completed", "Order Refunded", "Checkout Started", "Cart Viewed")
ONE_PRODUCT = (
    "Product Added", "Product Removed", "Product Viewed", "Product Clicked",
    "Product Added to Wishlist",
)  # fmt: skip
REQUIRED = ("client_id", "name")


def _path(path: str) -> dict[str, str]:
    return {"@path": path}


def _either(first: str, then: Any) -> dict[str, Any]:
    return {"@if": {"exists": _path(first), "then": _path(first), "else": then}}


def _one_of(events: tuple[str, ...]) -> str:
    return "(" + " or ".join(f'event = "{e}"' for e in events) + ")"


COMMON: dict[str, Any] = {
    "client_id": _either("$.anonymousId", _path("$.userId")),
    "user_id": _path("$.userId"),
    "timestamp": _path("$.timestamp"),
}
ALWAYS: dict[str, Any] = {"engagement_time_msec": 1, "message_id": _path("$.messageId")}
ITEM: dict[str, Any] = {
    "item_id": _path("product_id"), "item_name": _path("name"), "affiliation": _path("affiliation"),
    "coupon": _path("coupon"), "index": _path("position"), "item_brand": _path("brand"),
    "item_category": _path("category"), "item_variant": _path("variant"),
    "price": _path("price"), "quantity": _path("quantity"),
}  # fmt: skip
ECOMMERCE: dict[str, Any] = {
    "currency": _path("$.properties.currency"),
    "value": _either(
        "$.properties.value", _either("$.properties.revenue", _path("$.properties.total"))
    ),
    "transaction_id": _path("$.properties.order_id"),
    "coupon": _path("$.properties.coupon"),
    "affiliation": _path("$.properties.affiliation"),
    "tax": _path("$.properties.tax"),
    "shipping": _path("$.properties.shipping"),
    "payment_type": _path("$.properties.payment_method"),
}  # fmt: skip

PRESETS = (
    ActionSpec(
        "custom_event",
        f'type = "track" and !{_one_of(MULTI_PRODUCT + ONE_PRODUCT)}',
        {**COMMON, "name": _path("$.event"),
         "params": {"@merge": {"objects": [_path("$.properties"), ALWAYS], "direction": "right"}}},
        REQUIRED, kind="event",
    ),
    ActionSpec(
        "ecommerce",
        f'type = "track" and {_one_of(MULTI_PRODUCT)}',
        {**COMMON, "name": _path("$.event"),
         "params": {**ECOMMERCE, "items": {"@arrayPath": ["$.properties.products", ITEM]},
                    **ALWAYS}},
        REQUIRED, kind="event",
    ),
    ActionSpec(
        "product",
        f'type = "track" and {_one_of(ONE_PRODUCT)}',
        {**COMMON, "name": _path("$.event"),
         "params": {"currency": _path("$.properties.currency"),
                    "value": _either("$.properties.value", _path("$.properties.price")),
                    "items": {"@arrayPath": ["$.properties", ITEM]}, **ALWAYS}},
        REQUIRED, kind="event",
    ),
    ActionSpec(
        "page_view",
        'type = "page"',
        {**COMMON, "name": "page_view",
         "params": {"page_location": _path("$.context.page.url"),
                    "page_referrer": _path("$.context.page.referrer"),
                    "page_title": _path("$.context.page.title"), **ALWAYS}},
        REQUIRED, kind="event",
    ),
)  # fmt: skip
