"""inferd/lifecycle.py: the drain on SIGTERM/SIGINT and the clean end, in real processes.

Each process test runs `python -m inferd.testing.server` -- the same server as `inferd
serve`, signals and all, with FakeBackend -- and sends it real signals.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from inferd.sessions import SessionStore
from inferd.testing.fakes import REPLY, FakeBackend, make_app
from tests.processes import ServerProcess, fake_server, inferd_serve
from tests.streams import parse_sse, wait_for


def _config(tmp_path: Path, drain_timeout: float) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[server]
drain_timeout = {drain_timeout}
keepalive_interval = 0.2

[sessions]
path = "sessions"

[[models]]
id = "fake"
name = "fake/model"
path = "/nonexistent/fake"
"""
    )
    return path


def _chat(session_id: str) -> dict[str, object]:
    return {"model-name": "fake/model", "prompt": "Hi", "session-id": session_id}


def _stored(tmp_path: Path, session_id: str) -> list[dict[str, str]]:
    """The session's messages, read from the store the (stopped) server wrote."""
    store = SessionStore(tmp_path / "sessions")
    try:
        session = store.get(session_id)
        assert session is not None, f"session {session_id!r} was not stored"
        return session.messages
    finally:
        store.close()


async def _until_logged(server: ServerProcess, text: str) -> None:
    await wait_for(lambda: text in server.log_text(), timeout=10)


async def _connection_refused(server: ServerProcess) -> bool:
    """Polls until a new connection is refused (the server stopped listening)."""
    for _ in range(200):
        try:
            await asyncio.to_thread(socket.create_connection, ("127.0.0.1", server.port), 1)
        except OSError:
            return True
        await asyncio.sleep(0.02)
    return False


def _half_sent_request(server: ServerProcess) -> tuple[socket.socket, bytes]:
    """A connection busy receiving a request: headers and half the body sent."""
    body = json.dumps({"model": "fake", "prompt": "Hi"}).encode()
    head = (
        f"POST /completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + body[:5])
    return sock, body[5:]


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@asynccontextmanager
async def _draining(server: ServerProcess) -> AsyncIterator[tuple[AsyncIterator[str], list[str]]]:
    """A chat stream ("drained") under way on `server`, then SIGTERM: the stream's
    chunks to come and those received so far, once the drain has begun."""
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=20) as client,
        client.stream("POST", "/chat/completions", json=_chat("drained")) as response,
    ):
        chunks = response.aiter_text()
        received = [await anext(chunks)]
        os.kill(server.process.pid, signal.SIGTERM)
        await _until_logged(server, "draining: 1 generations in flight")
        yield chunks, received


async def test_sigterm_lets_a_stream_finish_stores_it_and_exits_0(tmp_path):
    log = tmp_path / "server.log"
    with fake_server(_config(tmp_path, drain_timeout=20), log, "--step-delay", "0.05") as server:
        await asyncio.to_thread(server.wait_ready)
        idle_ws = await connect(server.url.replace("http", "ws") + "/chat/ws")
        busy, rest_of_body = await asyncio.to_thread(_half_sent_request, server)
        async with _draining(server) as (chunks, received):
            # A request already on its way gets a 503.
            busy.sendall(rest_of_body)
            refusal = await asyncio.to_thread(_read_response, busy)
            # An idle WebSocket is told the server is going away.
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(idle_ws.recv(), timeout=10)

            received += [chunk async for chunk in chunks]
        exit_code = await asyncio.to_thread(server.exit_code, 30)

    # The stream in flight finished and was stored; the process exited cleanly.
    assert parse_sse("".join(received)).text == REPLY
    assert _stored(tmp_path, "drained") == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": REPLY},
    ]
    assert exit_code == 0
    head, _, payload = refusal.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"retry-after: 1" in head.lower()
    assert b"connection: close" in head.lower()
    assert b"shutting down" in payload
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    # Every backend was closed on its own owner thread, then the store.
    assert "fake backend closed on: ['inferd-fake@cpu']" in server.log_text()
    assert "closed fake@cpu" in server.log_text()
    assert "session store closed" in server.log_text()


async def test_new_connections_during_the_drain_are_answered_until_it_ends(tmp_path):
    # Sanic stops listening when the drain ends, not when it begins: a load balancer's
    # probe on a fresh connection sees "draining", never "connection refused".
    log = tmp_path / "server.log"
    with fake_server(_config(tmp_path, drain_timeout=20), log, "--step-delay", "0.05") as server:
        await asyncio.to_thread(server.wait_ready)
        async with _draining(server) as (chunks, received):
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as fresh:
                ready = await fresh.get("/readiness")
                alive = await fresh.get("/health")
                work = await fresh.post("/completions", json={"model": "fake", "prompt": "x"})
            received += [chunk async for chunk in chunks]
        # Once the last generation is done, the listener closes.
        refused = await _connection_refused(server)
        exit_code = await asyncio.to_thread(server.exit_code, 30)

    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert alive.status_code == 200
    assert work.status_code == 503 and work.headers["retry-after"] == "1"
    assert parse_sse("".join(received)).text == REPLY
    assert refused
    assert exit_code == 0


async def test_the_drain_timeout_cancels_streams_and_keeps_their_partial_answers(tmp_path):
    config = _config(tmp_path, drain_timeout=0.5)
    with fake_server(
        config, tmp_path / "server.log", "--endless", "--step-delay", "0.02"
    ) as server:
        await asyncio.to_thread(server.wait_ready)
        received = []
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            with pytest.raises(httpx.HTTPError):  # the connection is cut when time is up
                async with client.stream("POST", "/chat/completions", json=_chat("cut")) as r:
                    async for chunk in r.aiter_text():
                        received.append(chunk)
                        if len(received) == 3:
                            os.kill(server.process.pid, signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.exit_code, 30)

    assert exit_code == 0
    user, assistant = _stored(tmp_path, "cut")
    assert user == {"role": "user", "content": "Hi"}
    # What was answered before the cut is kept, as on a client disconnect.
    endless = REPLY * 100
    assert len(assistant["content"]) >= len(parse_sse("".join(received[:3])).text)
    assert endless.startswith(assistant["content"])


async def test_a_second_signal_exits_at_once(tmp_path):
    config = _config(tmp_path, drain_timeout=60)
    with fake_server(
        config, tmp_path / "server.log", "--endless", "--step-delay", "0.02"
    ) as server:
        await asyncio.to_thread(server.wait_ready)
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=20) as client,
            client.stream("POST", "/chat/completions", json=_chat("x")) as response,
        ):
            chunks = response.aiter_text()  # kept: a dropped iterator closes the response
            await anext(chunks)
            os.kill(server.process.pid, signal.SIGTERM)
            await _until_logged(server, "draining")
            os.kill(server.process.pid, signal.SIGINT)
            # Not the 60 s the drain would allow: the second signal ends it now.
            exit_code = await asyncio.to_thread(server.exit_code, 10)
    assert exit_code == 128 + signal.SIGINT
    assert "second signal" in server.log_text()


# -- in-process: the pieces -------------------------------------------------------------


async def test_while_draining_requests_get_503_with_retry_after_and_readiness_says_so(tmp_path):
    app = make_app(tmp_path)
    app.ctx.lifecycle.draining = True
    _, ready = await app.asgi_client.get("/readiness")
    assert ready.status == 503
    assert ready.json["status"] == "draining"
    _, alive = await app.asgi_client.get("/health")
    assert alive.status == 200  # a liveness probe must not get a draining server killed
    _, refused = await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "x"})
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert "shutting down" in refused.json["error"]


async def test_shut_down_stores_closes_the_store_and_closes_backends_on_their_threads(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    _, response = await app.asgi_client.post(
        "/chat/completions", json={"model-name": "fake", "prompt": "Hi", "session-id": "s"}
    )
    assert response.status == 200
    await app.ctx.lifecycle.shut_down(app)
    assert backend.closed_on == ["inferd-fake@cpu"]
    store = SessionStore(tmp_path / "sessions")
    assert len(store.get("s").messages) == 2
    store.close()
    with pytest.raises(Exception, match="shutting down"):
        await app.ctx.sessions.get("s")


@pytest.mark.real_model
async def test_sigterm_closes_an_mlx_model_on_its_thread_and_exits_0(tmp_path, stories_path):
    """MLX wants its streams released on the thread that used them (MlxBackend.close());
    without that, the process can abort at exit instead of ending with 0."""
    pytest.importorskip("mlx.core")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sessions]\npath = "sessions"\n\n[[models]]\nid = "stories"\nname = "stories260K"\n'
        f'path = "{stories_path}"\ndevice = "metal"\n'
    )
    with inferd_serve(config, tmp_path / "server.log") as server:
        await asyncio.to_thread(server.wait_ready)
        body = {"model": "stories", "prompt": "Once upon a time", "max_tokens": 8}
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            assert (await client.post("/completions", json=body)).status_code == 200
        os.kill(server.process.pid, signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.exit_code, 60)
        log = server.log_text()
    assert exit_code == 0, log
    assert "closed stories@metal" in log  # its owner thread ended, closing the backend
    assert "terminate called" not in log
