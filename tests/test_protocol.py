"""inferd/protocol.py: slow clients are cut off and connections are capped, in a real
server process (the guarded protocol is what `inferd serve` runs)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.processes import ServerProcess, fake_server

HEADER_TIMEOUT = 0.6
BODY_TIMEOUT = 1.2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("protocol")
    config = folder / "config.toml"
    config.write_text(
        f"""
[server]
header_timeout = {HEADER_TIMEOUT}
body_timeout = {BODY_TIMEOUT}
max_connections = 4

[sessions]
path = "sessions"

[[models]]
id = "fake"
name = "fake/model"
path = "/x"
"""
    )
    with fake_server(config, folder / "server.log", "--endless", "--step-delay", "0.05") as proc:
        proc.wait_ready()
        yield proc


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _trickle(sock: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send `data` a byte at a time until the server hangs up; seconds it took."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        if time.monotonic() - started > limit:
            break
        time.sleep(every)
    return time.monotonic() - started


def _response(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:  # reset after the answer: what was read still counts
        pass
    return data


def test_headers_trickled_a_byte_at_a_time_are_cut_off_with_408(server):
    sock = _connect(server)
    endless_headers = b"GET /health HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 10_000
    took = _trickle(sock, endless_headers, every=0.05, limit=10)
    answer = _response(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request headers not received in time" in answer
    # Each byte restarted Sanic's idle timer; the total deadline still held.
    assert took < 10


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_with_408(server):
    sock = _connect(server)
    sock.sendall(b"POST /completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    took = _trickle(sock, b"{" + b" " * 4999, every=0.05, limit=10)
    answer = _response(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request body not received in time" in answer
    assert took < 10


def test_a_connection_that_sends_nothing_is_closed(server):
    sock = _connect(server)
    started = time.monotonic()
    assert sock.recv(1024) == b""  # closed by the server, silently
    assert time.monotonic() - started < 10


def test_a_normal_request_is_not_affected(server):
    response = httpx.post(
        f"{server.url}/completions", json={"model": "fake", "prompt": "Hi", "max_tokens": 30}
    )
    # 30 tokens at 50 ms: longer than both deadlines, which end once the body is in.
    assert response.status_code == 200
    assert response.json()["tokens"] == 30


def test_connections_beyond_max_connections_get_503(server):
    body = b'{"model": "fake", "prompt": "Hi", "stream": true}'
    request = b"POST /completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    held = [_connect(server) for _ in range(4)]
    try:
        for sock in held:  # streams keep the connections busy (not idle, not slow)
            sock.sendall(request + body)
        for sock in held:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        extra = _connect(server)
        answer = _response(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"retry-after: 1" in answer
        assert b"too many open connections" in answer
    finally:
        for sock in held:
            sock.close()
    # Places free up as connections close.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/health")
        if response.status_code == 200:
            break
        time.sleep(0.05)
    assert response.status_code == 200
