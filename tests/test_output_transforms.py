"""inferd/output_transforms.py: plugins rewrite or end the output, the same on every
transport, and the client, the history and the observers all get the same text."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from inferd.testing import (
    REPLY,
    TRANSPORTS,
    generate,
    live_server,
    make_app,
    metric_value,
    scrape_metrics,
)
from inferd.testing.sse import parse_sse
from tests.plugin_doubles import HERE

BEFORE_THE_BANG = REPLY[: REPLY.index("!")]  # "Hello there"


def transform_app(tmp_path, *names: str, **tables):
    enabled = ["metrics", *(f"{HERE}:{name}" for name in names)]
    return make_app(tmp_path, plugins={"enabled": enabled}, **tables)


async def history(base: str, session_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=base) as client:
        return (await client.get(f"/chat/history/{session_id}")).json()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_transform_ends_the_generation_on_every_transport(tmp_path, transport):
    app = transform_app(tmp_path, "Stopper", "TextRecorder")
    async with live_server(app) as base:
        reply = await generate(base, transport, session_id="s1")
        stored = await history(base, "s1") if transport != "json" else None
        metrics = await scrape_metrics(base)
        for _ in range(200):  # the engine is told to drop the request
            if app.ctx.fake_backend.closed:
                break
            await asyncio.sleep(0.01)
    assert reply.text == BEFORE_THE_BANG
    assert reply.error is None
    if transport == "json":
        assert reply.finish_reason == "content_filter"
    else:
        assert stored[-1] == {"role": "assistant", "content": BEFORE_THE_BANG}
    endpoint = "completions" if transport == "json" else "chat"
    labels = {"endpoint": endpoint, "finish_reason": "content_filter"}
    assert metric_value(metrics, "requests_finished_total", **labels) == 1
    assert app.ctx.fake_backend.closed == 1
    recorder = app.ctx.text_recorder
    assert "".join(recorder.tokens) == BEFORE_THE_BANG  # observers saw what was sent
    assert recorder.pieces[-1] == ("", True)  # after the stop, later transforms flush
    [generation] = recorder.generations
    assert generation.stats.finish_reason == "content_filter"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_held_text_is_released_at_the_natural_end(tmp_path, transport):
    app = transform_app(tmp_path, "HoldAll")
    async with live_server(app) as base:
        if transport == "sse":
            async with httpx.AsyncClient(base_url=base) as client:
                response = await client.post(
                    "/chat/completions", json={"model-name": "fake", "prompt": "hi"}
                )
            events = parse_sse(response.text).events
            assert [event.data for event in events] == [REPLY]  # one piece, at the end
        reply = await generate(base, transport)
    assert reply.text == REPLY
    assert reply.finish_reason == ("stop" if transport == "json" else None)


async def test_transforms_run_in_listed_order(tmp_path):
    # Upper first: the stopper, looking for "E", only finds it in upper-case text.
    app = transform_app(tmp_path, "Upper", "Stopper", stopper={"at": "E"})
    _, response = await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "x"})
    assert (response.json["text"], response.json["finish_reason"]) == ("H", "content_filter")
    app = transform_app(tmp_path / "b", "Stopper", "Upper", stopper={"at": "E"})
    _, response = await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "x"})
    assert (response.json["text"], response.json["finish_reason"]) == (REPLY.upper(), "stop")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_transform_that_fails_closed_ends_the_answer_with_an_error(tmp_path, transport):
    faulty = {"fails_in": ["transform_output"], "failure_mode": "fail_closed"}
    app = transform_app(tmp_path, "Faulty", faulty=faulty)
    async with live_server(app) as base:
        reply = await generate(base, transport, session_id="s1")
        stored = await history(base, "s1") if transport != "json" else None
        metrics = await scrape_metrics(base)
    assert reply.text == ""
    assert "plugin 'faulty' failed while filtering the output" in reply.error
    if stored is not None:
        assert stored[-1] == {"role": "assistant", "content": ""}
    endpoint = "completions" if transport == "json" else "chat"
    labels = {"endpoint": endpoint, "finish_reason": "error"}
    assert metric_value(metrics, "requests_finished_total", **labels) == 1


async def test_a_transform_that_fails_open_lets_the_text_through(tmp_path, caplog):
    app = transform_app(tmp_path, "Faulty", "Upper", faulty={"fails_in": ["transform_output"]})
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.post(
            "/completions", json={"model": "fake", "prompt": "x"}
        )
    assert response.json["text"] == REPLY.upper()  # faulty skipped, upper still ran
    failures = [r for r in caplog.records if "failed in transform_output" in r.getMessage()]
    assert len(failures) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_transform_that_ends_the_answer_is_content_filter_on_v1(tmp_path, stream):
    app = transform_app(tmp_path, "Stopper")
    body = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    async with live_server(app) as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    if not stream:
        [choice] = response.json()["choices"]
        assert choice["message"]["content"] == BEFORE_THE_BANG
        assert choice["finish_reason"] == "content_filter"
        return
    events = parse_sse(response.text).events
    chunks = [json.loads(e.data) for e in events if e.data != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == BEFORE_THE_BANG
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert response.text.rstrip().endswith("data: [DONE]")
