"""inferd/app.py: the wiring's security rules, probed as an attacker would.

A real server process with auth on: requests Sanic cannot read keep their own status
(413, 400, 408) instead of a 401; unknown routes stay 401 without a key; every response
says `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from sanic import Sanic

from inferd.testing.fakes import make_app
from tests.processes import ServerProcess, fake_server

KEY = {"Authorization": "Bearer secret-key"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("app")
    config = folder / "config.toml"
    config.write_text(
        """
[server]
header_timeout = 0.5
body_timeout = 1.0
request_max_size = 2048

[sessions]
path = "sessions"

[auth]
enabled = true
api_keys = ["secret-key"]

[[models]]
id = "fake"
name = "fake/model"
path = "/x"
"""
    )
    with fake_server(config, folder / "server.log") as proc:
        proc.wait_ready()
        yield proc


def _raw(server: ServerProcess, data: bytes) -> bytes:
    """Send raw bytes (no key), return the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_oversized_headers_are_413_not_401(server):
    answer = _raw(server, b"GET /models HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert _status(answer) == 413
    assert b"nosniff" in answer.lower()


def test_content_length_with_transfer_encoding_is_400_not_401(server):
    smuggle = (
        b"POST /completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    answer = _raw(server, smuggle)
    assert _status(answer) == 400
    assert b"nosniff" in answer.lower()


def test_a_too_large_body_is_413_not_401(server):
    body = b"x" * 4096
    head = b"POST /completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert _status(_raw(server, head + body)) == 413


def test_a_request_too_slow_to_arrive_is_408_not_401(server):
    answer = _raw(server, b"GET /models HTTP/1.1\r\nHost: x\r\n")  # never finishes
    assert _status(answer) == 408


def test_unknown_routes_and_methods_still_need_a_key(server):
    assert httpx.get(f"{server.url}/no/such/route").status_code == 401
    assert httpx.delete(f"{server.url}/models").status_code == 401
    assert httpx.get(f"{server.url}/no/such/route", headers=KEY).status_code == 404


def test_every_response_says_nosniff(server):
    body = {"model": "fake", "prompt": "Hi", "max_tokens": 3}
    responses = {
        "json": httpx.get(f"{server.url}/health"),
        "page": httpx.get(f"{server.url}/"),
        "401": httpx.get(f"{server.url}/models"),
        "404": httpx.get(f"{server.url}/nope", headers=KEY),
        "400": httpx.post(f"{server.url}/completions", content=b"{", headers=KEY),
        "completion": httpx.post(f"{server.url}/completions", json=body, headers=KEY),
        "sse": httpx.post(f"{server.url}/completions", json={**body, "stream": True}, headers=KEY),
        "metrics": httpx.get(f"{server.url}/metrics", headers=KEY),
    }
    for name, response in responses.items():
        assert response.headers.get("x-content-type-options") == "nosniff", name


async def test_nosniff_is_set_in_process_too(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/readiness")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_no_route_makes_sanic_parse_its_handler(tmp_path, monkeypatch):
    # Left unnamed, a route's error format is guessed by parsing the handler's source,
    # and on Python 3.11 that parse races traceback formatting in backend threads
    # ("SystemError: AST constructor recursion depth mismatch"). Every error is
    # answered by inferd.errors anyway, so each route says "json".
    guessed: list[str] = []

    def guess(app: Sanic, handler: object) -> str:
        guessed.append(getattr(handler, "__name__", repr(handler)))
        return ""

    monkeypatch.setattr(Sanic, "_determine_error_format", guess)
    app = make_app(tmp_path, plugins={"enabled": ["metrics"]})
    assert guessed == []
    assert {route.extra.error_format for route in app.router.routes} == {"json"}
