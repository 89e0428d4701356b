"""inferd/openai/errors.py: every failure on /v1 is in OpenAI's shape; API.md's keep theirs."""

from __future__ import annotations

import httpx
import pytest

from inferd.openai.errors import openai_error
from inferd.openai.responses import ErrorResponse
from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}


def _error(response) -> dict:
    """The error of an OpenAI-shaped body (validated against the published model)."""
    return ErrorResponse.model_validate(response.json).error.model_dump()


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({**CHAT, "n": 2}, "n", "one choice per request"),
        ({**CHAT, "tools": [{"type": "function"}]}, "tools", "does not call tools"),
        ({**CHAT, "response_format": {"type": "json_object"}}, "response_format", "format"),
        ({**CHAT, "logprobs": True}, "logprobs", "log probabilities"),
        ({**CHAT, "logit_bias": {"1": 5}}, "logit_bias", "logit biases"),
        ({**CHAT, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({**CHAT, "messages": []}, "messages", "at least 1"),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "'tool'"),
        (
            {**CHAT, "messages": [{"role": "system", "content": "x"}], "session_id": "s"},
            "messages",
            "needs a user message",
        ),
        (
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages.0.content.0.type",
            "'input_audio' part",
        ),
        ({**CHAT, "max_tokens": 5.5}, "max_tokens", "valid integer"),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options", "'stream'"),
        (
            {**CHAT, "max_tokens": 3, "max_completion_tokens": 4},
            "max_completion_tokens",
            "disagree",
        ),
        ({**CHAT, "frobnicate": 1}, "frobnicate", "unknown field"),
        ({**CHAT, "device": "tpu"}, None, "available devices"),
    ],
)
async def test_a_bad_chat_request_is_a_400_naming_the_parameter(tmp_path, body, param, fragment):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert backend.prompts == []  # nothing was generated


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"echo": True}, "echo"),
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 2}, "logprobs"),
        ({"suffix": "end"}, "suffix"),
    ],
)
async def test_a_bad_completion_request_is_a_400_naming_the_parameter(tmp_path, body, param):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post(
        "/v1/completions", json={"model": "fake", "prompt": "x", **body}
    )
    assert response.status == 400
    assert _error(response)["param"] == param


async def test_the_off_values_of_unsupported_parameters_are_accepted(tmp_path):
    app = make_app(tmp_path)
    body = {
        **CHAT,
        "n": 1,
        "logprobs": False,
        "tools": [],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "parallel_tool_calls": True,
        "store": False,
        "service_tier": "auto",
        "user": "someone",
    }
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 200


async def test_malformed_json_is_a_400(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/v1/chat/completions", data="{not json")
    assert response.status == 400
    assert "malformed JSON" in _error(response)["message"]


async def test_not_found_statuses(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/v1/chat/completions", json={**CHAT, "model": "x/y"})
    assert response.status == 404 and "'x/y'" in _error(response)["message"]
    _, response = await app.asgi_client.get("/v1/models/x/y")
    assert response.status == 404 and _error(response)["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "model": "nope"}),
        ("/v1/completions", {"model": "nope", "prompt": "x"}),
        ("/v1/models/nope", None),
    ],
)
async def test_an_unknown_model_is_model_not_found(tmp_path, path, body):
    # LiteLLM and others match on the code.
    app = make_app(tmp_path)
    if body is None:
        _, response = await app.asgi_client.get(path)
    else:
        _, response = await app.asgi_client.post(path, json=body)
    assert response.status == 404
    error = _error(response)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert error["message"].startswith("model 'nope' not found; available models: fake")


LONG_CHAT = {**CHAT, "messages": [{"role": "user", "content": "x" * 300}]}


@pytest.mark.parametrize(
    ("path", "body", "what", "tokens"),
    [
        ("/v1/chat/completions", LONG_CHAT, "messages", 300 + len("User: \nAssistant:")),
        ("/v1/completions", {"model": "fake", "prompt": "x" * 300}, "prompt", 300),
    ],
)
async def test_a_prompt_too_long_is_context_length_exceeded(tmp_path, path, body, what, tokens):
    app = make_app(tmp_path, FakeBackend(context_length=256))
    _, response = await app.asgi_client.post(path, json=body)
    assert response.status == 400
    assert _error(response) == {
        "message": f"This model's maximum context length is 256 tokens. However, your {what} "
        f"resulted in {tokens} tokens, leaving no room for a generated token. "
        f"Please reduce the length of the {what}.",
        "type": "invalid_request_error",
        "param": what,
        "code": "context_length_exceeded",
    }


async def test_api_md_routes_keep_their_messages_and_shape(tmp_path):
    app = make_app(tmp_path, FakeBackend(context_length=256))
    _, response = await app.asgi_client.post("/completions", json={"model": "nope", "prompt": "x"})
    assert response.status == 404 and response.json == {
        "error": "model 'nope' not found; available models: fake/model"
    }
    _, response = await app.asgi_client.post(
        "/completions", json={"model": "fake", "prompt": "x" * 300}
    )
    assert response.status == 400
    assert response.json["error"].startswith("prompt too long: 300 tokens")
    _, response = await app.asgi_client.get("/v1/embeddings")
    assert response.status == 404 and _error(response)["type"] == "not_found_error"


async def test_wrong_method_and_body_too_large(tmp_path):
    app = make_app(tmp_path, server={"request_max_size": 1024})
    _, response = await app.asgi_client.get("/v1/chat/completions")
    assert response.status == 405 and _error(response)["code"] == "method_not_allowed"
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/v1/chat/completions", content=b"x" * 5000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


async def test_auth_refusal_is_a_401_in_openai_shape_and_api_md_shape(tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": ["k"]})
    _, response = await app.asgi_client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 401
    assert _error(response)["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"
    _, response = await app.asgi_client.post("/completions", json={"model": "fake", "prompt": "x"})
    assert response.status == 401 and isinstance(response.json["error"], str)


async def test_rate_limit_refusal_is_a_429_with_its_headers(tmp_path):
    app = make_app(tmp_path, rate_limit={"enabled": True, "requests_per_minute": 1})
    _, first = await app.asgi_client.get("/v1/models")
    assert first.status == 200
    _, response = await app.asgi_client.get("/v1/models")
    assert response.status == 429
    assert _error(response) == {
        "message": "Rate limit exceeded",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "retry-after" in response.headers


async def test_a_model_that_fails_to_load_is_a_500(tmp_path):
    app = make_app(tmp_path, FakeBackend(load_error="no weights"))
    _, response = await app.asgi_client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 500
    assert _error(response)["type"] == "server_error"
    assert "no weights" in _error(response)["message"]


async def test_a_response_timeout_is_a_503(tmp_path):
    backend = FakeBackend(reply="ab", step_delay=0.5)
    app = make_app(tmp_path, backend, server={"keepalive_interval": 0.1, "response_timeout": 0.3})
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"


def test_unknown_statuses_map_by_class():
    assert openai_error(418, "teapot").error.type == "invalid_request_error"
    assert openai_error(502, "gateway").error.type == "server_error"


def test_an_errors_own_code_wins_over_its_statuss():
    assert openai_error(429, "slow down").error.code == "rate_limit_exceeded"
    assert openai_error(429, "slow down", code="quota").error.code == "quota"
