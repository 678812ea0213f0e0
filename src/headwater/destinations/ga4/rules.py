"""GA4's documented limits, checked before sending: GA4 answers 2xx to every request and
silently drops what breaks them, so Headwater refuses such an event itself, and says why.

Each problem is a :class:`Problem` with GA4's own validation code (the codes its debug
endpoint uses), the field, and what to do. Limits: Measurement Protocol "Limitations" and
the reserved names of "Sending events" (docs/destinations/ga4.md lists them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_EVENTS_PER_REQUEST = 25
MAX_PARAMS = 25
MAX_USER_PROPERTIES = 25
MAX_NAME_CHARS = 40
MAX_USER_PROPERTY_NAME_CHARS = 24
MAX_VALUE_CHARS = 100
MAX_USER_PROPERTY_VALUE_CHARS = 36
MAX_ITEM_CUSTOM_PARAMS = 10
MAX_BODY_BYTES = 130_000
MAX_BACKDATE_SECS = 72 * 3600
LONG_VALUES = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED_PREFIXES = ("ga_", "google_", "firebase_")
RESERVED_EVENTS = frozenset(
    [
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_query",
        "ad_reward",
        "adunit_exposure",
        "app_background",
        "app_clear_data",
        "app_exception",
        "app_remove",
        "app_store_refund",
        "app_store_subscription_cancel",
        "app_store_subscription_convert",
        "app_store_subscription_renew",
        "app_update",
        "app_upgrade",
        "dynamic_link_app_open",
        "dynamic_link_app_update",
        "dynamic_link_first_open",
        "error",
        "firebase_campaign",
        "firebase_in_app_message_action",
        "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression",
        "first_open",
        "first_visit",
        "in_app_purchase",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "os_update",
        "session_start",
        "session_start_with_rollout",
        "user_engagement",
    ]
)
RESERVED_USER_PROPERTIES = frozenset(
    {"first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id",
     "first_open_after_install"}
)  # fmt: skip
STANDARD_ITEM_PARAMS = frozenset(
    [
        "item_id",
        "item_name",
        "affiliation",
        "coupon",
        "discount",
        "index",
        "item_brand",
        "item_category",
        "item_category2",
        "item_category3",
        "item_category4",
        "item_category5",
        "item_list_id",
        "item_list_name",
        "item_variant",
        "location_id",
        "price",
        "quantity",
    ]
)


@dataclass(frozen=True, slots=True)
class Problem:
    code: str  # GA4's validation code: NAME_INVALID, NAME_RESERVED, VALUE_INVALID, ...
    field: str  # where, in the payload: name, params.plan, user_properties.tier
    detail: str

    def reason(self) -> str:
        return (
            f"GA4 {self.code}: {self.field}: {self.detail} (checked by Headwater: GA4 would"
            " accept the request and drop this event silently); fix the event or the mapping"
        )


def check_event(payload: dict[str, Any], now: float | None = None) -> Problem | None:
    """The first problem that would make GA4 drop the event built as ``payload``."""
    for problem in _problems(payload, time.time() if now is None else now):
        return problem
    return None


def _problems(payload: dict[str, Any], now: float) -> Iterator[Problem]:
    yield from _check_name(payload.get("name"), "name", event=True)
    client_id = payload.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        yield Problem("VALUE_REQUIRED", "client_id", "a web stream needs a client_id string")
    user_id = payload.get("user_id")
    if user_id is not None and not isinstance(user_id, str | int):
        yield Problem("VALUE_INVALID", "user_id", "must be a string")
    yield from _check_time(payload.get("timestamp_micros"), now)
    params = payload.get("params", {})
    if not isinstance(params, dict):
        yield Problem("VALUE_INVALID", "params", f"must be an object, not {_kind(params)}")
        return
    yield from _check_params(params)
    props = payload.get("user_properties", {})
    if not isinstance(props, dict):
        yield Problem("VALUE_INVALID", "user_properties", f"must be an object, not {_kind(props)}")
        return
    yield from _check_user_properties(props)


def _check_name(name: Any, where: str, event: bool = False) -> Iterator[Problem]:
    if not isinstance(name, str) or not name:
        yield Problem("VALUE_REQUIRED", where, "a name is required")
        return
    limit = MAX_NAME_CHARS
    if len(name) > limit:
        yield Problem("NAME_INVALID", where, f"{name!r} is longer than {limit} characters")
    elif not NAME.match(name):
        yield Problem(
            "NAME_INVALID", where,
            f"{name!r}: names start with a letter and have only letters, digits and _",
        )  # fmt: skip
    elif name.lower().startswith(RESERVED_PREFIXES):
        yield Problem("NAME_RESERVED", where, f"{name!r}: ga_, google_ and firebase_ are GA4's")
    elif event and name in RESERVED_EVENTS:
        yield Problem("NAME_RESERVED", where, f"{name!r} is an event name GA4 reserves")


def _check_time(micros: Any, now: float) -> Iterator[Problem]:
    if micros is None:
        return
    if not isinstance(micros, int) or isinstance(micros, bool):
        yield Problem("VALUE_INVALID", "timestamp_micros", f"{micros!r} is not a timestamp")
    elif micros < (now - MAX_BACKDATE_SECS) * 1_000_000:
        yield Problem(
            "VALUE_OUT_OF_BOUNDS", "timestamp_micros",
            "the event is more than 72 hours old; GA4 takes events up to 72 hours back",
        )  # fmt: skip


def _check_params(params: dict[str, Any]) -> Iterator[Problem]:
    if len(params) > MAX_PARAMS:
        yield Problem(
            "EXCEEDED_MAX_ENTITIES", "params",
            f"{len(params)} parameters; GA4 takes {MAX_PARAMS} per event — map fewer",
        )  # fmt: skip
    for key, value in params.items():
        where = f"params.{key}"
        yield from _check_name(key, where)
        if key == "items":
            yield from _check_items(value)
        else:
            yield from _check_value(value, where, LONG_VALUES.get(key, MAX_VALUE_CHARS))


def _check_items(items: Any) -> Iterator[Problem]:
    if not isinstance(items, list):
        yield Problem("VALUE_INVALID", "params.items", f"must be a list, not {_kind(items)}")
        return
    for i, item in enumerate(items):
        where = f"params.items[{i}]"
        if not isinstance(item, dict):
            yield Problem("VALUE_INVALID", where, f"must be an object, not {_kind(item)}")
            continue
        if item.get("item_id") is None and item.get("item_name") is None:
            yield Problem("VALUE_REQUIRED", where, "an item needs item_id or item_name")
        custom = [k for k in item if k not in STANDARD_ITEM_PARAMS]
        if len(custom) > MAX_ITEM_CUSTOM_PARAMS:
            yield Problem(
                "EXCEEDED_MAX_ENTITIES", where,
                f"{len(custom)} custom item parameters; GA4 takes {MAX_ITEM_CUSTOM_PARAMS}",
            )  # fmt: skip
        for key, value in item.items():
            yield from _check_name(key, f"{where}.{key}")
            yield from _check_value(value, f"{where}.{key}", MAX_VALUE_CHARS)


def _check_user_properties(props: dict[str, Any]) -> Iterator[Problem]:
    if len(props) > MAX_USER_PROPERTIES:
        yield Problem(
            "EXCEEDED_MAX_ENTITIES", "user_properties",
            f"{len(props)} user properties; GA4 takes {MAX_USER_PROPERTIES}",
        )  # fmt: skip
    for key, value in props.items():
        where = f"user_properties.{key}"
        if len(key) > MAX_USER_PROPERTY_NAME_CHARS:
            yield Problem(
                "NAME_INVALID", where,
                f"user property names have at most {MAX_USER_PROPERTY_NAME_CHARS} characters",
            )  # fmt: skip
            continue
        yield from _check_name(key, where)
        if key in RESERVED_USER_PROPERTIES:
            yield Problem("NAME_RESERVED", where, f"{key!r} is a user property GA4 reserves")
        inner = value.get("value") if isinstance(value, dict) else value
        yield from _check_value(inner, where, MAX_USER_PROPERTY_VALUE_CHARS)


def _check_value(value: Any, where: str, limit: int) -> Iterator[Problem]:
    if value is None:
        yield Problem("VALUE_INVALID", where, "is null; GA4 drops null values — leave it out")
    elif isinstance(value, dict | list):
        yield Problem(
            "VALUE_INVALID", where,
            f"is {_kind(value)}; GA4 takes strings, numbers and booleans — map a single value"
            " or use @flatten",
        )  # fmt: skip
    elif isinstance(value, str) and len(value) > limit:
        yield Problem(
            "VALUE_OUT_OF_BOUNDS", where, f"{len(value)} characters; GA4 keeps at most {limit}"
        )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(
        type(value), type(value).__name__
    )
