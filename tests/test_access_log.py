"""inferd/access_log.py: one line per request, with its id, route, status, tokens and
timings -- logged when the request is really over, streams included."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from websockets.asyncio.client import connect

from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.streams import LONG_JSON_REQUESTS, post_and_go_away, wait_for


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="inferd.access")
    return caplog


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "inferd.access"]


async def test_a_json_completion_is_one_line_with_tokens_and_timings(tmp_path, lines):
    app = make_app(tmp_path)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        request_id = "0a5c7f0e-44b6-4a4e-9d7b-6f1f1c1a2b3c"
        await client.post(
            "/completions",
            json={"model": "fake", "prompt": "Hi"},
            headers={"X-Request-ID": request_id},  # a proxy's id is kept
        )
    (line,) = _access(lines)
    assert line.request_id == request_id
    assert (line.method, line.path, line.route, line.status) == (
        "POST",
        "/completions",
        f"{app.name}.completions",
        200,
    )
    assert line.prompt_tokens == 2 and line.generated_tokens == len(REPLY)
    assert line.finish_reason == "stop"
    assert line.duration_ms >= line.ttft_ms >= line.queue_ms >= 0
    # The text format shows the fields in the message itself.
    assert "status=200" in line.getMessage() and f"generated_tokens={len(REPLY)}" in (
        line.getMessage()
    )


async def test_a_stream_is_logged_when_it_ends_not_when_its_headers_go_out(tmp_path, lines):
    app = make_app(tmp_path, FakeBackend(step_delay=0.01))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        body = {"model-name": "fake", "prompt": "Hi"}
        response = await client.post("/chat/completions", json=body)
        await wait_for(lambda: len(_access(lines)) == 1)
    (line,) = _access(lines)
    assert response.status_code == 200
    assert (line.path, line.status, line.generated_tokens) == ("/chat/completions", 200, len(REPLY))
    assert line.duration_ms >= len(REPLY) * 10 * 0.9  # it covers the whole stream


async def test_errors_and_refusals_are_logged_with_their_status(tmp_path, lines):
    app = make_app(tmp_path)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/completions", content=b"{")
        await client.get("/no/such/route")
    assert [(line.path, line.status) for line in _access(lines)] == [
        ("/completions", 400),
        ("/no/such/route", 404),
    ]


async def test_a_client_that_goes_away_mid_stream_is_logged_as_disconnected(tmp_path, lines):
    app = make_app(tmp_path, FakeBackend(endless=True, step_delay=0.01))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        body = {"model": "fake", "prompt": "Hi", "stream": True}
        async with client.stream("POST", "/completions", json=body) as response:
            chunks = response.aiter_text()
            await anext(chunks)
        await wait_for(lambda: len(_access(lines)) == 1)
    (line,) = _access(lines)
    assert (line.status, line.disconnected, line.finish_reason) == (200, True, "cancelled")


@pytest.mark.parametrize(("path", "body"), LONG_JSON_REQUESTS)
async def test_a_client_that_goes_away_before_a_json_answer_is_a_499(tmp_path, lines, path, body):
    # Not the 500 of a server error: nginx's "client closed request", as streams' lines
    # say `disconnected` too.
    app = make_app(tmp_path, FakeBackend(endless=True, step_delay=0.01))
    async with live_server(app) as url:
        await post_and_go_away(url, path, body)
        await wait_for(lambda: len(_access(lines)) == 1)
    (line,) = _access(lines)
    assert (line.path, line.status, line.disconnected) == (path, 499, True)
    assert line.finish_reason == "cancelled"


async def test_each_websocket_message_is_a_line(tmp_path, lines):
    app = make_app(tmp_path)
    async with live_server(app) as url:
        async with connect(url.replace("http", "ws") + "/chat/ws") as ws:
            await ws.send('{"model-name": "fake", "prompt": "Hi"}')
            while await asyncio.wait_for(ws.recv(), 5) != "__END__":
                pass
            await ws.send("not json")
            await asyncio.wait_for(ws.recv(), 5)
        await wait_for(lambda: len(_access(lines)) == 3)
    first, second, upgrade = _access(lines)
    assert (first.path, first.status, first.generated_tokens) == ("/chat/ws", 200, len(REPLY))
    assert (second.status, getattr(second, "generated_tokens", None)) == (400, None)
    assert upgrade.status == 101  # the connection, when it closes
