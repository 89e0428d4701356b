"""inferd/remote/worker.py: a gateway inferd whose model is served by upstream inferds.

The upstreams are real inferd servers on real sockets (FakeBackend models, so each
failure can be staged: slow, failing, endless); the gateway reaches them over HTTP
exactly as it would reach vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.asyncio.client import connect

from inferd.app import create_app
from inferd.config import parse_config
from inferd.testing import (
    REPLY,
    TRANSPORTS,
    FakeBackend,
    generate,
    live_server,
    make_app,
    metric_value,
    parse_sse,
    scrape_metrics,
    ws_url,
)
from tests.processes import free_port

MODEL = "remote/model"  # the gateway's name for it
UPSTREAM_MODEL = "fake/model"  # the upstreams' name (inferd.testing's fake model)


@asynccontextmanager
async def upstream(tmp_path: Path, backend: FakeBackend, **sections: Any) -> AsyncIterator[str]:
    """An inferd serving `backend` as "fake/model" (context 256); yields its /v1 URL.

    Its model's thread is stopped and joined on the way out: a failing FakeBackend's
    thread logs a traceback, and Python 3.11 formats one with ast.parse, which races
    with the next test's Sanic router compiling on the main thread (CPython's AST
    recursion counter is per interpreter: "AST constructor recursion depth mismatch")."""
    model = {"id": "fake", "name": UPSTREAM_MODEL, "path": "/nonexistent/fake"}
    app = make_app(tmp_path, backend, models=[{**model, "context_length": 256}], **sections)
    try:
        async with live_server(app) as base:
            yield base + "/v1"
    finally:
        for worker in app.ctx.registry.workers():
            worker.stop()
            await asyncio.to_thread(worker.join, 10)


@asynccontextmanager
async def gateway(tmp_path: Path, urls: list[str], **model: Any) -> AsyncIterator[str]:
    """An inferd whose only model is remote, served by `urls`; yields its base URL."""
    entry = {"id": "r", "name": MODEL, "backend": "openai", "url": urls}
    config = parse_config(
        {
            "sessions": {"path": str(tmp_path / "gateway-sessions")},
            "server": {"keepalive_interval": 0.2},
            "models": [{**entry, "upstream_model": UPSTREAM_MODEL, **model}],
        }
    )
    app = create_app(config)
    async with live_server(app) as base:
        yield base


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_works_through_a_gateway(tmp_path, transport):
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
    ):
        reply = await generate(base, transport, model=MODEL)
    assert (reply.status, reply.error) == (200, None)
    assert reply.text == REPLY


async def test_a_session_continues_and_its_history_goes_upstream_as_messages(tmp_path):
    backend = FakeBackend()
    async with (
        upstream(tmp_path, backend) as url,
        gateway(tmp_path, [url]) as base,
    ):
        first = await generate(base, "sse", prompt="first question", model=MODEL)
        second = await generate(base, "websocket", "", "second", first.session_id, MODEL)
        async with httpx.AsyncClient(base_url=base) as client:
            history = (await client.get(f"/chat/history/{first.session_id}")).json()
    assert second.text == REPLY
    assert [m["content"] for m in history] == ["first question", REPLY, "second", REPLY]
    # The upstream got the whole conversation as messages and applied its own template.
    last_prompt = "".join(chr(token) for token in backend.prompts[-1])
    assert last_prompt == f"User: first question\nAssistant: {REPLY}\nUser: second\nAssistant:"


async def test_the_openai_client_streams_through_a_gateway(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
    ):
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await client.close()
    assert "".join(pieces) == REPLY
    assert len(pieces) > 1  # token by token, not one block


async def test_the_context_length_and_usage_come_from_the_upstream(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        reply = await client.post("/completions", json={"model": MODEL, "prompt": "abc"})
        detail = (await client.get(f"/models/{MODEL}")).json()
    assert reply.status_code == 200
    # The upstream's counts: its tokenizer is one token per character.
    assert (reply.json()["prompt_tokens"], reply.json()["tokens"]) == (3, len(REPLY))
    assert detail["quantization"] is None  # the upstream chose it and does not say
    assert (detail["context_length"], detail["device"], detail["loaded_devices"]) == (
        256,
        "remote",
        ["remote"],
    )


async def test_a_client_disconnect_closes_the_upstream_request_at_once(tmp_path):
    backend = FakeBackend(endless=True, step_delay=0.01)
    async with (
        upstream(tmp_path, backend) as url,
        gateway(tmp_path, [url]) as base,
    ):
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as client,
            client.stream(
                "POST",
                "/completions",
                json={"model": MODEL, "prompt": "x", "stream": True, "max_tokens": 100000},
            ) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break  # one token arrived: the upstream is generating; hang up
        for _ in range(500):  # the upstream drops the request within its next steps
            if backend.closed:
                break
            await asyncio.sleep(0.01)
        steps = backend.steps
        await asyncio.sleep(0.2)
    assert backend.closed == 1
    assert backend.steps == steps  # nothing generated for nobody


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unreachable_upstream_is_a_503_naming_it(tmp_path, transport):
    dead = _dead_url()
    async with gateway(tmp_path, [dead], context_length=256) as base:
        reply = await generate(base, transport, model=MODEL)
    expected = 200 if transport == "websocket" else 503  # a socket gets __ERROR__ frames
    assert reply.status == expected
    assert f"upstream {dead} cannot be reached" in reply.error


async def test_v1_errors_from_upstreams_are_openai_shaped(tmp_path):
    dead = _dead_url()
    async with (
        gateway(tmp_path, [dead], context_length=256) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 503
    error = reply.json()["error"]
    assert error["type"] == "server_error"
    assert dead in error["message"]


async def test_a_request_is_retried_on_another_upstream_before_its_first_token(tmp_path):
    dead = _dead_url()
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [dead, url]) as base,
    ):
        replies = [await generate(base, "json", model=MODEL) for _ in range(3)]
        async with httpx.AsyncClient(base_url=base) as client:
            metrics = (await client.get("/metrics")).text
    assert [r.text for r in replies] == [REPLY] * 3
    assert metric_value(metrics, "completions_errors_total") == 0


async def test_an_upstream_failing_before_its_first_token_is_a_502(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend(fail_after=0)) as url,
        gateway(tmp_path, [url]) as base,
    ):
        reply = await generate(base, "sse", model=MODEL)
    assert reply.status == 502
    assert f"upstream {url} failed" in reply.error
    assert "fake failure" in reply.error


async def test_a_failing_upstream_is_skipped_for_a_working_one(tmp_path):
    async with (
        upstream(tmp_path / "bad", FakeBackend(fail_after=0)) as bad,
        upstream(tmp_path / "good", FakeBackend()) as good,
        gateway(tmp_path, [bad, good]) as base,
    ):
        replies = [await generate(base, "sse", model=MODEL) for _ in range(2)]
    assert [(r.status, r.text) for r in replies] == [(200, REPLY)] * 2


@pytest.mark.parametrize("transport", ["json", "sse"])
async def test_an_upstream_slower_than_the_timeout_is_a_504(tmp_path, transport):
    async with (
        upstream(tmp_path, FakeBackend(step_delay=2.0)) as url,
        gateway(tmp_path, [url], timeout=0.3) as base,
    ):
        reply = await generate(base, transport, model=MODEL)
    assert reply.status == 504
    assert f"upstream {url} did not answer within 0.3 s" in reply.error


async def test_an_upstream_failing_mid_answer_ends_the_stream_with_an_error(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend(fail_after=5)) as url,
        gateway(tmp_path, [url]) as base,
    ):
        reply = await generate(base, "sse", model=MODEL)
        async with httpx.AsyncClient(base_url=base) as client:
            history = (await client.get(f"/chat/history/{reply.session_id}")).json()
    assert reply.status == 200  # the answer had begun: the error comes in the stream
    assert reply.text == REPLY[:5]
    assert f"upstream {url} failed" in reply.error
    assert "mid-answer" in reply.error
    assert history[-1] == {"role": "assistant", "content": REPLY[:5]}  # nothing said is lost


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _dying_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers /models, then for a generation sends two tokens and drops the connection,
    mid-way through its chunked body, as a killed process would."""
    request = await reader.readuntil(b"\r\n\r\n")
    if request.startswith(b"GET"):
        body = json.dumps({"data": [{"id": UPSTREAM_MODEL, "context_length": 256}]}).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    else:
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        for text in ("Once", " upon"):
            chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            writer.write(_http_chunk(f"data: {json.dumps(chunk)}\n\n".encode()))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # as a killed process would: no end, no [DONE]
        return
    await writer.drain()
    writer.close()


async def test_an_upstream_dying_mid_stream_ends_the_stream_with_an_error(tmp_path):
    server = await asyncio.start_server(_dying_upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server, gateway(tmp_path, [url]) as base:
        sse = await generate(base, "sse", model=MODEL)
        async with connect(ws_url(base)) as ws:
            await ws.send(json.dumps({"model-name": MODEL, "prompt": "hi"}))
            frames = [await ws.recv() for _ in range(3)]
    assert (sse.status, sse.text) == (200, "Once upon")
    assert f"upstream {url} closed the connection" in sse.error
    assert frames[:2] == ["Once", " upon"]
    assert frames[2].startswith("__ERROR__:") and url in frames[2]


async def test_the_upstream_key_comes_from_api_key_env(tmp_path, monkeypatch):
    auth = {"enabled": True, "api_keys": ["upstream-key"]}
    async with upstream(tmp_path, FakeBackend(), auth=auth) as url:
        async with gateway(tmp_path / "no-key", [url], context_length=256) as base:
            refused = await generate(base, "json", model=MODEL)
        monkeypatch.setenv("UPSTREAM_KEY", "upstream-key")
        async with gateway(tmp_path / "key", [url], api_key_env="UPSTREAM_KEY") as base:
            accepted = await generate(base, "json", model=MODEL)
    assert refused.status == 502
    assert f"upstream {url} refused inferd's credentials (401)" in refused.error
    assert (accepted.status, accepted.text) == (200, REPLY)


async def test_a_request_the_upstream_rejects_is_a_400_with_its_message(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
    ):
        reply = await generate(base, "json", prompt="x" * 300, model=MODEL)  # context 256
    assert reply.status == 400
    assert f"upstream {url} rejected the request (400): prompt too long" in reply.error


async def test_metrics_count_remote_generations_like_local_ones(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
    ):
        for transport in TRANSPORTS:
            assert (await generate(base, transport, model=MODEL)).status == 200
        metrics = await scrape_metrics(base)
    for endpoint in ("completions", "chat"):  # json asks /completions; sse and ws chat
        tokens = metric_value(metrics, "completions_tokens_total", model=MODEL, endpoint=endpoint)
        assert tokens == len(REPLY) * (1 if endpoint == "completions" else 2)
    assert metric_value(metrics, "model_loaded", model=MODEL, device="remote") == 1


async def test_sse_events_reach_the_client_while_the_upstream_still_generates(tmp_path):
    backend = FakeBackend(endless=True, step_delay=0.005)
    async with (
        upstream(tmp_path, backend) as url,
        gateway(tmp_path, [url]) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        body = {"model-name": MODEL, "prompt": "hi", "max-token": 100000}
        async with client.stream("POST", "/chat/completions", json=body) as response:
            raw = ""
            async for text in response.aiter_text():
                raw += text
                if len(parse_sse(raw).text) >= 20:
                    break
    # An endless answer can only be read in part if it is streamed as it is made.
    assert parse_sse(raw).text.startswith(REPLY[:20])


async def test_a_failure_inside_the_relay_ends_the_stream_instead_of_hanging_it(
    tmp_path, monkeypatch
):
    async def broken_relay(call, first, stream):
        raise RuntimeError("a bug")

    monkeypatch.setattr("inferd.remote.worker.relay", broken_relay)
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
    ):
        reply = await asyncio.wait_for(generate(base, "sse", model=MODEL), 10)
    assert reply.status == 200
    assert "internal error while relaying" in reply.error


async def test_answers_reuse_the_upstream_connection(tmp_path):
    """A finished answer's body is read to its end, so the next request goes out on the
    same keep-alive connection (a new one per request would cost every TTFT)."""
    connections = 0
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()

    async def keep_alive_upstream(reader, writer) -> None:
        nonlocal connections
        connections += 1
        # the gateway closing the connection ends the loop; an exception left in this
        # task would be logged (with a traceback) whenever the task is collected
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await serve_requests(reader, writer)

    async def serve_requests(reader, writer) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
            writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
            writer.write(_http_chunk(body) + b"0\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(keep_alive_upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server, gateway(tmp_path, [url], context_length=256) as base:
        replies = [await generate(base, "json", model=MODEL) for _ in range(3)]
    assert [r.text for r in replies] == ["Hi"] * 3
    assert connections == 1


async def test_an_upstream_stalling_mid_answer_ends_the_stream_after_the_timeout(tmp_path):
    release = asyncio.Event()

    async def stalling_upstream(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = {"choices": [{"index": 0, "delta": {"content": "Once"}, "finish_reason": None}]}
        writer.write(_http_chunk(f"data: {json.dumps(chunk)}\n\n".encode()))
        await writer.drain()
        await release.wait()  # then nothing: not a byte, not a close
        writer.close()

    server = await asyncio.start_server(stalling_upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server, gateway(tmp_path, [url], context_length=256, timeout=0.5) as base:
        reply = await asyncio.wait_for(generate(base, "sse", model=MODEL), 10)
        release.set()
    assert (reply.status, reply.text) == (200, "Once")
    assert f"upstream {url} did not answer within 0.5 s in mid-answer" in reply.error
