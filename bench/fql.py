"""FQL benchmark: compiled expressions against hand-written Python, same machine, one run.

For five typical filter conditions it measures how many evaluations a second one core does
with the compiled FQL (``compile_condition``) and with its floor: a hand-written Python
function making the same check with the same care for types (what a person would write
for that one condition). Each is run over the same mix of events (some matching, some
not), in alternating rounds of ``--seconds``; the best round of each counts. It prints
evaluations/s, the ratio to the floor, and PASS/FAIL against the target of 200,000
evaluations/s. Then it measures ``DestinationFilters.apply`` with three filters (drop debug
events, sample 50% of users, drop PII properties) on a typical event of ~500 bytes, and,
for scale, with no filter at all and with three filters none of which matches.

The exit status is 0 whatever the target says.

Run:  .venv/bin/python bench/fql.py [--seconds 0.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.processor.filters import DestinationFilters, FilterConfig
from headwater.processor.fql import compile_condition

TARGET_EVALS_PER_S = 200_000

Check = Callable[[dict[str, Any]], bool]


def _floor_debug(e: dict[str, Any]) -> bool:
    name = e.get("event")
    return e.get("type") == "track" and type(name) is str and name.startswith("Debug ")


def _floor_price(e: dict[str, Any]) -> bool:
    props = e.get("properties")
    price = props.get("price") if type(props) is dict else None
    return type(price) in (int, float) and price > 100 and e.get("userId") is not None


def _floor_names(e: dict[str, Any]) -> bool:
    return e.get("event") in ("Order Completed", "Cart Viewed")


def _floor_email(e: dict[str, Any]) -> bool:
    traits = e.get("traits")
    email = traits.get("email") if type(traits) is dict else None
    return type(email) is str and "@example.com" in email.lower()


def _floor_page(e: dict[str, Any]) -> bool:
    context = e.get("context")
    page = context.get("page") if type(context) is dict else None
    url = page.get("url") if type(page) is dict else None
    user = e.get("userId")
    return (
        e.get("type") in ("track", "page")
        and type(url) is str
        and url.endswith("/checkout")
        and type(user) is str
        and len(user) > 0
    )


CASES: list[tuple[str, Check]] = [
    ('type = "track" and match(event, "Debug *")', _floor_debug),
    ("properties.price > 100 and userId != null", _floor_price),
    ('event in ["Order Completed", "Cart Viewed"]', _floor_names),
    ('contains(lowercase(traits.email), "@example.com")', _floor_email),
    (
        '(type = "track" or type = "page") and match(context.page.url, "*/checkout")'
        " and length(userId) > 0",
        _floor_page,
    ),
]


def typical_event() -> dict[str, Any]:
    """A track event of about 500 bytes, as bench/ingest.py sends (after normalisation)."""
    return {
        "type": "track",
        "messageId": "msg-7f3a91c2",
        "userId": "u1",
        "event": "Order Completed",
        "properties": {
            "order_id": "ord_7f3a91c2",
            "product_id": "sku-12345",
            "name": "Trail Running Shoe",
            "category": "footwear",
            "price": 129.99,
            "quantity": 2,
            "currency": "USD",
            "coupon": None,
            "email": "ada@example.com",
        },
        "traits": {"email": "Ada@Example.com"},
        "context": {
            "library": {"name": "analytics-node", "version": "2.1.0"},
            "ip": "203.0.113.42",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "page": {"path": "/checkout", "url": "https://shop.example.com/checkout"},
        },
        "timestamp": "2026-11-26T12:00:00.000Z",
    }


def event_mix() -> list[dict[str, Any]]:
    """Four events: the typical one, a debug event, an identify, a cheap page view."""
    base = typical_event()
    debug = copy.deepcopy(base) | {"event": "Debug Click", "userId": None}
    identify = {"type": "identify", "userId": "u2", "traits": {"email": "bo@other.org"}}
    page = {"type": "page", "userId": "", "properties": {"price": "12"}, "context": {}}
    return [base, debug, identify, page]


@dataclass(frozen=True)
class Result:
    label: str
    fql_per_s: float
    floor_per_s: float

    @property
    def ratio(self) -> float:
        return self.fql_per_s / self.floor_per_s


def calls_per_s(
    fn: Callable[[dict[str, Any]], object], events: Sequence[Any], secs: float
) -> float:
    batch = list(events) * max(1, 1000 // len(events))
    count = 0
    start = time.perf_counter()
    while True:
        for event in batch:
            fn(event)
        count += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= secs:
            return count / elapsed


def best_of(
    rounds: int, secs: float, events: Sequence[Any], *fns: Callable[[dict[str, Any]], object]
) -> list[float]:
    """The best rate of each function over ``rounds`` alternating rounds."""
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = max(best[i], calls_per_s(fn, events, secs))
    return best


def filter_configs(matching: bool) -> list[FilterConfig]:
    prefix = "" if matching else "type = 'screen' and "
    configs = [
        {"name": "Debug events", "if": f'{prefix}match(event, "Debug *")',
         "actions": [{"type": "DROP"}]},
        {"name": "Half the users", "if": f"{prefix}type = 'track'",
         "actions": [{"type": "SAMPLE", "percent": 1.0, "path": "userId"}]},
        {"name": "No PII", "if": f"{prefix}all" if not prefix else f"{prefix}true",
         "actions": [{"type": "DROP_PROPERTIES",
                      "fields": {"properties": ["email"], "context": ["ip"]}}]},
    ]  # fmt: skip
    return [FilterConfig.model_validate(c) for c in configs]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best counts")
    args = parser.parse_args(argv)

    events = event_mix()
    results = []
    for text, floor in CASES:
        condition = compile_condition(text)
        for event in events:  # the benchmark compares like with like
            assert condition(event) is floor(event), (text, event)
        fql, floor_rate = best_of(args.rounds, args.seconds, events, condition, floor)
        results.append(Result(text, fql, floor_rate))

    event = typical_event()
    three = DestinationFilters(filter_configs(matching=True))
    none_match = DestinationFilters(filter_configs(matching=False))
    empty = DestinationFilters([])
    filter_rates = best_of(
        args.rounds, args.seconds, [event], three.apply, none_match.apply, empty.apply
    )

    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    print()
    print("FQL: compiled expressions vs hand-written Python (one core)")
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()};"
        f" best of {args.rounds} rounds of {args.seconds:g} s over {len(events)} events"
    )
    print()
    width = max(len(r.label) for r in results)
    print(f"  {'expression':<{width}}  {'FQL evals/s':>12}  {'floor evals/s':>13}  ratio")
    for r in results:
        print(
            f"  {r.label:<{width}}  {r.fql_per_s:>12,.0f}  {r.floor_per_s:>13,.0f}  {r.ratio:>5.2f}"
        )
    print()
    print("DestinationFilters.apply on a typical track event (~500 bytes):")
    labels = [
        "3 filters: DROP no match, SAMPLE 100% by userId, DROP_PROPERTIES (modifies)",
        "3 filters, none matching",
        "no filters",
    ]
    for label, rate in zip(labels, filter_rates, strict=True):
        print(f"  {label:<76}  {rate:>12,.0f} events/s")
    print()
    print(f"target: at least {TARGET_EVALS_PER_S:,} evaluations/s per expression on one core")
    for r in results:
        verdict = "PASS" if r.fql_per_s >= TARGET_EVALS_PER_S else "FAIL"
        print(f"  {verdict}  {r.label}: {r.fql_per_s:,.0f} evals/s")
    return 0


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main())
