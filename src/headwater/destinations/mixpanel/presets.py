"""Mixpanel's presets: Segment's default triggers and mappings (trackEvent, identifyUser,
groupIdentifyUser). An event's payload names Mixpanel's properties directly; its
``properties`` (the event's own) are merged under them."""

from __future__ import annotations

from typing import Any

from headwater.mapping.actions import ActionSpec


def path(where: str) -> dict[str, str]:
    return {"@path": where}


DISTINCT_ID = {"@if": {"exists": path("$.userId"), "then": path("$.userId"),
                       "else": path("$.anonymousId")}}  # fmt: skip

EVENT: dict[str, Any] = {
    "event": path("$.event"),
    "distinct_id": DISTINCT_ID,
    "$insert_id": path("$.messageId"),
    "time": path("$.timestamp"),
    "ip": path("$.context.ip"),
    "$device_id": path("$.anonymousId"),
    "$user_id": path("$.userId"),
    "$current_url": path("$.context.page.url"),
    "$referrer": path("$.context.page.referrer"),
    "$os": path("$.context.os.name"),
    "$os_version": path("$.context.os.version"),
    "$app_name": path("$.context.app.name"),
    "$app_version_string": path("$.context.app.version"),
    "$app_build_number": path("$.context.app.build"),
    "$carrier": path("$.context.network.carrier"),
    "$manufacturer": path("$.context.device.manufacturer"),
    "$model": path("$.context.device.model"),
    "$screen_height": path("$.context.screen.height"),
    "$screen_width": path("$.context.screen.width"),
    "$locale": path("$.context.locale"),
    "mp_country_code": path("$.context.location.country"),
    "utm_source": path("$.context.campaign.source"),
    "utm_medium": path("$.context.campaign.medium"),
    "utm_campaign": path("$.context.campaign.name"),
    "utm_term": path("$.context.campaign.term"),
    "utm_content": path("$.context.campaign.content"),
    "mp_lib": {"@template": "Headwater: {{context.library.name}}"},
    "$lib_version": path("$.context.library.version"),
    "$source": "headwater",
    "properties": path("$.properties"),
}

VIEWED = {**EVENT, "event": {"@template": "Viewed {{name}}"}}

ENGAGE: dict[str, Any] = {"$distinct_id": DISTINCT_ID, "$ip": path("$.context.ip"),
                          "$set": path("$.traits")}  # fmt: skip

GROUP: dict[str, Any] = {"$group_key": "$group_id", "$group_id": path("$.groupId"),
                         "$set": path("$.traits")}  # fmt: skip

EVENT_REQUIRED = ("event", "distinct_id", "time", "$insert_id")

PRESETS = (
    ActionSpec("track_event", 'type = "track"', EVENT, EVENT_REQUIRED, kind="import"),
    ActionSpec("page", 'type = "page"', VIEWED, EVENT_REQUIRED, kind="import"),
    ActionSpec("screen", 'type = "screen"', VIEWED, EVENT_REQUIRED, kind="import"),
    ActionSpec("identify_user", 'type = "identify"', ENGAGE, ("$distinct_id",), kind="engage"),
    ActionSpec("group_identify_user", 'type = "group"', GROUP, ("$group_key", "$group_id"),
               kind="groups"),
)  # fmt: skip
