"""Oversize and slowly sent bodies against a real ``headwater serve`` (issue 13, part 3).

A body over the endpoint's limit must be answered with the JSON 400 every time — never a
broken pipe or a connection reset, which an SDK takes for a network error and retries — by
raw sockets, urllib (which sends ``Connection: close``), curl (``Expect: 100-continue`` past
1 MB) and analytics-python (requests, keep-alive). Past the hard bound (32 MiB) the answer
is 413 with ``Connection: close`` and a clean close. Clients that trickle headers or a body
are cut with a 408 while other requests are served.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from segment.analytics.request import APIError, post

from tests.e2e.conftest import WRITE_KEY, Server, write_workspace
from tests.fakes import free_port

AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
KB = 1000
MB = 1000 * 1000
CEILING_S = 30.0  # the most any single answer may take on a busy machine


def _padding(size: int) -> str:
    return "p" * size


def event_body(size: int) -> bytes:
    """A track event with a property that makes the JSON body about ``size`` bytes."""
    event = {"userId": "u-1", "event": "Big", "properties": {"pad": _padding(size)}}
    return json.dumps(event).encode()


def batch_body(size: int) -> bytes:
    item = {"type": "track", "userId": "u-1", "event": "Big", "properties": {"pad": ""}}
    events = [dict(item, properties={"pad": _padding(size // 4)}) for _ in range(4)]
    return json.dumps({"batch": events}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (default limits and timeouts)."""
    base = tmp_path_factory.mktemp("bodies")
    srv = Server(base / "data", write_workspace(base / "workspace.yaml"), free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with short header and body time limits."""
    base = tmp_path_factory.mktemp("impatient")
    extra = "gateway:\n  headers_timeout_secs: 1\n  body_timeout_secs: 1.5\n"
    srv = Server(base / "data", write_workspace(base / "workspace.yaml", extra), free_port())
    srv.start()
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------- raw sockets


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response off the socket (status, headers, body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed before answering (got {data!r})"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed in the middle of the answer"
        rest += chunk
    return status, headers, rest[:length]


def raw_post(
    server: Server, path: str, body: bytes, *, close: bool = True
) -> tuple[int, dict[str, str], bytes, bool]:
    """POST over a fresh socket, the whole body sent before reading (as SDKs do); also says
    whether the server then closed the connection cleanly (EOF, not a reset)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=CEILING_S) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        sock.sendall(head.encode() + body)
        status, headers, answer = read_response(sock)
        clean = False
        if close:
            clean = sock.recv(65536) == b""  # a reset raises ConnectionResetError here
        return status, headers, answer, clean


def assert_too_large(status: int, answer: bytes, expected: int = 400) -> None:
    assert status == expected, answer
    assert json.loads(answer)["code"] == "payload_too_large"


def test_raw_socket_600kb_event_is_answered_400_100_of_100(server: Server) -> None:
    body = event_body(600 * KB)
    for _ in range(100):
        status, _, answer, clean = raw_post(server, "/v1/track", body)
        assert_too_large(status, answer)
        assert "32 KB" in json.loads(answer)["message"]
        assert clean, "the server reset the connection instead of closing it"


@pytest.mark.parametrize(("size", "times"), [(3 * MB, 20), (16 * MB, 3)])
def test_raw_socket_large_batches_are_answered_400(server: Server, size: int, times: int) -> None:
    body = batch_body(size)
    for _ in range(times):
        status, _, answer, clean = raw_post(server, "/v1/batch", body)
        assert_too_large(status, answer)
        assert clean


def test_a_refused_body_leaves_a_keep_alive_connection_usable(server: Server) -> None:
    """The refused body is read to its end, so the next request on the connection works."""
    big, good_id = event_body(600 * KB), f"keep-{uuid.uuid4()}"
    good = json.dumps({"userId": "u-1", "event": "Small", "messageId": good_id}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=CEILING_S) as sock:
        for body, expected in [(big, 400), (big, 400), (good, 200)]:
            head = (
                f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            status, _, answer = read_response(sock)
            assert status == expected, answer
    assert good_id in assert_stored_once_subset(server, [good_id])


def assert_stored_once_subset(server: Server, ids: list[str]) -> set[str]:
    """The ids each stored once (other tests of the module store events too)."""
    counts = Counter(json.loads(payload).get("messageId") for _, payload in server.rows())
    assert all(counts[i] == 1 for i in ids), {i: counts[i] for i in ids}
    return set(ids)


def test_over_the_hard_bound_is_413_with_a_clean_close(server: Server) -> None:
    body = batch_body(40 * MB)
    for _ in range(3):
        status, headers, answer, clean = raw_post(server, "/v1/batch", body, close=False)
        assert_too_large(status, answer, expected=413)
        assert headers.get("connection") == "close"
        assert "32 MiB" in json.loads(answer)["message"]
    status, _, answer, clean = raw_post(server, "/v1/batch", body)
    assert_too_large(status, answer, expected=413)
    assert clean


def test_a_client_waiting_for_100_continue_gets_the_400_without_sending(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=CEILING_S) as sock:
        sock.sendall(
            (
                "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {AUTH}\r\nContent-Length: {3 * MB}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        status, headers, answer = read_response(sock)  # not "100 Continue"
        assert_too_large(status, answer)
        assert headers.get("connection") == "close"


# ---------------------------------------------------------------------------- urllib


def urllib_post(server: Server, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{server.url}{path}", data=body, headers={"Authorization": AUTH}
    )
    try:
        with urllib.request.urlopen(request, timeout=CEILING_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(
    ("path", "body", "times", "status"),
    [
        ("/v1/track", event_body(600 * KB), 100, 400),
        ("/v1/batch", batch_body(3 * MB), 100, 400),
        ("/v1/batch", batch_body(16 * MB), 3, 400),
        ("/v1/batch", batch_body(40 * MB), 3, 413),
    ],
    ids=["600KB-event", "3MB-batch", "16MB-batch", "40MB-batch"],
)
def test_urllib_always_reads_the_refusal(
    server: Server, path: str, body: bytes, times: int, status: int
) -> None:
    """urllib sends Connection: close and reads only after sending everything."""
    answers = Counter()
    for _ in range(times):
        try:
            code, answer = urllib_post(server, path, body)
            answers[(code, json.loads(answer)["code"])] += 1
        except (urllib.error.URLError, OSError) as exc:
            answers[(0, f"{type(exc).__name__}: {exc}")] += 1
    assert answers == {(status, "payload_too_large"): times}


# ---------------------------------------------------------------------------- curl

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl_post(server: Server, path: str, body_file: Path) -> tuple[int, bytes]:
    result = subprocess.run(
        ["curl", "-sS", "-u", f"{WRITE_KEY}:", "--data-binary", f"@{body_file}",
         "-w", "\n%{http_code}", "--max-time", str(int(CEILING_S)), f"{server.url}{path}"],
        capture_output=True, timeout=CEILING_S + 10, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"curl failed: {result.stderr.decode()}"
    answer, _, code = result.stdout.rpartition(b"\n")
    return int(code), answer


@needs_curl
@pytest.mark.parametrize(
    ("path", "size", "times"),
    [("/v1/track", 600 * KB, 100), ("/v1/batch", 3 * MB, 20), ("/v1/batch", 16 * MB, 3)],
    ids=["600KB-event", "3MB-batch", "16MB-batch"],
)
def test_curl_reads_the_400(
    server: Server, tmp_path: Path, path: str, size: int, times: int
) -> None:
    """Past 1 MB curl waits for 100 Continue: the 400 comes instead, and no body is sent."""
    body_file = tmp_path / "body.json"
    body_file.write_bytes(event_body(size) if path == "/v1/track" else batch_body(size))
    answers = Counter()
    for _ in range(times):
        code, answer = curl_post(server, path, body_file)
        answers[(code, json.loads(answer)["code"])] += 1
    assert answers == {(400, "payload_too_large"): times}


# ---------------------------------------------------------------------------- analytics-python


def test_analytics_python_reads_the_400_for_an_oversize_batch(server: Server) -> None:
    """The SDK refuses an oversize single message itself, so its request function sends the
    oversize batch (keep-alive session, whole body before reading)."""
    event = {"type": "track", "userId": "u-1", "event": "Big", "properties": {"pad": ""}}
    batch = [dict(event, properties={"pad": _padding(150 * KB)}) for _ in range(4)]
    answers = Counter()
    for _ in range(100):
        try:
            post(WRITE_KEY, host=server.url, batch=batch, timeout=CEILING_S)
            answers["accepted"] += 1
        except APIError as exc:
            answers[(exc.status, exc.code)] += 1
        except Exception as exc:  # a network error is what this test is about
            answers[f"{type(exc).__name__}: {exc}"] += 1
    assert answers == {(400, "payload_too_large"): 100}


# ---------------------------------------------------------------------------- slow clients


def good_request_is_served(server: Server) -> None:
    message_id = f"meanwhile-{uuid.uuid4()}"
    body = json.dumps({"userId": "u-1", "event": "Meanwhile", "messageId": message_id})
    code, answer = urllib_post(server, "/v1/track", body.encode())
    assert code == 200, answer
    assert_stored_once_subset(server, [message_id])


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (the socket's timeout is the ceiling)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_trickled_headers_are_cut_with_408(impatient: Server) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=CEILING_S) as slow:
        slow.sendall(b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        good_request_is_served(impatient)
        slow.sendall(b"a")  # a trickle does not reset the limit
        answer = read_until_closed(slow)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"


def test_trickled_body_is_cut_with_408(impatient: Server) -> None:
    body = event_body(1 * KB)
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=CEILING_S) as slow:
        slow.sendall(
            (
                f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[:10]
        )
        good_request_is_served(impatient)
        slow.sendall(body[10:20])
        answer = read_until_closed(slow)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body did not arrive" in answer
    debugger = impatient.api("/api/v1/sources/website/debugger")  # filed under its code
    assert debugger.status_code == 200, debugger.text
    assert "request_timeout" in debugger.text


def test_a_silent_connection_is_closed_without_an_answer(impatient: Server) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=CEILING_S) as idle:
        good_request_is_served(impatient)
        assert read_until_closed(idle) == b""


def test_normal_requests_still_stored_once(server: Server) -> None:
    """Ack still means durable after all the refusals above (the module's server)."""
    ids = [f"after-{uuid.uuid4()}" for _ in range(5)]
    for message_id in ids:
        body = json.dumps({"userId": "u-1", "event": "After", "messageId": message_id})
        assert urllib_post(server, "/v1/track", body.encode())[0] == 200
    assert_stored_once_subset(server, ids)
