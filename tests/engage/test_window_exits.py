"""A time window passing its events, in the whole application in process: the clock that
identity processing reads is the test's, so two hours pass in an instant; the scheduled
recompute makes the exit (and the entry of a "has not done it lately" audience), and the
activator delivers both to a real HTTP destination through the delivery engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from headwater.app import Headwater
from headwater.config.workspace import parse_workspace
from headwater.gateway.normalize import iso_ms
from headwater.state.admin_token import AdminToken, _digest
from tests.fakes import FakeDestination

TOKEN = "hwa_window_exits_test_token"
HOUR_MS = 3_600_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % HOUR_MS + 10 * 60_000  # 10 past an hour


def workspace(url: str) -> dict[str, Any]:
    return {
        "sources": [{"name": "backend", "write_key": "wk_backend_1"}],
        "destinations": [{"name": "crm", "type": "webhook", "sources": ["backend"],
                          "settings": {"url": f"{url}/crm"},
                          "delivery": {"batch_max_events": 1}}],
        "spaces": [{
            "name": "main",
            "sources": ["backend"],
            "recompute_interval_secs": 0.2,
            "audiences": [
                {"key": "recent_buyer",
                 "where": {"performed": {"event": "Order Completed", "at_least": 1,
                                         "within": "1h"}},
                 "destinations": [{"name": "crm", "identify": False, "track": True}]},
                {"key": "quiet",
                 "where": {"all": [
                     {"trait": {"name": "email", "op": "exists"}},
                     {"performed": {"event": "Order Completed", "at_most": 0, "within": "1h"}},
                 ]},
                 "destinations": [{"name": "crm", "identify": False, "track": True}]},
            ],
        }],
        "status": {"canary_enabled": False},
        "log": {"durability": "os"},
    }  # fmt: skip


def moves(fake: FakeDestination) -> list[tuple[str, str]]:
    """(event, audience) of each activation the destination received, in order."""
    return [
        (e["event"], e["properties"]["audience_key"])
        for r in fake.requests
        for e in r.events()
        if str(e.get("messageId", "")).startswith("engage-")
    ]


async def until(what: str, fake: FakeDestination, check: Any) -> None:
    try:
        await asyncio.to_thread(fake.wait_for, lambda f: check(), 30)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}; activations {moves(fake)}") from None


async def test_a_window_passing_exits_and_enters_on_schedule(tmp_path: Path) -> None:
    clock = [START_MS]
    with FakeDestination() as fake:
        app = Headwater(parse_workspace(workspace(fake.url)), tmp_path,
                        admin_token=AdminToken(_digest(TOKEN), "env"), now_ms=lambda: clock[0])  # fmt: skip
        await app.start()
        try:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://hw") as client:

                async def send(message: dict[str, Any]) -> None:
                    body = {"userId": "u-1", "timestamp": iso_ms(clock[0]), **message}
                    answer = await client.post(f"/v1/{body.pop('type')}", json=body,
                                               auth=("wk_backend_1", ""))  # fmt: skip
                    assert answer.status_code == 200, answer.text

                await send({"type": "identify", "traits": {"email": "u1@example.com"}})
                await until(
                    "u-1 quiet", fake, lambda: moves(fake) == [("Audience Entered", "quiet")]
                )
                await send({"type": "track", "event": "Order Completed", "messageId": "m-o1"})
                await until("u-1 a recent buyer, no longer quiet", fake, lambda: sorted(moves(fake))
                            == [("Audience Entered", "quiet"), ("Audience Entered", "recent_buyer"),
                                ("Audience Exited", "quiet")])  # fmt: skip
                assert len(moves(fake)) == 3

                clock[0] += 30 * 60_000  # still within the hour: nothing moves
                await asyncio.sleep(1.0)  # five recompute rounds
                assert len(moves(fake)) == 3, moves(fake)

                clock[0] += 2 * HOUR_MS  # the order is out of the window
                await until("the window's exit and entry", fake, lambda: len(moves(fake)) == 5)
                assert sorted(moves(fake)[3:]) == [
                    ("Audience Entered", "quiet"),
                    ("Audience Exited", "recent_buyer"),
                ]
                admin = {"Authorization": f"Bearer {TOKEN}"}
                quiet = (await client.get("/api/v1/spaces/main/audiences/quiet",
                                          params={"limit": 1}, headers=admin)).json()  # fmt: skip
                assert [m["since"] for m in quiet["members"]] == [iso_ms(clock[0])]
                assert quiet["cursor"] == {"has_more": False, "next": ""}
                bad = await client.get("/api/v1/spaces/main/audiences/quiet",
                                       params={"next": "use_x"}, headers=admin)  # fmt: skip
                assert bad.status_code == 400 and "cursor.next" in bad.text, bad.text
                doc = (await client.get("/api/v1/spaces/main/audiences/recent_buyer",
                                        headers=admin)).json()  # fmt: skip
                assert doc["size"] == 0
                assert [c["entered"] for c in doc["changes"]] == [False, True]
                exit_, entry = doc["changes"]
                assert entry["message_id"] == "m-o1" and entry["at"] == iso_ms(START_MS)
                # the window made the exit, not an event: at the recompute, on the clock
                assert exit_["message_id"] is None and exit_["at"] == iso_ms(clock[0])
        finally:
            await app.stop()
