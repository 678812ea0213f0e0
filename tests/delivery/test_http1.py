"""The HTTP/1.1 client against raw servers that answer byte for byte as each test scripts."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from headwater.delivery.http import HttpClient, HttpFailure, HttpRequest, HttpResponse
from headwater.delivery.http1 import ConnectError, Http1Client, ProtocolError
from tests.e2e.conftest import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


@asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://localhost:{port}" if tls else f"{scheme}://127.0.0.1:{port}"
    finally:
        srv.close()
        for writer in connections:
            writer.close()
        await srv.wait_closed()


def answering(*responses: bytes, keep_open: bool = True) -> tuple[Handler, list[bytes]]:
    """A handler that answers each request on a connection with the next response."""
    seen: list[bytes] = []
    queue = list(responses)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while queue:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(queue.pop(0))
            await writer.drain()
            if not keep_open:
                return
        await reader.read()

    return handler, seen


async def test_request_format_and_keep_alive_reuse() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            head, body = await read_request(reader)
            assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
            assert b"\r\nX-Team: growth\r\n" in head and body == b'{"a":1}'
            writer.write(OK)

    client = Http1Client()
    async with server(handler) as url:
        for _ in range(5):
            status, _, body = await client.request(
                "POST", f"{url}/hook?x=1", {"X-Team": "growth"}, b'{"a":1}', 5
            )
            assert (status, body) == (200, b"ok")
    await client.close()
    assert connections == 1, "sequential requests should share one kept-alive connection"


async def test_chunked_response_and_interim_100() -> None:
    handler, _ = answering(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
        b"4\r\nslow\r\n5\r\n down\r\n0\r\n\r\n"
    )
    client = Http1Client()
    async with server(handler) as url:
        status, headers, body = await client.request("POST", url, {}, b"{}", 5)
    await client.close()
    assert (status, body) == (503, b"slow down")
    assert headers["Retry-After"] == "7"


async def test_body_delimited_by_close() -> None:
    handler, _ = answering(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", keep_open=False)
    client = Http1Client()
    async with server(handler) as url:
        status, _, body = await client.request("POST", url, {}, b"{}", 5)
    await client.close()
    assert (status, body) == (200, b"until the end")


async def test_connection_close_is_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    client = Http1Client()
    async with server(handler) as url:
        for _ in range(3):
            assert (await client.request("POST", url, {}, b"{}", 5))[0] == 200
    await client.close()
    assert connections == 3


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    """The server closes a kept-alive connection between two requests: the second request
    goes out again on a new connection instead of failing."""
    handler, seen = answering(OK, keep_open=False)
    second, seen2 = answering(OK)
    handlers = iter([handler, second])

    async def dispatch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await next(handlers)(reader, writer)

    client = Http1Client()
    async with server(dispatch) as url:
        assert (await client.request("POST", url, {}, b"1", 5))[0] == 200
        await asyncio.sleep(0.05)  # the server has closed the first connection by now
        assert (await client.request("POST", url, {}, b"2", 5))[0] == 200
    await client.close()
    assert len(seen) == 1 and len(seen2) == 1


async def test_closed_mid_answer_is_a_protocol_error() -> None:
    handler, _ = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", keep_open=False)
    client = Http1Client()
    async with server(handler) as url:
        with pytest.raises(ProtocolError, match="mid-answer"):
            await client.request("POST", url, {}, b"{}", 5)
    await client.close()


async def test_garbage_is_a_protocol_error() -> None:
    handler, _ = answering(b"SMTP ready\r\n\r\n")
    client = Http1Client()
    async with server(handler) as url:
        with pytest.raises(ProtocolError, match="malformed"):
            await client.request("POST", url, {}, b"{}", 5)
    await client.close()


async def test_timeout_and_connection_refused() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    client = Http1Client()
    async with server(silent) as url:
        with pytest.raises(TimeoutError):
            await client.request("POST", url, {}, b"{}", 0.2)
    with pytest.raises(ConnectError, match="cannot connect"):
        await client.request("POST", f"http://127.0.0.1:{free_port()}/", {}, b"{}", 5)
    await client.close()


async def test_https(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    handler, seen = answering(OK)
    client = Http1Client()
    async with server(handler, tls=server_tls) as url:
        with pytest.raises(ConnectError, match="TLS"):  # an unknown CA is refused
            await client.request("POST", f"{url}/in", {}, b"{}", 5)
        monkeypatch.setattr(client, "_tls", client_tls)
        status, _, body = await client.request("POST", f"{url}/in", {}, b"{}", 5)
    await client.close()
    assert (status, body) == (200, b"ok")
    assert seen[0].startswith(b"POST /in HTTP/1.1\r\nHost: localhost:")


async def test_http_client_turns_errors_into_failures() -> None:
    http = HttpClient()
    refused = await http.send(
        HttpRequest("POST", f"http://127.0.0.1:{free_port()}/", {}, b"{}"), timeout_secs=5
    )
    assert isinstance(refused, HttpFailure) and refused.kind == "connect"
    handler, seen = answering(OK)
    async with server(handler) as url:
        answer = await http.send(HttpRequest("POST", url, {"A": "b"}, b"{}"), timeout_secs=5)
    await http.close()
    assert isinstance(answer, HttpResponse) and answer.status == 200
    assert b"\r\nUser-Agent: Headwater" in seen[0]
