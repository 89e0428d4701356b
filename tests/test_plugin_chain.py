"""inferd/plugin_chain.py: hook order, rejections, failure modes, health checks,
request transforms and async hooks -- through real requests on every transport."""

from __future__ import annotations

import logging

import httpx
import pytest
from websockets.asyncio.client import connect

from inferd.config import ConfigError
from inferd.plugins.auth import key_digest
from inferd.testing import (
    REPLY,
    TRANSPORTS,
    generate,
    live_server,
    make_app,
    settle,
    ws_ask,
    ws_url,
)
from tests.plugin_doubles import HERE

COMPLETION = {"model": "fake", "prompt": "hi"}
FAULTY = f"{HERE}:Faulty"


def recorder_app(tmp_path, enabled, **sections):
    return make_app(tmp_path, plugins={"enabled": enabled}, **sections)


def without_tokens(log: list[str]) -> list[str]:
    return [entry for entry in log if not entry.endswith(".on_token")]


def prompt_seen_by_the_model(app) -> str:
    return "".join(chr(token) for token in app.ctx.fake_backend.prompts[-1])


def failure_logs(caplog: pytest.LogCaptureFixture, hook: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if f"failed in {hook}" in r.getMessage()]


async def test_hooks_run_in_order_requests_in_responses_out(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", "metrics", f"{HERE}:Second"])
    _, response = await app.asgi_client.post("/completions", json=COMPLETION)
    assert response.json["text"] == REPLY
    log = app.ctx.plugin_log
    assert without_tokens(log) == [
        "first.on_request",
        "second.on_request",
        "first.on_queued",
        "second.on_queued",
        "first.on_admitted",
        "second.on_admitted",
        "first.on_first_token",
        "second.on_first_token",
        "first.on_finished:stop",
        "second.on_finished:stop",
        "second.on_response",
        "first.on_response",
    ]
    assert log.count("first.on_token") == log.count("second.on_token") == len(REPLY)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_lifecycle_is_the_same_on_every_transport(tmp_path, transport):
    app = recorder_app(tmp_path, [f"{HERE}:First"])
    async with live_server(app) as base:
        reply = await generate(base, transport)
    assert reply.text == REPLY
    lifecycle = [e for e in without_tokens(app.ctx.plugin_log) if "on_re" not in e]
    assert lifecycle == [
        "first.on_queued",
        "first.on_admitted",
        "first.on_first_token",
        "first.on_finished:stop",
    ]
    assert app.ctx.plugin_log.count("first.on_token") == len(REPLY)
    # WebSocket upgrades skip response middleware; the handshake passes on_request.
    assert app.ctx.plugin_log[0] == "first.on_request"
    assert ("first.on_response" in app.ctx.plugin_log) == (transport != "websocket")


async def test_a_rejection_skips_later_plugins_in_and_out(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", f"{HERE}:Second"], first={"reject": "/models"})
    _, response = await app.asgi_client.get("/models")
    assert (response.status, response.json) == (403, {"error": "first says no"})
    assert app.ctx.plugin_log == ["first.on_request", "first.on_response"]


async def test_a_later_rejection_still_passes_earlier_plugins_on_the_way_out(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", f"{HERE}:Second"], second={"reject": "/models"})
    _, response = await app.asgi_client.get("/models")
    assert response.status == 403
    assert app.ctx.plugin_log == [
        "first.on_request",
        "second.on_request",
        "second.on_response",
        "first.on_response",
    ]


async def test_a_failing_lifecycle_hook_is_logged_once_and_the_stream_goes_on(tmp_path, caplog):
    app = recorder_app(tmp_path, [FAULTY, f"{HERE}:First"], faulty={"fails_in": ["on_token"]})
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.post("/completions", json=COMPLETION)
        _, again = await app.asgi_client.post("/completions", json=COMPLETION)
    assert response.json["text"] == again.json["text"] == REPLY.upper()  # its transform ran
    assert app.ctx.faulty.seen.count("on_token") == 2 * len(REPLY)
    assert app.ctx.plugin_log.count("first.on_finished:stop") == 2  # later plugins still ran
    [record] = failure_logs(caplog, "on_token")  # once, not once per token
    assert record.exc_info is not None
    assert "plugin 'faulty' failed in on_token" in record.getMessage()


async def test_a_failing_on_request_fails_open_by_default(tmp_path, caplog):
    app = recorder_app(tmp_path, [f"{HERE}:First", FAULTY], faulty={"fails_in": ["on_request"]})
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.get("/models")
    assert response.status == 200
    assert "x-faulty" not in response.headers  # skipped on the way out too
    assert app.ctx.plugin_log == ["first.on_request", "first.on_response"]
    assert len(failure_logs(caplog, "on_request")) == 1


async def test_a_failing_on_request_fails_closed_when_configured(tmp_path):
    faulty = {"fails_in": ["on_request"], "failure_mode": "fail_closed"}
    app = recorder_app(tmp_path, [f"{HERE}:First", FAULTY, f"{HERE}:Second"], faulty=faulty)
    request, response = await app.asgi_client.get("/models")
    assert response.status == 500
    assert response.json == {
        "error": f"request refused: server plugin 'faulty' failed (request id {request.id})"
    }
    assert response.headers["x-faulty"] == "yes"  # it entered, so it sees the response
    assert app.ctx.plugin_log == ["first.on_request", "first.on_response"]


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_health_checks_never_depend_on_a_plugin_that_does_not_ask(tmp_path, mode):
    faulty = {"fails_in": ["on_request", "on_response"], "failure_mode": mode}
    enabled = [FAULTY, f"{HERE}:First", f"{HERE}:HealthRecorder"]
    app = recorder_app(tmp_path, enabled, faulty=faulty)
    for path in ("/health", "/readiness"):
        _, response = await app.asgi_client.get(path)
        assert response.status == 200
    assert app.ctx.faulty.seen == []
    assert (
        app.ctx.plugin_log
        == [
            "health_recorder.on_request",
            "health_recorder.on_response",
        ]
        * 2
    )
    _, models = await app.asgi_client.get("/models")  # other paths are ordinary ones
    assert models.status == (200 if mode == "fail_open" else 500)


async def test_an_api_error_in_on_request_or_on_response_is_that_answer(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", f"{HERE}:Refuser"])
    _, early = await app.asgi_client.get("/models/secret")
    _, late = await app.asgi_client.get("/models", headers={"X-Refuse-Late": "1"})
    assert (early.status, early.json) == (403, {"error": "no peeking"})
    assert (late.status, late.json) == (409, {"error": "changed my mind"})
    assert app.ctx.plugin_log.count("first.on_response") == 2


@pytest.mark.parametrize("transport", ["json", "sse"])
async def test_a_failing_on_response_is_a_500_and_earlier_plugins_still_see_it(tmp_path, transport):
    faulty = {"fails_in": ["on_response"], "failure_mode": "fail_closed"}
    app = recorder_app(tmp_path, [f"{HERE}:First", FAULTY], faulty=faulty)
    async with live_server(app) as base:
        reply = await generate(base, transport)
    assert reply.status == 500
    assert reply.error.startswith("request refused: server plugin 'faulty' failed")
    assert reply.text == ""
    assert "first.on_response" in app.ctx.plugin_log
    if transport == "sse":  # the stream never started: its generation was dropped
        assert app.ctx.plugin_log[-1] == "first.on_finished:cancelled"


async def test_a_failing_on_response_that_fails_open_leaves_the_response(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:First", FAULTY], faulty={"fails_in": ["on_response"]})
    _, response = await app.asgi_client.post("/completions", json=COMPLETION)
    assert (response.status, response.json["text"]) == (200, REPLY.upper())
    assert app.ctx.plugin_log[-1] == "first.on_response"


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_a_failing_websocket_message_hook(tmp_path, mode):
    faulty = {"fails_in": ["on_websocket_message"], "failure_mode": mode}
    app = recorder_app(tmp_path, [FAULTY], faulty=faulty)
    async with live_server(app) as base, connect(ws_url(base)) as ws:
        first = await ws_ask(ws, {"model-name": "fake", "prompt": "hi"})
        second = await ws_ask(ws, {"model-name": "fake", "prompt": "hi"})  # socket still open
    for reply in (first, second):
        if mode == "fail_open":
            assert (reply.text, reply.error) == (REPLY.upper(), None)
        else:
            assert reply.text == ""
            assert reply.error.startswith("request refused: server plugin 'faulty' failed")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("replace", [False, True])
async def test_transform_request_rewrites_model_prompt_and_sampling(tmp_path, transport, replace):
    rewriter = {"model": "fake", "prompt_suffix": " please", "max_tokens": 5, "replace": replace}
    app = recorder_app(tmp_path, [f"{HERE}:Rewriter"], rewriter=rewriter)
    async with live_server(app) as base:
        reply = await generate(base, transport, prompt="tell me", model="no/such/model")
    assert reply.text == REPLY[:5]
    assert "tell me please" in prompt_seen_by_the_model(app)
    [seen] = app.ctx.rewriter.seen
    assert (seen.model, seen.transport, seen.params.max_tokens) == (
        "no/such/model",
        transport,
        128 if transport == "json" else 512,
    )
    [generation] = app.ctx.rewriter.generations
    assert generation.parsed.model == "fake"  # the generation carries the rewritten request
    assert generation.parsed.params.max_tokens == 5


async def test_a_generation_knows_its_session_and_caller(tmp_path):
    app = recorder_app(
        tmp_path,
        ["auth", f"{HERE}:Rewriter"],
        auth={"enabled": True, "api_keys": ["k"]},
    )
    async with live_server(app) as base:
        headers = {"Authorization": "Bearer k"}
        await generate(base, "sse", headers, session_id="s1", prompt="hello")
    [generation] = app.ctx.rewriter.generations
    assert (generation.session_id, generation.owner) == ("s1", key_digest("k"))
    assert generation.parsed.messages[-1].content == "hello"
    assert (generation.endpoint, generation.transport) == ("chat", "sse")


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_transform_request_may_make_a_chat_stateless(tmp_path, transport):
    app = recorder_app(tmp_path, [f"{HERE}:Rewriter"], rewriter={"stateless": True})
    async with live_server(app) as base:
        reply = await generate(base, transport, session_id="s1")
    assert reply.text == REPLY
    assert "x-session-id" not in reply.headers
    assert app.ctx.sessions.store.count() == 0  # nothing stored


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_transform_request_refuses_with_an_api_error(tmp_path, transport):
    app = recorder_app(tmp_path, [f"{HERE}:Refuser"])
    async with live_server(app) as base:
        reply = await generate(base, transport, model="forbidden")
    assert reply.error == "that model is not for you"
    assert reply.status == (200 if transport == "websocket" else 403)
    assert app.ctx.fake_backend.prompts == []  # refused before tokenisation


async def test_a_transform_that_fails_open_leaves_no_half_made_change(tmp_path, caplog):
    app = recorder_app(tmp_path, [FAULTY], faulty={"fails_in": ["transform_request"]})
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.post(
            "/completions", json={"model": "fake", "prompt": "original"}
        )
    assert response.status == 200
    assert prompt_seen_by_the_model(app) == "original"
    assert len(failure_logs(caplog, "transform_request")) == 1


async def test_a_transform_that_fails_closed_refuses_the_request(tmp_path):
    faulty = {"fails_in": ["transform_request"], "failure_mode": "fail_closed"}
    app = recorder_app(tmp_path, [FAULTY], faulty=faulty)
    request, response = await app.asgi_client.post("/completions", json=COMPLETION)
    assert response.status == 500
    assert response.json == {
        "error": f"request refused: server plugin 'faulty' failed (request id {request.id})"
    }
    assert app.ctx.fake_backend.prompts == []


async def test_a_transform_returning_something_else_is_a_failure(tmp_path, caplog):
    app = recorder_app(tmp_path, [f"{HERE}:WrongReturn"])
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.post("/completions", json=COMPLETION)
    assert response.json["text"] == REPLY
    [record] = failure_logs(caplog, "transform_request")
    assert "returned str, not a ParsedRequest or None" in str(record.exc_info[1])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_hook_may_be_async(tmp_path, transport):
    app = recorder_app(tmp_path, [f"{HERE}:AsyncRecorder"])
    async with live_server(app) as base:
        reply = await generate(base, transport, prompt="Hi")
        await settle(app)
    assert reply.text == REPLY.lower()
    assert "Hi!" in prompt_seen_by_the_model(app)
    log = app.ctx.async_log
    assert log[:3] == ["setup", "on_request", "transform_request"]
    lifecycle = [e for e in log if e.startswith(("on_queued", "on_first", "on_token", "on_fin"))]
    assert lifecycle == [
        "on_queued",
        "on_first_token",
        *(f"on_token:{c}" for c in REPLY.lower()),
        "on_finished:stop",
    ]  # in order, although each on_token is slower than the stream
    transforms = [e for e in log if e.startswith("transform_output")]
    assert transforms == ["transform_output"] * len(REPLY) + ["transform_output:final"]
    assert ("on_response" in log) == (transport != "websocket")


async def test_a_failing_async_setup_stops_start_up(tmp_path):
    app = recorder_app(tmp_path, [f"{HERE}:FailsInAsyncSetup"])
    with pytest.raises(ConfigError, match="'fails_in_async_setup' failed to start: cannot reach"):
        async with live_server(app):
            pass


async def test_health_is_served_while_a_plugin_is_broken_everywhere(tmp_path):
    everything = ["on_request", "on_response", "transform_request", "transform_output"]
    faulty = {"fails_in": everything, "failure_mode": "fail_closed"}
    app = recorder_app(tmp_path, [FAULTY], faulty=faulty)
    async with live_server(app) as base, httpx.AsyncClient(base_url=base) as client:
        health = await client.get("/health")
        models = await client.get("/models")
    assert (health.status_code, models.status_code) == (200, 500)


async def test_transform_request_applies_to_openai_chats_too(tmp_path, caplog):
    app = recorder_app(tmp_path, [f"{HERE}:Rewriter"], rewriter={"prompt_suffix": " please"})
    body = {"model": "fake", "messages": [{"role": "user", "content": "tell me"}]}
    with caplog.at_level(logging.ERROR, logger="inferd.plugins"):
        _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    assert "tell me please" in prompt_seen_by_the_model(app)
    assert failure_logs(caplog, "transform_request") == []
