"""plugins/metrics.py: /metrics values move by the right amounts on every transport."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from inferd.testing.clients import TRANSPORTS, generate, metric_value, scrape_metrics
from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.streams import LONG_JSON_REQUESTS, post_and_go_away

MODEL = {"model": "fake/model", "device": "cpu"}
ENDPOINT = {"json": "completions", "sse": "chat", "websocket": "chat"}
REQUESTS = {"json": "completions_requests_total", "sse": "chat_completions_requests_total"}
REQUESTS["websocket"] = REQUESTS["sse"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_one_generation_moves_every_generation_metric(tmp_path, transport):
    app = make_app(tmp_path)
    labels = {**MODEL, "endpoint": ENDPOINT[transport]}
    async with live_server(app) as base:
        await generate(base, "json", prompt="warm up the model")  # so the diff is ours alone
        before = await scrape_metrics(base)
        reply = await generate(base, transport)
        after = await scrape_metrics(base)
    assert reply.text == REPLY

    def moved(name: str, **extra: str) -> float:
        return metric_value(after, name, **extra) - metric_value(before, name, **extra)

    prompt_tokens = len(app.ctx.fake_backend.prompts[-1])
    assert moved(REQUESTS[transport], **MODEL, transport=transport) == 1
    assert moved("completions_tokens_total", **labels) == len(REPLY)
    assert moved("prompt_tokens_total", **labels) == prompt_tokens
    assert moved("requests_finished_total", **labels, finish_reason="stop") == 1
    for histogram in (
        "completions_duration_seconds",
        "time_to_first_token_seconds",
        "request_queue_time_seconds",
        "request_e2e_latency_seconds",
    ):
        assert moved(f"{histogram}_count", **labels) == 1, histogram
    # The fake model streams one character per token: len(REPLY) pieces, one gap fewer.
    assert moved("inter_token_latency_seconds_count", **labels) == len(REPLY) - 1
    assert 0 < moved("request_e2e_latency_seconds_sum", **labels) < 5
    assert moved("completions_errors_total") == 0


async def test_a_generation_without_text_still_has_a_first_token(tmp_path):
    app = make_app(tmp_path, FakeBackend(reply=""))  # the first token is end-of-sequence
    _, response = await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "x"})
    assert response.json["text"] == ""
    _, metrics = await app.asgi_client.get("/metrics")
    labels = {**MODEL, "endpoint": "completions"}
    assert metric_value(metrics.text, "time_to_first_token_seconds_count", **labels) == 1
    assert metric_value(metrics.text, "inter_token_latency_seconds_count", **labels) == 0
    assert metric_value(metrics.text, "completions_tokens_total", **labels) == 0


async def test_exposition_format_and_api_md_names(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    openmetrics = "application/openmetrics-text; version=1.0.0"
    _, negotiated = await app.asgi_client.get("/metrics", headers={"Accept": openmetrics})
    assert negotiated.headers["content-type"].startswith("application/openmetrics-text")
    assert negotiated.text.endswith("# EOF\n")
    _, _ = await app.asgi_client.get("/health")
    _, response = await app.asgi_client.get("/metrics")
    for name in (
        "health_check_requests_total",
        "completions_requests_total",
        "chat_completions_requests_total",
        "completions_duration_seconds",
        "completions_tokens_total",
        "completions_errors_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in response.text, name


async def test_health_checks_are_counted(tmp_path):
    app = make_app(tmp_path)
    for path in ("/health", "/health", "/readiness"):
        await app.asgi_client.get(path)
    _, response = await app.asgi_client.get("/metrics")
    assert metric_value(response.text, "health_check_requests_total", endpoint="health") == 2
    assert metric_value(response.text, "health_check_requests_total", endpoint="readiness") == 1


async def test_rejected_requests_are_errors_by_endpoint_and_status(tmp_path):
    app = make_app(tmp_path)
    await app.asgi_client.post("/completions", json={"model": "fake"})
    await app.asgi_client.post("/completions", json={"model": "nope", "prompt": "x"})
    await app.asgi_client.post("/chat/completions", json={"prompt": "x"})
    _, response = await app.asgi_client.get("/metrics")
    text = response.text
    assert metric_value(text, "completions_errors_total", endpoint="completions", status="400") == 1
    assert metric_value(text, "completions_errors_total", endpoint="completions", status="404") == 1
    assert metric_value(text, "completions_errors_total", endpoint="chat", status="400") == 1
    assert metric_value(text, "completions_requests_total") == 0  # nothing reached a model


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_failed_generation_is_one_error_on_every_transport(tmp_path, transport):
    app = make_app(tmp_path, FakeBackend(fail_after=3))
    async with live_server(app) as base:
        reply = await generate(base, transport)
        text = await scrape_metrics(base)
    assert reply.error is not None or transport == "sse"  # SSE reports it as `event: error`
    endpoint = ENDPOINT[transport]
    assert metric_value(text, "completions_errors_total", endpoint=endpoint, status="500") == 1
    assert metric_value(text, "completions_errors_total") == 1
    assert (
        metric_value(text, "requests_finished_total", endpoint=endpoint, finish_reason="error") == 1
    )
    assert metric_value(text, "completions_tokens_total", endpoint=endpoint) == 3


@pytest.mark.parametrize(("path", "body"), LONG_JSON_REQUESTS)
async def test_a_client_that_goes_away_before_a_json_answer_is_no_error(tmp_path, path, body):
    app = make_app(tmp_path, FakeBackend(endless=True, step_delay=0.01))
    async with live_server(app) as base:
        await post_and_go_away(base, path, body)
        finished = {"finish_reason": "cancelled"}

        async def cancelled() -> float:
            return metric_value(await scrape_metrics(base), "requests_finished_total", **finished)

        for _ in range(100):
            if await cancelled() == 1:
                break
            await asyncio.sleep(0.02)
        text = await scrape_metrics(base)
    assert metric_value(text, "requests_finished_total", **finished) == 1
    assert metric_value(text, "completions_errors_total") == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_rejections_are_counted_when_metrics_comes_first(tmp_path, transport):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": ["k"]})
    async with live_server(app) as base:
        reply = await generate(base, transport)
        text = (await generate_metrics(base, {"Authorization": "Bearer k"})).text
    assert reply.status == 401
    assert (
        metric_value(text, "completions_errors_total", endpoint=ENDPOINT[transport], status="401")
        == 1
    )


async def generate_metrics(base: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.get("/metrics", headers=headers)


async def test_running_waiting_loaded_and_sessions_gauges(tmp_path):
    backend = FakeBackend(endless=True, step_delay=0.005)
    models = [{"id": "fake", "name": "fake/model", "path": "/x", "max_concurrent": 1}]
    app = make_app(tmp_path, backend, models=models)
    body = {"model": "fake", "prompt": "x", "stream": True, "max_tokens": 100000}
    async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def stream_until_cancelled() -> None:
            async with client.stream("POST", "/completions", json=body) as response:
                async for _ in response.aiter_bytes():
                    await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(stream_until_cancelled()) for _ in range(2)]
        text = ""
        for _ in range(200):  # until both are in: one decoding, one queued
            text = await scrape_metrics(base)
            if metric_value(text, "completions_requests_total") == 2 and metric_value(
                text, "requests_running", **MODEL
            ):
                break
            await asyncio.sleep(0.01)
        assert metric_value(text, "requests_running", **MODEL) == 1
        assert metric_value(text, "requests_waiting", **MODEL) == 1
        assert metric_value(text, "model_loaded", **MODEL) == 1
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(200):  # disconnects cancel both generations
            text = await scrape_metrics(base)
            if metric_value(text, "requests_finished_total", finish_reason="cancelled") == 2:
                break
            await asyncio.sleep(0.01)
        assert metric_value(text, "requests_finished_total", finish_reason="cancelled") == 2
        assert metric_value(text, "sessions_active") == 0
        app.ctx.sessions.store.ensure("one", None, None)
        app.ctx.sessions.store.ensure("two", None, None)
        assert metric_value(await scrape_metrics(base), "sessions_active") == 2


async def test_each_app_has_its_own_registry(tmp_path):
    first, second = make_app(tmp_path / "a"), make_app(tmp_path / "b")
    await first.asgi_client.get("/health")
    _, one = await first.asgi_client.get("/metrics")
    _, two = await second.asgi_client.get("/metrics")
    assert metric_value(one.text, "health_check_requests_total") == 1
    assert metric_value(two.text, "health_check_requests_total") == 0


async def test_path_and_switch(tmp_path):
    moved = make_app(tmp_path / "a", metrics={"path": "/internal/metrics"})
    _, response = await moved.asgi_client.get("/internal/metrics")
    assert response.status == 200
    off = make_app(tmp_path / "b", metrics={"enabled": False})
    _, response = await off.asgi_client.get("/metrics")
    assert response.status == 404
