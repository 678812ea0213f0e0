"""The console's "Send test event" button and Event tester page in process: the real app
with a webhook and an http destination pointed at the fake destination server. The forms
need the session's CSRF token, show the request and the answer with secrets redacted, and
say what is wrong with a pasted event."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from headwater.app import Headwater
from headwater.config.workspace import parse_workspace
from headwater.state.admin_token import AdminToken, _digest
from tests.api.test_testing import API_KEY, ORDER, SIGNING, workspace
from tests.console.test_console import TOKEN, _form_csrf, login
from tests.fakes import FakeDestination

TEST_HOOK = "/console/destinations/hook/test"
TESTER = "/console/event-tester"


@pytest.fixture
async def client(tmp_path: Path, fake: FakeDestination) -> AsyncIterator[httpx.AsyncClient]:
    app = Headwater(parse_workspace(workspace(fake)), tmp_path,
                    admin_token=AdminToken(_digest(TOKEN), "env"))  # fmt: skip
    await app.start()
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hw.test") as c:
            await login(c)
            yield c
    finally:
        await app.stop()


async def csrf(client: httpx.AsyncClient, page: str) -> str:
    return _form_csrf((await client.get(page)).text)


def no_secrets(page: str) -> None:
    assert API_KEY not in page and SIGNING not in page


async def test_the_destination_page_dry_runs_a_sample(
    client: httpx.AsyncClient, fake: FakeDestination
) -> None:
    token = await csrf(client, "/console/destinations/hook")
    page = await client.post(TEST_HOOK, data={"csrf_token": token, "event": "", "send": "0"})
    assert page.status_code == 200, page.text
    assert 'data-result="not_sent"' in page.text and 'data-mode="dry_run"' in page.text
    assert "Not sent (dry run)." in page.text and fake.requests == []
    assert f"POST {fake.url}/hook" in page.text
    no_secrets(page.text)


async def test_send_test_event_shows_the_request_and_the_answer(
    client: httpx.AsyncClient, fake: FakeDestination
) -> None:
    token = await csrf(client, "/console/destinations/hook")
    sent = await client.post(TEST_HOOK, data={"csrf_token": token, "send": "1",
                                              "event": orjson.dumps(ORDER).decode()})  # fmt: skip
    assert sent.status_code == 200, sent.text
    [received] = fake.requests
    assert received.json()["messageId"] == "order-1"
    assert 'data-result="delivered"' in sent.text
    assert 'data-status="200"' in sent.text  # the vendor's answer
    assert "[redacted]" in sent.text
    no_secrets(sent.text)


async def test_a_bad_test_event_is_explained_and_a_form_without_token_refused(
    client: httpx.AsyncClient, fake: FakeDestination
) -> None:
    token = await csrf(client, "/console/destinations/hook")
    bad = await client.post(TEST_HOOK, data={"csrf_token": token, "event": "{nope", "send": "1"})
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    missing = await client.post(TEST_HOOK, data={"csrf_token": token, "send": "1",
                                                 "event": '{"type": "track", "userId": "u"}'})  # fmt: skip
    assert missing.status_code == 400
    assert "a track call needs &#39;event&#39;" in missing.text
    refused = await client.post(TEST_HOOK, data={"event": "", "send": "1"})
    assert refused.status_code == 403 and fake.requests == []


async def test_the_event_tester_shows_each_stage_and_sends_on_request(
    client: httpx.AsyncClient, fake: FakeDestination
) -> None:
    form = await client.get(TESTER)
    assert form.status_code == 200 and '<select id="tester-source"' in form.text
    token = _form_csrf(form.text)
    text = orjson.dumps(ORDER).decode()
    page = await client.post(TESTER, data={"csrf_token": token, "source": "website",
                                           "event": text})  # fmt: skip
    assert page.status_code == 200, page.text
    for stage in ("normalised", "tracking plan", "source transformations"):
        assert f'data-stage="{stage}"' in page.text
    assert 'data-destination="api" data-reaches="yes"' in page.text
    assert 'data-action="send" data-decision="built"' in page.text
    assert fake.requests == []
    # each destination's button carries the pasted event back, escaped
    hidden = re.search(r'name="event" value="([^"]*)"', page.text)
    assert hidden and orjson.loads(html.unescape(hidden.group(1))) == ORDER
    sent = await client.post(TESTER, data={"csrf_token": token, "source": "website",
                                           "event": text, "send": "api"})  # fmt: skip
    assert sent.status_code == 200, sent.text
    [received] = fake.requests
    assert received.path == "/api" and 'id="tester-sent"' in sent.text
    assert 'data-result="delivered"' in sent.text
    no_secrets(sent.text)


async def test_the_event_tester_says_what_is_wrong(client: httpx.AsyncClient) -> None:
    token = await csrf(client, TESTER)
    empty = await client.post(TESTER, data={"csrf_token": token, "source": "website", "event": ""})
    assert empty.status_code == 400 and "Paste one event" in empty.text
    blocked = await client.post(TESTER, data={"csrf_token": token, "source": "website",
                                              "event": '{"type": "track", "event": "Order Completed", "userId": "u", "properties": {}}'})  # fmt: skip
    assert blocked.status_code == 200 and "The tracking plan blocks this event" in blocked.text
    unknown = await client.post(TESTER, data={"csrf_token": token, "source": "nope", "event": "{}"})
    assert unknown.status_code == 404
