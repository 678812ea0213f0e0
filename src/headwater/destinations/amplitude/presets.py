"""Amplitude's presets: Segment's default triggers and mappings (logEventV2, identifyUser,
groupIdentifyUser), with ``insert_id`` from the messageId and ``device_id`` from the
anonymousId as issue 14 asks."""

from __future__ import annotations

from typing import Any

from headwater.mapping.actions import ActionSpec


def path(where: str) -> dict[str, str]:
    return {"@path": where}


WHO: dict[str, Any] = {"user_id": path("$.userId"), "device_id": path("$.anonymousId")}

DEVICE: dict[str, Any] = {
    "app_version": path("$.context.app.version"),
    "platform": path("$.context.device.type"),
    "os_name": path("$.context.os.name"),
    "os_version": path("$.context.os.version"),
    "device_brand": path("$.context.device.brand"),
    "device_manufacturer": path("$.context.device.manufacturer"),
    "device_model": path("$.context.device.model"),
    "carrier": path("$.context.network.carrier"),
    "country": path("$.context.location.country"),
    "region": path("$.context.location.region"),
    "city": path("$.context.location.city"),
    "language": path("$.context.locale"),
}

EVENT: dict[str, Any] = {
    **WHO,
    "event_type": path("$.event"),
    "insert_id": path("$.messageId"),
    "time": path("$.timestamp"),
    "session_id": path('$.integrations["Actions Amplitude"].session_id'),
    "event_properties": path("$.properties"),
    "user_properties": path("$.traits"),
    **DEVICE,
    "price": path("$.properties.price"),
    "quantity": path("$.properties.quantity"),
    "revenue": path("$.properties.revenue"),
    "productId": path("$.properties.productId"),
    "revenueType": path("$.properties.revenueType"),
    "location_lat": path("$.context.location.latitude"),
    "location_lng": path("$.context.location.longitude"),
    "ip": path("$.context.ip"),
    "idfa": path("$.context.device.advertisingId"),
    "idfv": path("$.context.device.id"),
    "library": path("$.context.library.name"),
}

VIEWED = {**EVENT, "event_type": {"@template": "Viewed {{name}}"}}

IDENTIFY: dict[str, Any] = {**WHO, "user_properties": path("$.traits"), **DEVICE}

GROUP: dict[str, Any] = {
    **WHO,
    "group_type": {"@literal": "group"},
    "group_value": path("$.groupId"),
    "group_properties": path("$.traits"),
}

EVENT_REQUIRED = ("event_type", "user_id|device_id")

PRESETS = (
    ActionSpec("log_event", 'type = "track"', EVENT, EVENT_REQUIRED, kind="log_event"),
    ActionSpec("page", 'type = "page"', VIEWED, EVENT_REQUIRED, kind="log_event"),
    ActionSpec("screen", 'type = "screen"', VIEWED, EVENT_REQUIRED, kind="log_event"),
    ActionSpec("identify_user", 'type = "identify"', IDENTIFY, ("user_id|device_id",),
               kind="identify"),
    ActionSpec("group_identify_user", 'type = "group"', GROUP,
               ("group_type", "group_value", "user_id|device_id"), kind="group_identify"),
)  # fmt: skip
