"""inferd/remote/worker.py: a gateway inferd whose model is served by upstream inferds.

The upstreams are real inferd servers on real sockets (FakeBackend models, so each
failure can be staged: slow, failing, endless); the gateway reaches them over HTTP
exactly as it would reach vLLM. Upstreams that fail: test_remote_worker_failures.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import httpx
import openai
import pytest

from inferd.testing import (
    REPLY,
    TRANSPORTS,
    FakeBackend,
    generate,
    metric_value,
    parse_sse,
    scrape_metrics,
)
from tests.remote_worker_support import MODEL, gateway, http_chunk, upstream


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
            writer.write(http_chunk(body) + b"0\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(keep_alive_upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server, gateway(tmp_path, [url], context_length=256) as base:
        replies = [await generate(base, "json", model=MODEL) for _ in range(3)]
    assert [r.text for r in replies] == ["Hi"] * 3
    assert connections == 1
