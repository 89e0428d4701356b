"""inferd/admission.py: per-model queue limits and queue timeouts, 503 + Retry-After."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.processes import fake_server
from tests.streams import parse_sse, wait_for

ERROR = "__ERROR__:"


def _limited(**limits) -> list[dict[str, object]]:
    return [{"id": "fake", "name": "fake/model", "path": "/x", "preload": False, **limits}]


def _completion(stream: bool = False) -> dict[str, object]:
    return {"model": "fake", "prompt": "Hi", "stream": stream}


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics")


async def test_a_burst_beyond_max_queue_is_refused_at_once_on_every_transport(tmp_path: Path):
    """A real server process: 1 decoding + 2 queued fill the model; the rest of a burst
    gets 503 + Retry-After at once -- JSON, SSE (a real status) and WebSocket alike."""
    config = tmp_path / "config.toml"
    config.write_text(
        """
[sessions]
path = "sessions"

[[models]]
id = "fake"
name = "fake/model"
path = "/x"
max_concurrent = 1
max_queue = 2
queue_timeout = 20
"""
    )
    with fake_server(
        config, tmp_path / "server.log", "--endless", "--step-delay", "0.05"
    ) as server:
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            # Fill it: one decoding, two waiting (their responses have not started).
            holders = [
                asyncio.create_task(client.post("/completions", json=_completion()))
                for _ in range(3)
            ]
            metrics = ""
            while "requests_running" not in metrics or _waiting(metrics) < 2:
                metrics = (await client.get("/metrics")).text
                await asyncio.sleep(0.02)

            started = time.monotonic()
            json_refusal = await client.post("/completions", json=_completion())
            sse_refusal = await client.post("/completions", json=_completion(stream=True))
            async with connect(server.url.replace("http", "ws") + "/chat/ws") as ws:
                body = {"model-name": "fake/model", "prompt": "Hi"}
                await ws.send(json.dumps(body))
                ws_refusal = await asyncio.wait_for(ws.recv(), timeout=10)
                await ws.send("not json")  # the socket stayed open for the next message
                still_open = await asyncio.wait_for(ws.recv(), timeout=10)
            refused_within = time.monotonic() - started
            metrics = (await client.get("/metrics")).text
            for task in holders:
                task.cancel()
        log = [line for line in server.log_text().splitlines() if "at capacity" in line]

    for response in (json_refusal, sse_refusal):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "at capacity" in response.json()["error"]
    assert ws_refusal.startswith(ERROR) and "at capacity" in ws_refusal
    assert still_open.startswith(ERROR + "malformed JSON")
    # At once: nowhere near the 20 s queue_timeout the queued ones may wait.
    print(f"\nthree refusals answered within {refused_within * 1000:.0f} ms")
    assert refused_within < 10
    labels = {"model": "fake/model", "device": "cpu"}
    assert _metric(metrics, "requests_refused_total", reason="queue_full", **labels) == 3
    assert _metric(metrics, "requests_queue_limit", **labels) == 2
    # Shed load is an expected operating condition: logged as a warning, not an error.
    assert len(log) == 3 and all(" WARNING inferd: " in line for line in log), log


def _waiting(metrics: str) -> float:
    try:
        return _metric(metrics, "requests_waiting", model="fake/model", device="cpu")
    except AssertionError:
        return 0


async def test_a_request_that_waits_past_queue_timeout_gets_503_before_its_stream(tmp_path, caplog):
    backend = FakeBackend(endless=True, step_delay=0.02)
    app = make_app(tmp_path, backend, models=_limited(max_concurrent=1, queue_timeout=0.3))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("POST", "/completions", json=_completion(stream=True)) as first:
            tokens = first.aiter_text()  # kept: a dropped iterator closes the response
            await anext(tokens)  # decoding
            chat = {"model-name": "fake", "prompt": "Hi", "session-id": "never-made"}
            waited = await client.post("/chat/completions", json=chat)
        sessions = (await client.get("/sessions")).json()
    assert waited.status_code == 503  # a real status: the SSE response never started
    assert waited.headers["retry-after"] == "1"
    assert "waited 0.3 s in the queue" in waited.json()["error"]
    # Shedding load is an expected condition, not a failure: a warning, not an error.
    [logged] = [r for r in caplog.records if "waited 0.3 s" in r.getMessage()]
    assert logged.levelname == "WARNING"
    assert sessions == []  # a refused chat creates no session
    gate = app.ctx.admission.gates()[0]
    assert gate.refused["queue_timeout"] == 1
    await wait_for(lambda: gate.in_flight == 0)


async def test_places_are_given_back_however_a_request_ends(tmp_path):
    backend = FakeBackend(reply="ab", step_delay=0.01)
    app = make_app(tmp_path, backend, models=_limited(max_concurrent=1, max_queue=0))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        ok = await client.post("/completions", json=_completion())
        bad_device = await client.post("/completions", json={**_completion(), "device": "tpu"})
        streamed = await client.post("/completions", json=_completion(stream=True))
        async with client.stream("POST", "/completions", json=_completion(stream=True)) as r:
            tokens = r.aiter_text()
            await anext(tokens)  # then the client goes away mid-stream
        gate = app.ctx.admission.gates()[0]
        await wait_for(lambda: gate.in_flight == 0)
        again = await client.post("/completions", json=_completion())
    assert [ok.status_code, bad_device.status_code, streamed.status_code] == [200, 400, 200]
    assert again.json()["text"] == "ab"
    assert gate.refused["queue_full"] == 0


async def test_the_queue_admits_in_order_up_to_its_limit(tmp_path):
    backend = FakeBackend(reply="abc", step_delay=0.02)
    app = make_app(tmp_path, backend, models=_limited(max_concurrent=1, max_queue=3))
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        responses = await asyncio.gather(
            *(client.post("/completions", json=_completion(stream=True)) for _ in range(4))
        )
    assert [r.status_code for r in responses] == [200] * 4
    assert [parse_sse(r.text).text for r in responses] == ["abc"] * 4


async def test_max_queue_defaults_to_four_times_max_concurrent(tmp_path):
    app = make_app(tmp_path, models=_limited(max_concurrent=3))
    _, response = await app.asgi_client.post("/completions", json=_completion())
    assert response.json["text"] == REPLY
    (gate,) = app.ctx.admission.gates()
    assert (gate.max_concurrent, gate.max_queue, gate.capacity) == (3, 12, 15)
