"""inferd/remote/worker.py: upstreams unreachable, failing, rejecting, slow, dying or stalling."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from inferd.testing import REPLY, TRANSPORTS, FakeBackend, generate, metric_value, ws_url
from tests.processes import free_port
from tests.remote_worker_support import MODEL, UPSTREAM_MODEL, gateway, http_chunk, upstream


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


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
            writer.write(http_chunk(f"data: {json.dumps(chunk)}\n\n".encode()))
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


async def test_a_request_the_upstream_rejects_is_a_400_with_its_message(tmp_path):
    async with (
        upstream(tmp_path, FakeBackend()) as url,
        gateway(tmp_path, [url]) as base,
    ):
        reply = await generate(base, "json", prompt="x" * 300, model=MODEL)  # context 256
        async with httpx.AsyncClient(base_url=base) as client:
            openai = await client.post(
                "/v1/completions", json={"model": MODEL, "prompt": "x" * 300, "max_tokens": 4}
            )
    assert reply.status == 400
    # The upstream (an inferd, over /v1) says it in OpenAI's words, and its code goes on
    # to /v1 clients, which match on it.
    rejected = f"upstream {url} rejected the request (400): This model's maximum context length"
    assert rejected in reply.error
    assert openai.status_code == 400
    assert openai.json()["error"]["code"] == "context_length_exceeded"


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


async def test_an_upstream_stalling_mid_answer_ends_the_stream_after_the_timeout(tmp_path):
    release = asyncio.Event()

    async def stalling_upstream(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = {"choices": [{"index": 0, "delta": {"content": "Once"}, "finish_reason": None}]}
        writer.write(http_chunk(f"data: {json.dumps(chunk)}\n\n".encode()))
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
