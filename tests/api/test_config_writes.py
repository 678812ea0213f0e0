"""The write side of the management API, in process: resources created, changed, disabled
and deleted while events flow (none lost, none sent to a destination while it is disabled,
none out of order), write keys rotated with a grace period, concurrent edits refused (412),
invalid changes refused whole with the field, every change in the audit trail with the
token's name and no secret, and the configuration kept across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.app import Headwater
from headwater.config.changes import ChangeError, ConfigService
from headwater.config.workspace import parse_workspace
from headwater.state.admin_token import AdminToken, _digest
from headwater.state.config import open_config
from tests.fakes import FakeDestination

TOKEN = "hwa_config_writes_test_token_01234"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
KEY = "wk_website_config_writes_1"
SECRET = "hook-shared-secret-0c4e1f"


def workspace(url: str) -> dict[str, Any]:
    return {
        "sources": [{"name": "website", "write_key": KEY}],
        "destinations": [
            {"name": "all", "type": "webhook", "sources": ["website"],
             "settings": {"url": f"{url}/all", "shared_secret": SECRET},
             "delivery": {"batch_max_events": 20}},
        ],
        "status": {"canary_enabled": False},
    }  # fmt: skip


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        done = check()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        await asyncio.sleep(0.05)


def delivered(fake: FakeDestination, path: str) -> list[str]:
    """The messageIds the fake received on ``path``, in arrival order."""
    return [e["messageId"] for r in list(fake.requests) if r.path == path for e in r.events()]


class Sender:
    """Sends track calls one after another until stopped; ``accepted`` in send order."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.accepted: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            message_id = f"e{n:05d}"
            answer = await self.client.post("/v1/track", auth=(KEY, ""), json={
                "userId": "u1", "event": "Tick", "messageId": message_id})  # fmt: skip
            assert answer.status_code == 200, answer.text
            self.accepted.append(message_id)
            n += 1
            await asyncio.sleep(0.003)

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


@pytest.fixture
def fake() -> AsyncIterator[FakeDestination]:
    server = FakeDestination().start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def running(data_dir: Path, document: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = Headwater(parse_workspace(document), data_dir,
                    admin_token=AdminToken(_digest(TOKEN), "env"))  # fmt: skip
    await app.start()
    try:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hw",
                                     headers=ADMIN) as client:  # fmt: skip
            client.app = app  # type: ignore[attr-defined]
            yield client
    finally:
        await app.stop()


async def test_destination_lifecycle_while_events_flow(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        sender = Sender(api)
        sender.start()
        await eventually(lambda: len(sender.accepted) > 50, "events flow")

        made = await api.post("/api/v1/destinations", json={
            "name": "new", "type": "webhook", "sources": ["website"],
            "settings": {"url": f"{fake.url}/new"}, "delivery": {"batch_max_events": 20}})  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["created"] == ["destinations/new"]
        assert made.json()["applied"]["destinations"] == {"new": "created, running"}
        await eventually(
            lambda: len(delivered(fake, "/new")) > 20, "the new destination gets events"
        )
        shown = await api.get("/api/v1/destinations/new")
        assert shown.status_code == 200 and shown.json()["settings"]["url"] == f"{fake.url}/new"

        # a change: the worker restarts after its cursor, at the new URL
        etag = shown.headers["etag"]
        changed = await api.put("/api/v1/destinations/new", headers={"if-match": etag}, json={
            "name": "new", "type": "webhook", "sources": ["website"],
            "settings": {"url": f"{fake.url}/new2"}, "delivery": {"batch_max_events": 20}})  # fmt: skip
        assert changed.status_code == 200, changed.text
        assert changed.headers["etag"] != etag
        assert changed.json()["applied"]["destinations"] == {"new": "updated, running"}
        await eventually(lambda: len(delivered(fake, "/new2")) > 20, "the changed URL gets events")

        before_disable = len(sender.accepted)
        disabled = await api.post("/api/v1/destinations/new/disable")
        assert disabled.status_code == 200, disabled.text
        kept = disabled.json()["applied"]["kept"]["new"]
        assert "kept until purged" in kept and "dead letters" in kept
        after_disable = len(sender.accepted)
        await eventually(
            lambda: len(sender.accepted) > after_disable + 100, "events while disabled"
        )
        before_enable = len(sender.accepted)
        enabled = await api.post("/api/v1/destinations/new/enable")
        assert enabled.status_code == 200, enabled.text
        after_enable = len(sender.accepted)
        await eventually(lambda: len(sender.accepted) > after_enable + 50, "events after enabling")
        wanted = sender.accepted[after_enable + 40]
        await eventually(lambda: wanted in delivered(fake, "/new2"), "delivery resumes")

        # an event accepted while it was disabled: traced as never sent, and why
        paused = sender.accepted[after_disable + 10]
        trace = await api.get(f"/api/v1/events/{paused}")
        assert trace.status_code == 200
        assert "accepted while the destination was disabled" in trace.text

        before_delete = len(sender.accepted)
        deleted = await api.delete("/api/v1/destinations/new")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["deleted"] == ["destinations/new"]
        assert "kept until purged" in deleted.json()["applied"]["kept"]["new"]
        after_delete = len(sender.accepted)
        await eventually(lambda: len(sender.accepted) > after_delete + 50, "events after delete")
        gone = await api.get("/api/v1/destinations/new")
        assert gone.status_code == 404
        # created again under its name: what was accepted while it did not exist never goes
        before_again = len(sender.accepted)
        again = await api.post("/api/v1/destinations", json={
            "name": "new", "type": "webhook", "sources": ["website"],
            "settings": {"url": f"{fake.url}/new3"}})  # fmt: skip
        assert again.status_code == 201, again.text
        after_again = len(sender.accepted)
        await eventually(lambda: len(sender.accepted) > after_again + 30, "events after")
        await sender.stop()
        everything = sender.accepted
        await eventually(lambda: set(everything) <= set(delivered(fake, "/all")),
                         "the untouched destination gets every event")  # fmt: skip
        await eventually(lambda: set(everything[after_again:]) <= set(delivered(fake, "/new3")),
                         "the destination made again gets the events from then on")  # fmt: skip

    # nothing lost, nothing out of order at the destination nobody touched
    first_seen = list(dict.fromkeys(delivered(fake, "/all")))
    assert first_seen == everything
    # the changed destination: in order, and nothing accepted while disabled or after delete
    to_new = delivered(fake, "/new") + delivered(fake, "/new2")
    order = {m: i for i, m in enumerate(everything)}
    positions = [order[m] for m in dict.fromkeys(to_new)]
    assert positions == sorted(positions)
    never = set(everything[after_disable:before_enable]) | set(everything[after_delete:])
    assert not never & set(to_new)
    assert not set(everything[after_delete:before_again]) & set(delivered(fake, "/new3"))
    # and what was accepted while it ran reached it (the backlog is kept across each change)
    assert set(everything[positions[0] : before_disable]) <= set(to_new)
    assert set(everything[after_enable:before_delete]) <= set(to_new)


async def test_sources_created_rotated_and_deleted(tmp_path: Path, fake: FakeDestination) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        made = await api.post("/api/v1/sources", json={"name": "backend"})
        assert made.status_code == 201, made.text
        key = made.json()["writeKey"]  # shown once
        assert key.startswith("wk_")
        listed = await api.get("/api/v1/sources/backend")
        assert key not in listed.text

        async def track(write_key: str) -> int:
            answer = await api.post("/v1/track", auth=(write_key, ""),
                                    json={"userId": "u", "event": "E"})  # fmt: skip
            return answer.status_code

        assert await track(key) == 200
        rotated = await api.post("/api/v1/sources/backend/rotate-write-key",
                                 params={"graceSecs": 3600})  # fmt: skip
        assert rotated.status_code == 200, rotated.text
        new_key = rotated.json()["writeKey"]
        assert new_key != key
        assert rotated.json()["previousKeyValidUntilMs"] > time.time() * 1000 + 3000 * 1000
        assert await track(new_key) == 200 and await track(key) == 200  # both, in the grace
        again = await api.post("/api/v1/sources/backend/rotate-write-key",
                               params={"graceSecs": 0})  # fmt: skip
        newest = again.json()["writeKey"]
        assert await track(newest) == 200
        assert await track(new_key) == 401  # no grace asked: refused at once
        assert await track(key) == 200  # the first rotation's grace still runs

        disabled = await api.post("/api/v1/sources/backend/disable")
        assert disabled.status_code == 200, disabled.text
        deleted = await api.delete("/api/v1/sources/backend")
        assert deleted.status_code == 200, deleted.text
        assert await track(newest) == 401
        last = await api.delete("/api/v1/sources/website")
        assert last.status_code == 400  # a workspace needs a source; refused, with the field
        assert last.json()["errors"][0]["field"] == "sources"


async def test_concurrent_and_invalid_changes_are_refused_whole(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        read = await api.get("/api/v1/destinations/all")
        etag = read.headers["etag"]
        body = {"name": "all", "type": "webhook", "sources": ["website"],
                "settings": {"url": f"{fake.url}/all", "shared_secret": "**********"}}  # fmt: skip
        first = await api.put("/api/v1/destinations/all", headers={"if-match": etag}, json={
            **body, "delivery": {"batch_max_events": 10}})  # fmt: skip
        assert first.status_code == 200, first.text
        late = await api.put("/api/v1/destinations/all", headers={"if-match": etag}, json=body)
        assert late.status_code == 412, late.text
        assert "changed since you read it" in late.json()["errors"][0]["message"]
        bad_etag = await api.put("/api/v1/destinations/all", headers={"if-match": "yesterday"},
                                 json=body)  # fmt: skip
        assert bad_etag.status_code == 400 and bad_etag.json()["errors"][0]["field"] == "If-Match"

        # the masked secret sent back kept the stored one
        stored = open_config(tmp_path).snapshot()
        assert stored.resources[("destinations", "all")]["settings"]["shared_secret"] == SECRET

        revision = stored.revision
        invalid = await api.put("/api/v1/destinations/all", json={
            **body, "settings": {"shared_secret": "x"}, "delivery": {"timeout_secs": -1}})  # fmt: skip
        assert invalid.status_code == 400, invalid.text
        fields = {e["field"]: e["message"] for e in invalid.json()["errors"]}
        assert fields == {"delivery.timeout_secs": "Input should be greater than 0"}, fields
        no_url = await api.put("/api/v1/destinations/all", json={**body, "settings": {}})
        assert no_url.json()["errors"] == [{"type": "invalid", "field": "settings.url",
                                            "message": "required setting is missing"}]  # fmt: skip
        nowhere = await api.put("/api/v1/destinations/all", json={**body, "sources": ["nowhere"]})
        assert nowhere.json()["errors"][0]["field"] == "sources[0]"
        unknown = await api.post("/api/v1/destinations", json={"name": "x", "type": "nope",
                                                                "sources": ["website"]})  # fmt: skip
        assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "type"
        clash = await api.post("/api/v1/destinations", json={**body, "name": "all"})
        assert clash.status_code == 409
        missing = await api.post("/api/v1/destinations/ghost/disable")
        assert missing.status_code == 404
        assert "the destinations are all" in missing.json()["errors"][0]["message"]

        # a whole workspace with one bad destination: nothing of it is applied
        whole = workspace(fake.url)
        whole["destinations"].append({"name": "bad", "type": "webhook", "sources": ["website"]})
        whole["sources"].append({"name": "extra"})
        refused = await api.put("/api/v1/workspace", json=whole)
        assert refused.status_code == 400, refused.text
        assert open_config(tmp_path).snapshot().revision == revision
        assert (await api.get("/api/v1/sources/extra")).status_code == 404


async def test_every_change_is_audited_with_the_token_and_no_secret(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        app: Headwater = api.app  # type: ignore[attr-defined]
        _, token = app.tokens.create("ci-deploy", "editor", None, "test")
        ci = {"authorization": f"Bearer {token}"}
        off = await api.post("/api/v1/destinations/all/disable", headers=ci)
        assert off.status_code == 200, off.text
        viewer = app.tokens.create("viewer", "read_only", None, "test")[1]
        refused = await api.post("/api/v1/destinations/all/enable",
                                 headers={"authorization": f"Bearer {viewer}"})  # fmt: skip
        assert refused.status_code == 403 and "destinations:write" in refused.text
        # trace and diagnose name who did it
        sent = await api.post("/v1/track", auth=(KEY, ""),
                              json={"userId": "u", "event": "E", "messageId": "after-off"})  # fmt: skip
        assert sent.status_code == 200
        trace = (await api.get("/api/v1/events/after-off")).json()
        [held] = [d for d in trace["destinations"] if d["destination"] == "all"]
        assert held["state"] == "held" and "never goes" in held["reason"]
        assert held["change"].startswith("disabled at ")
        assert held["change"].endswith(" by token ci-deploy (api)")
        findings = (await api.get("/api/v1/diagnose")).json()["findings"]
        [finding] = [f for f in findings if f["title"] == "destination all is disabled"]
        assert "it was disabled at " in finding["detail"]
        assert "by token ci-deploy (api)" in finding["detail"]
        trail = await api.get("/api/v1/audit", params={"resource": "destinations/all"})
        assert trail.status_code == 200, trail.text
        entries = trail.json()["entries"]
        assert entries[0]["actor"] == "ci-deploy" and entries[0]["action"] == "disable"
        assert entries[0]["origin"] == "api"
        assert entries[0]["diff"]["enabled"] == {"from": True, "to": False}
        # a rotated key and a secret setting changed: recorded, never shown
        rotated = await api.post("/api/v1/sources/website/rotate-write-key")
        new_key = rotated.json()["writeKey"]
        doc = (await api.get("/api/v1/workspace")).json()["workspace"]
        hook = doc["destinations"][0]
        hook["settings"]["shared_secret"] = "a-brand-new-secret-99"
        assert (await api.put("/api/v1/destinations/all", json=hook)).status_code == 200
        everything = (await api.get("/api/v1/audit")).text
        for secret in (KEY, new_key, SECRET, "a-brand-new-secret-99", token):
            assert secret not in everything


async def test_export_applied_on_a_fresh_data_dir_reproduces_the_configuration(
    tmp_path: Path, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path / "a", workspace(fake.url)) as first:
        made = await first.post("/api/v1/destinations", json={
            "name": "extra", "type": "webhook", "sources": ["website"], "enabled": False,
            "settings": {"url": f"{fake.url}/x", "headers": {"X-Token": "hdr-secret-1"}},
            "filters": [{"if": "event = 'Tick'", "actions": [{"type": "DROP"}]}]})  # fmt: skip
        assert made.status_code == 201, made.text
        rule = await first.post("/api/v1/alert-rules", json={"name": "pager",
                                                             "components": ["*"]})  # fmt: skip
        assert rule.status_code == 201, rule.text
        exported = (await first.get("/api/v1/workspace")).json()
    text = str(exported["workspace"])
    assert SECRET not in text and KEY not in text and "hdr-secret-1" not in text
    assert len(exported["secrets"]) == 3
    # the CI runner has the secrets in its environment; apply expands them (cli/config.py)
    from headwater.config.workspace import expand_env

    secrets = {"HEADWATER_SECRET_SOURCES_WEBSITE_WRITE_KEY": KEY,
               "HEADWATER_SECRET_DESTINATIONS_ALL_SETTINGS_SHARED_SECRET": SECRET,
               "HEADWATER_SECRET_DESTINATIONS_EXTRA_SETTINGS_HEADERS_X_TOKEN": "hdr-secret-1"}  # fmt: skip
    assert sorted(secrets) == sorted(exported["secrets"])
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    document = expand_env(exported["workspace"], "export")

    fresh = {"sources": [{"name": "other"}], "status": {"canary_enabled": False}}
    async with running(tmp_path / "b", fresh) as second:
        plan = (await second.post("/api/v1/workspace/plan", json=document)).json()
        steps = {(s["action"], s["resource"]) for s in plan["steps"]}
        assert {("create", "destinations/extra"), ("create", "sources/website"),
                ("delete", "sources/other"), ("create", "alert-rules/pager")} <= steps  # fmt: skip
        applied = await second.put("/api/v1/workspace", json=document,
                                   headers={"if-match": f'"{plan["revision"]}"'})  # fmt: skip
        assert applied.status_code == 200, applied.text
        again = (await second.post("/api/v1/workspace/plan", json=document)).json()
        assert again["steps"] == []
        assert (await second.put("/api/v1/workspace", json=document)).json()["changed"] == []
        reexported = (await second.get("/api/v1/workspace")).json()
        assert reexported["workspace"] == exported["workspace"]
        stale = await second.put("/api/v1/workspace", json=document,
                                 headers={"if-match": f'"{plan["revision"]}"'})  # fmt: skip
        assert stale.status_code == 412
        sent = await second.post("/v1/track", auth=(KEY, ""), json={"userId": "u", "event": "E"})
        assert sent.status_code == 200


async def test_api_changes_survive_a_restart_and_a_changed_file_wins(
    tmp_path: Path, fake: FakeDestination
) -> None:
    document = workspace(fake.url)
    async with running(tmp_path, document) as api:
        off = await api.post("/api/v1/destinations/all/disable")
        assert off.status_code == 200
    async with running(tmp_path, document) as api:  # the same file: the store's change stays
        shown = (await api.get("/api/v1/destinations/all")).json()
        assert shown["enabled"] is False
    document["sources"].append({"name": "backend"})
    async with running(tmp_path, document) as api:  # the file changed: it is applied whole
        assert (await api.get("/api/v1/destinations/all")).json()["enabled"] is True
        assert (await api.get("/api/v1/sources/backend")).status_code == 200
        trail = (await api.get("/api/v1/audit", params={"resource": "destinations/all"})).json()
        assert [e["action"] for e in trail["entries"]][:2] == ["enable", "disable"]


async def test_a_read_only_service_refuses_changes(tmp_path: Path) -> None:
    async def apply(*_: Any) -> dict[str, Any]:
        raise AssertionError("nothing may be applied")

    service = ConfigService(open_config(tmp_path), apply, read_only="a cluster node")
    with pytest.raises(ChangeError) as refused:
        await service.put("sources", "x", {"name": "x"}, None, create=True)
    assert refused.value.status == 409 and refused.value.faults[0]["type"] == "read_only"
    service.store.close()


async def test_events_accepted_while_disabled_go_out_when_replayed(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        app: Headwater = api.app  # type: ignore[attr-defined]

        async def send(ids: list[str]) -> None:
            for message_id in ids:
                answer = await api.post("/v1/track", auth=(KEY, ""), json={
                    "userId": "u1", "event": "Tick", "messageId": message_id})  # fmt: skip
                assert answer.status_code == 200

        assert (await api.post("/api/v1/destinations/all/disable")).status_code == 200
        since_ms = int(time.time() * 1000)
        while_off = [f"off-{n}" for n in range(10)]
        await send(while_off)
        until_ms = int(time.time() * 1000) + 1
        assert (await api.post("/api/v1/destinations/all/enable")).status_code == 200
        await send(["on-1"])
        await eventually(lambda: "on-1" in delivered(fake, "/all"), "delivery resumes")
        assert not set(while_off) & set(delivered(fake, "/all"))
        assert app.log is not None and app._engine is not None
        end = app.log.stats().last_offset or 0
        engine = app._engine
        await engine.store.run(lambda db: db.create_replay("all", since_ms, until_ms, end))
        await eventually(lambda: set(while_off) <= set(delivered(fake, "/all")),
                         "a replay sends what was accepted while disabled")  # fmt: skip


async def test_a_change_shows_in_the_console_at_once(tmp_path: Path, fake: FakeDestination) -> None:
    from tests.console.test_console import login

    async with running(tmp_path, workspace(fake.url)) as api:
        transport = httpx.ASGITransport(api.app)  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url="http://hw") as browser:
            signed_in = await login(browser, TOKEN)
            assert signed_in.status_code == 303, signed_in.text
            before = await browser.get("/console/destinations/later")
            assert before.status_code == 404
            made = await api.post("/api/v1/destinations", json={
                "name": "later", "type": "devsink", "sources": ["website"]})  # fmt: skip
            assert made.status_code == 201, made.text
            page = await browser.get("/console/destinations/later")
            assert page.status_code == 200 and "later" in page.text
            listed = await browser.get("/console/sources/website")
            assert "later" in listed.text


def kinds(tmp_path: Path, url: str) -> dict[str, tuple[dict[str, Any], dict[str, Any], bool]]:
    """Per kind: a resource to create, the same changed, and whether it applies live."""
    plan_rule = {"type": "TRACK", "key": "Tick", "jsonSchema": {"type": "object"}}
    return {
        "transformations": ({"name": "t1", "source": "website", "rename_event": "Tock"},
                            {"name": "t1", "source": "website", "rename_event": "Tack"}, True),
        "tracking-plans": ({"name": "p1", "sources": ["website"], "rules": [plan_rule]},
                           {"name": "p1", "sources": ["website"], "rules": []}, True),
        "alert-notifiers": ({"name": "n1", "type": "webhook", "settings": {"url": f"{url}/n"}},
                            {"name": "n1", "type": "webhook", "settings": {"url": f"{url}/m"}},
                            True),
        "alert-rules": ({"name": "r1", "components": ["*"], "notifiers": ["*"]},
                        {"name": "r1", "components": ["Tracking API"], "notifiers": ["*"]}, True),
        "watch": ({"name": "w1", "url": f"{url}/status", "type": "http"},
                  {"name": "w1", "url": f"{url}/status2", "type": "http"}, True),
        "warehouses": ({"name": "wh", "type": "duckdb", "path": str(tmp_path / "wh.duckdb"),
                        "sources": ["website"], "sync_interval": 1},
                       {"name": "wh", "type": "duckdb", "path": str(tmp_path / "wh.duckdb"),
                        "sources": ["website"], "sync_interval": 2}, True),
        "spaces": ({"name": "main", "sources": ["website"]},
                   {"name": "main", "sources": ["website"], "recompute_interval_secs": 30}, True),
    }  # fmt: skip


async def test_every_kind_is_created_changed_and_deleted_while_events_flow(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path / "data", workspace(fake.url)) as api:
        sender = Sender(api)
        sender.start()
        for kind, (made, changed, live) in kinds(tmp_path, fake.url).items():
            name = made["name"]
            created = await api.post(f"/api/v1/{kind}", json=made)
            assert created.status_code == 201, (kind, created.text)
            assert created.json()["created"] == [f"{kind}/{name}"]
            assert created.json()["restartRequired"] == ([] if live else [f"{kind}/{name}"])
            if kind != "tracking-plans":  # its one-item PUT is the processor's own route
                etag = created.headers["etag"]
                shown = await api.get(f"/api/v1/{kind}/{name}")
                assert shown.status_code == 200, (kind, shown.text)
                assert shown.headers["etag"] == etag
                replaced = await api.put(f"/api/v1/{kind}/{name}", json=changed,
                                         headers={"if-match": etag})  # fmt: skip
                assert replaced.status_code == 200, (kind, replaced.text)
                assert replaced.json()["changed"] == [f"{kind}/{name}"]
            if kind == "warehouses":  # the changed warehouse syncs on its new interval

                async def synced() -> bool:
                    doc = (await api.get("/api/v1/warehouses/wh")).json()
                    return bool(doc["syncIntervalSecs"] == 2 and doc["lastSync"]
                                and doc["lastSync"]["status"] == "success")  # fmt: skip

                await eventually(synced, "the warehouse made through the API syncs")
            if kind == "spaces":  # the space resolves identities and serves profiles at once

                async def profiled() -> bool:
                    answer = await api.get(
                        "/v1/spaces/main/collections/users/profiles/user_id:u1/traits",
                        auth=(TOKEN, ""),
                    )
                    return answer.status_code == 200

                await eventually(profiled, "the space made through the API has the profile")
            if kind == "watch":  # the changed target is polled at once
                await eventually(lambda: any(r.path == "/status2" for r in list(fake.requests)),
                                 "the changed watch target is polled")  # fmt: skip
            if kind == "transformations":  # applied at ingest from the next event on
                mark = len(sender.accepted)
                await eventually(
                    lambda mark=mark: any(
                        e.get("event") == "Tack" and int(e["messageId"][1:]) > mark
                        for r in list(fake.requests) for e in r.events()
                    ),
                    "the changed transformation renames the events",
                )  # fmt: skip
            listed = await api.get(f"/api/v1/{kind}")
            assert listed.status_code == 200, (kind, listed.text)
            deleted = await api.delete(f"/api/v1/{kind}/{name}")
            assert deleted.status_code == 200, (kind, deleted.text)
            assert deleted.json()["deleted"] == [f"{kind}/{name}"]
            if kind == "spaces":
                gone = await api.get("/v1/spaces/main/collections/users/profiles/user_id:u1/traits",
                                     auth=(TOKEN, ""))  # fmt: skip
                assert gone.status_code == 404, gone.text
            trail = (await api.get("/api/v1/audit", params={"resource": f"{kind}/{name}"})).json()
            assert trail["entries"][0]["action"] == "delete", kind
        await sender.stop()
        everything = sender.accepted
        await eventually(lambda: set(everything) <= set(delivered(fake, "/all")),
                         "every event reaches the destination")  # fmt: skip
    first_seen = list(dict.fromkeys(delivered(fake, "/all")))
    assert first_seen == everything


async def test_tokens_made_listed_and_revoked_through_the_api(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        made = await api.post("/api/v1/tokens", json={"name": "agency", "role": "admin"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        agency = {"authorization": f"Bearer {token}"}
        listed = await api.get("/api/v1/tokens", headers=agency)
        assert listed.status_code == 200 and token not in listed.text
        assert [t["name"] for t in listed.json()["tokens"]] == ["agency"]
        owner = await api.post(
            "/api/v1/tokens", headers=agency, json={"name": "o", "role": "owner"}
        )
        assert owner.status_code == 403, owner.text
        scoped = await api.post("/api/v1/tokens", headers=agency,
                                json={"name": "web", "role": "source_admin", "source": "nope"})  # fmt: skip
        assert scoped.status_code == 400 and "not in the workspace" in scoped.text
        again = await api.post("/api/v1/tokens", json={"name": "agency", "role": "editor"})
        assert again.status_code == 409, again.text
        owner_made = await api.post("/api/v1/tokens", json={"name": "boss", "role": "owner"})
        assert owner_made.status_code == 201
        not_theirs = await api.delete("/api/v1/tokens/boss", headers=agency)
        assert not_theirs.status_code == 403, not_theirs.text
        revoked = await api.delete("/api/v1/tokens/agency")
        assert revoked.status_code == 200 and revoked.json()["revokedMs"]
        assert (await api.get("/api/v1/tokens", headers=agency)).status_code == 401
        assert (await api.delete("/api/v1/tokens/agency")).status_code == 409
        assert (await api.delete("/api/v1/tokens/ghost")).status_code == 404
        trail = (await api.get("/api/v1/audit", params={"resource": "tokens"})).text
        assert token not in trail and '"revoke"' in trail and '"create"' in trail


async def test_a_toggle_never_undoes_a_change_made_beside_it(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        doc = (await api.get("/api/v1/workspace")).json()["workspace"]["destinations"][0]
        for n in range(5):
            changed = {**doc, "settings": {**doc["settings"], "url": f"{fake.url}/v{n}",
                                           "shared_secret": SECRET}}  # fmt: skip
            put, toggle = await asyncio.gather(
                api.put("/api/v1/destinations/all", json={**changed, "enabled": n % 2 == 0}),
                api.post(f"/api/v1/destinations/all/{'disable' if n % 2 == 0 else 'enable'}"),
            )
            assert put.status_code == 200 and toggle.status_code == 200, (put.text, toggle.text)
            stored = open_config(tmp_path).snapshot().resources[("destinations", "all")]
            assert stored["settings"]["url"] == f"{fake.url}/v{n}"  # the PUT is not undone


async def test_a_change_that_changes_nothing_keeps_the_etag(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        read = await api.get("/api/v1/destinations/all")
        etag = read.headers["etag"]
        body = {"name": "all", "type": "webhook", "sources": ["website"],
                "settings": {"url": f"{fake.url}/all", "shared_secret": "**********"},
                "delivery": {"batch_max_events": 20}}  # fmt: skip
        for _ in range(2):
            same = await api.put("/api/v1/destinations/all", json=body, headers={"if-match": etag})
            assert same.status_code == 200, same.text
            assert same.headers["etag"] == etag and same.json()["changed"] == []
        revision = (await api.get("/api/v1/workspace")).json()["revision"]
        again = await api.put("/api/v1/workspace", json=workspace(fake.url))
        assert again.status_code == 200, again.text
        assert again.json()["revision"] == revision and again.json()["changed"] == []


async def test_a_change_stored_but_not_applied_says_so_and_is_applied_when_sent_again(
    tmp_path: Path, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        app: Headwater = api.app  # type: ignore[attr-defined]
        engine = app._engine
        assert engine is not None
        real = engine.reconfigure
        calls = []

        async def fails_once(*args: Any) -> dict[str, str]:
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("the worker is busy")
            return await real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(engine, "reconfigure", fails_once)
        body = {"name": "all", "type": "webhook", "sources": ["website"],
                "settings": {"url": f"{fake.url}/moved", "shared_secret": SECRET}}  # fmt: skip
        failed = await api.put("/api/v1/destinations/all", json=body)
        assert failed.status_code == 500, failed.text
        fault = failed.json()["errors"][0]
        assert fault["type"] == "not_applied" and "stored (revision" in fault["message"]
        assert "the worker is busy" in fault["message"]
        trail = (await api.get("/api/v1/audit", params={"resource": "destinations/all"})).json()
        assert trail["entries"][0]["action"] == "update"  # recorded: it is stored
        retried = await api.put("/api/v1/destinations/all", json=body)
        assert retried.status_code == 200, retried.text
        assert retried.json()["applied"]["destinations"] == {"all": "updated, running"}
        sent = await api.post("/v1/track", auth=(KEY, ""),
                              json={"userId": "u", "event": "E", "messageId": "moved-1"})  # fmt: skip
        assert sent.status_code == 200
        await eventually(lambda: "moved-1" in delivered(fake, "/moved"), "the change runs")


async def test_secrets_are_kept_for_the_same_target_only(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        masked = {"name": "all", "type": "webhook", "sources": ["website"],
                  "settings": {"url": "http://127.0.0.1:9/steal", "shared_secret": "**********"}}  # fmt: skip
        moved = await api.put("/api/v1/destinations/all", json=masked)
        assert moved.status_code == 400, moved.text
        assert moved.json()["errors"][0]["field"] == "settings.shared_secret"
        assert "send this secret again" in moved.json()["errors"][0]["message"]
        fresh = await api.post("/api/v1/destinations", json={
            "name": "other", "type": "webhook", "sources": ["website"],
            "settings": {"url": f"{fake.url}/o", "shared_secret": "**********"}})  # fmt: skip
        assert fresh.status_code == 400 and "none is stored" in fresh.text
        unexpanded = await api.post("/api/v1/destinations", json={
            "name": "other", "type": "webhook", "sources": ["website"],
            "settings": {"url": f"{fake.url}/o", "shared_secret": "${HOOK_SECRET}"}})  # fmt: skip
        assert unexpanded.status_code == 400 and "is not expanded" in unexpanded.text
        whole = (await api.get("/api/v1/workspace")).json()["workspace"]
        refused = await api.put("/api/v1/workspace", json=whole)  # secrets as ${...}
        assert refused.status_code == 400, refused.text
        fields = {e["field"] for e in refused.json()["errors"]}
        assert fields == {"sources[0].write_key", "destinations[0].settings.shared_secret"}


async def test_a_plan_tells_a_reader_nothing_of_secrets(
    tmp_path: Path, fake: FakeDestination
) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        app: Headwater = api.app  # type: ignore[attr-defined]
        reader = {"authorization": f"Bearer {app.tokens.create('r', 'read_only', None, 't')[1]}"}
        document = workspace(fake.url)
        document["destinations"][0]["settings"]["shared_secret"] = "a-guess"
        admin_plan = (await api.post("/api/v1/workspace/plan", json=document)).json()
        assert admin_plan["steps"] == [
            {"action": "change", "resource": "destinations/all", "fields": ["(a secret)"]}
        ]
        read_plan = await api.post("/api/v1/workspace/plan", json=document, headers=reader)
        assert read_plan.status_code == 200 and read_plan.json()["steps"] == []


async def test_a_deleted_sources_old_keys_go_with_it(tmp_path: Path, fake: FakeDestination) -> None:
    async with running(tmp_path, workspace(fake.url)) as api:
        await api.post("/api/v1/sources", json={"name": "shop", "write_key": "wk_shop_first_1"})
        rotated = await api.post("/api/v1/sources/shop/rotate-write-key")
        assert rotated.status_code == 200
        assert (await api.delete("/api/v1/sources/shop")).status_code == 200
        again = await api.post("/api/v1/sources", json={"name": "shop"})
        assert again.status_code == 201
        old = await api.post("/v1/track", auth=("wk_shop_first_1", ""),
                             json={"userId": "u", "event": "E"})  # fmt: skip
        assert old.status_code == 401
        stale = await api.post("/api/v1/sources/shop/rotate-write-key",
                               headers={"if-match": '"1"'})  # fmt: skip
        assert stale.status_code == 412
        new_key = again.json()["writeKey"]
        kept = await api.post("/v1/track", auth=(new_key, ""), json={"userId": "u", "event": "E"})
        assert kept.status_code == 200  # the refused rotation retired nothing


async def test_the_file_is_compared_by_its_bytes_and_function_files_are_checked(
    tmp_path: Path, fake: FakeDestination
) -> None:
    import yaml

    from headwater.config.workspace import load_workspace

    path = tmp_path / "workspace.yaml"
    path.write_text(yaml.safe_dump(workspace(fake.url)))
    data = tmp_path / "data"

    async def start(extra_default: bool) -> tuple[Headwater, httpx.AsyncClient]:
        loaded = load_workspace(path)
        if extra_default:  # as an upgrade with another default would load the same file
            loaded = loaded.model_copy(update={"gateway": loaded.gateway.model_copy(
                update={"rejection_samples": 33})})  # fmt: skip
        app = Headwater(loaded, data, admin_token=AdminToken(_digest(TOKEN), "env"),
                        workspace_file=path)  # fmt: skip
        await app.start()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://hw",
                                   headers=ADMIN)  # fmt: skip
        return app, client

    app, api = await start(False)
    assert (await api.post("/api/v1/destinations/all/disable")).status_code == 200
    missing = await api.put("/api/v1/workspace", json={
        **workspace(fake.url), "functions": [{"name": "f", "kind": "insert", "file": "nope.py",
                                              "destination": "all"}]})  # fmt: skip
    assert missing.status_code == 400 and "nope.py" in missing.text, missing.text
    await api.aclose()
    await app.stop()
    app, api = await start(True)  # the same bytes: the API's change stays
    assert (await api.get("/api/v1/destinations/all")).json()["enabled"] is False
    await api.aclose()
    await app.stop()


def test_the_workspace_file_reads_env_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headwater.config.workspace import load_workspace
    from headwater.errors import ConfigError

    path = tmp_path / "workspace.yaml"
    path.write_text("sources:\n  - {name: web, write_key: '${WEB_KEY}'}\n")
    with pytest.raises(ConfigError, match=r"sources\[0\]\.write_key: the environment variable "
                                          "WEB_KEY is not set"):  # fmt: skip
        load_workspace(path)
    monkeypatch.setenv("WEB_KEY", "wk_from_the_environment")
    assert load_workspace(path).sources[0].write_key == "wk_from_the_environment"


async def test_secrets_from_the_environment_stay_out_of_the_files_history(
    tmp_path: Path, fake: FakeDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from headwater.config.workspace import load_workspace

    monkeypatch.setenv("HOOK_HEADER", "header-secret-from-env-42")
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T0/B0/secret-path-43")
    document = workspace(fake.url)
    document["destinations"][0]["settings"]["headers"] = {"X-Api-Key": "${HOOK_HEADER}"}
    document["alerts"] = {"notifiers": [{"name": "chat", "type": "slack",
                                         "settings": {"url": "${SLACK_URL}"}}]}  # fmt: skip
    path = tmp_path / "workspace.yaml"
    path.write_text(yaml.safe_dump(document))
    app = Headwater(load_workspace(path), tmp_path / "data",
                    admin_token=AdminToken(_digest(TOKEN), "env"), workspace_file=path)  # fmt: skip
    await app.start()
    trail = str([e.diff for e in app.audit.entries().entries])
    await app.stop()
    kept = b"".join(p.read_bytes() for p in (tmp_path / "data" / "state").glob("workspace*"))
    for secret in ("header-secret-from-env-42", "secret-path-43"):
        assert secret.encode() not in kept and secret not in trail
