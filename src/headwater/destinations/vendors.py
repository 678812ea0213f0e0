"""What vendor destinations share: their answers read as outcomes, local checks, times.

A vendor destination names the vendor, its status and its error code at the start of every
reason (``"Intercom 401 unauthorized: Access Token Invalid"``) so that one diagnose rule reads
them all; an answer it cannot parse is kept as its first 200 bytes and classified by status
code, by Segment's rules (:func:`headwater.delivery.http.classify`).

:func:`deliver_split` sends a mapped batch like :meth:`MappedDestination.deliver`, but lets a
destination split one request's answer per event (a 207 multi-status naming the refused
items), and :func:`refuse_invalid` moves payloads a local check refuses out of the batch,
each with its reason, before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from headwater.delivery.events import OutboundEvent
from headwater.delivery.http import (
    RETRYABLE_4XX,
    HttpFailure,
    HttpResponse,
    retry_after_secs,
)
from headwater.delivery.outcomes import Attempt, Delivered, Discard, Outcome, Retry
from headwater.destinations.mapped import (
    Mapped,
    MappedDestination,
    Outgoing,
    Refused,
    Sent,
    _combine,
    _nothing_to_send,
)
from headwater.destinations.values import headers_of, snippet

Result = HttpResponse | HttpFailure
Split = list[tuple[Outgoing, Result, Outcome]]
"""A request's answer as (the events it decides, the answer, their outcome) parts."""


def vendor_outcome(
    vendor: str, result: Result, detail: str | None, retry_after: float | None = None
) -> Outcome:
    """Segment's rules for ``result`` with the vendor's own words: ``detail`` is the error code
    and message the vendor gave (``"invalid_payload"``, ``"unauthorized: Access Token
    Invalid"``, or ``": message"`` when it gives no code), None when its answer could not be
    read (then its first 200 bytes are used)."""
    if isinstance(result, HttpFailure):
        return Retry(f"{vendor} unreachable: {result.kind}: {result.message}")
    status = result.status
    if 200 <= status < 300:
        return Delivered(status)
    if detail is None:  # an answer Headwater cannot read: its first bytes
        reason = f"{vendor} {status}: {snippet(result.body) if result.body else '(empty answer)'}"
    else:  # "invalid_payload", "unauthorized: Access Token Invalid", or ": message"
        reason = f"{vendor} {status}{'' if detail.startswith(':') else ' '}{detail}"
    if status in RETRYABLE_4XX or status >= 500:
        after = retry_after
        if after is None:
            after = retry_after_secs(headers_of(result).get("retry-after"))
        return Retry(reason, status, after)
    if 300 <= status < 400:
        where = headers_of(result).get("location", "?")
        return Discard(f"{vendor} {status}: redirected to {where}; set `endpoint` to it", status)
    return Discard(reason, status)


Check = Callable[[Mapped], str | None]


def refuse_invalid(mapped: list[Mapped], refused: Refused, check: Check) -> list[Mapped]:
    """The payloads ``check`` passes; each one it refuses (a reason) joins ``refused``."""
    kept: list[Mapped] = []
    for item in mapped:
        reason = check(item)
        if reason is None:
            kept.append(item)
        else:
            refused.setdefault(item.event.offset, Discard(reason))
    # an event refused in one of its payloads is not sent in any (never half-built)
    return [m for m in kept if m.event.offset not in refused]


SplitAnswer = Callable[[Outgoing, Result], Split]
Send = Callable[[Outgoing], Awaitable[tuple[Outgoing, Result]]]
"""Sends a planned request (and any the vendor needs after it): the last one and its answer."""


async def deliver_split(
    destination: MappedDestination[Any],
    events: Sequence[OutboundEvent],
    check: Check | None,
    split: SplitAnswer,
    send: Send | None = None,
) -> Attempt:
    """Map, check, send each planned request, and split each answer per event."""
    mapped, refused = destination.map_events(events)
    if check is not None:
        mapped = refuse_invalid(mapped, refused, check)
    if not mapped:
        return _nothing_to_send(events, refused)

    async def send_one(out: Outgoing) -> tuple[Outgoing, Result]:
        return out, await destination.context.http.send(
            out.request, destination.context.timeout_secs
        )

    results: list[Sent] = []
    started = time.perf_counter()
    for planned in destination.plan(mapped):
        out, result = await (send or send_one)(planned)
        results.extend(Sent(o, r, outcome, {}) for o, r, outcome in split(out, result))
    duration_ms = (time.perf_counter() - started) * 1000
    return _combine(events, refused, results, duration_ms)
