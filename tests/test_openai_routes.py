"""inferd/openai/routes.py: the /v1 routes over raw HTTP, against the fake backend."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from inferd.openai.responses import ChatCompletion, ChatCompletionChunk, Completion, ModelList
from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.streams import (
    parse_sse,
    post_and_go_away,
    slow_session_writes,
    stored_roles,
    wait_for,
)

USER = {"role": "user", "content": "Hi"}


def _chat(**fields):
    return {"model": "fake/model", "messages": [USER], **fields}


def _prompt_text(backend: FakeBackend, index: int = -1) -> str:
    return "".join(chr(t) for t in backend.prompts[index])


def _chunks(text: str) -> tuple[list[dict], list[str]]:
    """The JSON chunks of an OpenAI stream, and the raw data of every event."""
    events = [event.data for event in parse_sse(text).events]
    return [json.loads(data) for data in events if data != "[DONE]"], events


async def test_models_list_names_each_model_with_its_context_length(tmp_path):
    app = make_app(
        tmp_path, models=[{"id": "f", "name": "org/f", "path": "/x", "context_length": 99}]
    )
    _, response = await app.asgi_client.get("/v1/models")
    assert response.status == 200
    listing = ModelList.model_validate(response.json)
    assert [(m.id, m.context_length, m.object) for m in listing.data] == [("org/f", 99, "model")]
    _, one = await app.asgi_client.get("/v1/models/org/f")
    assert one.status == 200 and one.json["id"] == "org/f"
    # a trailing slash is never part of a name; /v1/models/ is the list
    _, slashed = await app.asgi_client.get("/v1/models/org/f/")
    assert slashed.status == 200 and slashed.json["id"] == "org/f"
    _, listed = await app.asgi_client.get("/v1/models/")
    assert listed.status == 200 and listed.json == response.json


async def test_chat_completion_as_json(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat())
    assert response.status == 200
    reply = ChatCompletion.model_validate(response.json)
    assert reply.id.startswith("chatcmpl-") and reply.model == "fake/model"
    assert reply.choices[0].message.content == REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(REPLY)
    assert reply.usage.prompt_tokens == len(backend.prompts[0])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + len(REPLY)
    assert "x-session-id" not in response.headers  # stateless
    _, sessions = await app.asgi_client.get("/sessions")
    assert sessions.json == []


async def test_max_tokens_and_max_completion_tokens_both_limit_the_answer(tmp_path):
    app = make_app(tmp_path)
    for field in ("max_tokens", "max_completion_tokens"):
        _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat(**{field: 4}))
        assert response.json["choices"][0]["message"]["content"] == REPLY[:4]
        assert response.json["choices"][0]["finish_reason"] == "length"


async def test_stop_may_be_a_string_or_a_list(tmp_path):
    app = make_app(tmp_path)
    for stop in ("there", ["\n", "there"]):
        _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat(stop=stop))
        assert response.json["choices"][0]["message"]["content"] == "Hello "


async def test_system_messages_lead_the_prompt_and_the_turn_follows(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    messages = [
        {"role": "developer", "content": "Be brief."},
        USER,
        {"role": "assistant", "content": "Hey."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "How "}, {"type": "text", "text": "are you?"}],
        },
    ]
    _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat(messages=messages))
    assert response.status == 200
    prompt = _prompt_text(backend)
    assert prompt.index("Be brief.") < prompt.index("Hi") < prompt.index("Hey.")
    assert prompt.index("Hey.") < prompt.index("How are you?")


async def test_what_langchain_and_open_webui_send_is_accepted(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    messages = [
        {"role": "system", "content": "Be brief.", "name": "rules"},
        {"role": "user", "content": "Hi", "name": "bob"},  # LangChain: HumanMessage(name=)
        {
            "role": "user",
            "content": [{"type": "text", "text": "Ho", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    body = _chat(messages=messages, max_tokens=3.0, seed=-1, prompt_cache_key="k", store=True)
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    assert response.json["choices"][0]["message"]["content"] == REPLY[:3]
    assert "bob" not in _prompt_text(backend)  # a name is dropped, not rendered


async def test_system_messages_alone_are_answered_without_a_session(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    body = _chat(messages=[{"role": "system", "content": "You are a poet."}])
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 200 and response.json["choices"][0]["message"]["content"] == REPLY
    assert _prompt_text(backend) == "System: You are a poet.\nAssistant:"
    _, response = await app.asgi_client.post(
        "/v1/chat/completions", json={**body, "session_id": "poem"}
    )
    assert response.status == 400 and response.json["error"]["param"] == "messages"
    assert app.ctx.sessions.store.get("poem") is None  # nothing created
    assert len(backend.prompts) == 1


async def test_completion_as_json_defaults_to_16_tokens(tmp_path):
    app = make_app(tmp_path, FakeBackend(endless=True))
    body = {"model": "fake", "prompt": ["Once"]}
    _, response = await app.asgi_client.post("/v1/completions", json=body)
    reply = Completion.model_validate(response.json)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert len(reply.choices[0].text) == 16 and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.prompt_tokens == 4


async def test_chat_stream_framing(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat(stream=True))
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks, events = _chunks(response.text)
    assert events[-1] == "[DONE]"
    models = [ChatCompletionChunk.model_validate(chunk) for chunk in chunks]
    assert len({(m.id, m.created, m.model) for m in models}) == 1  # one completion
    assert models[0].choices[0].delta.role == "assistant"
    assert "role" not in chunks[1]["choices"][0]["delta"]  # absent, not null
    text = "".join(m.choices[0].delta.content or "" for m in models)
    assert text == REPLY
    last = models[-1]
    assert last.choices[0].finish_reason == "stop" and last.choices[0].delta.content is None
    # The usage rides on the last chunk by default, and only there.
    assert last.usage is not None and last.usage.completion_tokens == len(REPLY)
    assert all(m.usage is None for m in models[:-1])


async def test_stream_options_include_usage_sends_openais_extra_chunk(tmp_path):
    app = make_app(tmp_path)
    body = _chat(stream=True, stream_options={"include_usage": True})
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    chunks, _ = _chunks(response.text)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(REPLY)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    body["stream_options"]["include_usage"] = False
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    chunks, _ = _chunks(response.text)
    assert all(chunk["usage"] is None for chunk in chunks)


async def test_completion_stream_framing(tmp_path):
    app = make_app(tmp_path)
    body = {"model": "fake", "prompt": "Hi", "stream": True, "max_tokens": 5}
    _, response = await app.asgi_client.post("/v1/completions", json=body)
    chunks, events = _chunks(response.text)
    assert events[-1] == "[DONE]"
    models = [Completion.model_validate(chunk) for chunk in chunks]
    assert "".join(m.choices[0].text for m in models) == REPLY[:5]
    assert models[-1].choices[0].finish_reason == "length"
    assert models[-1].usage is not None and models[-1].usage.completion_tokens == 5


async def test_a_failure_midway_is_an_error_event_then_done(tmp_path):
    app = make_app(tmp_path, FakeBackend(fail_after=4))
    _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat(stream=True))
    chunks, events = _chunks(response.text)
    assert events[-1] == "[DONE]"
    assert chunks[-1]["error"]["message"] == "generation failed: fake failure"
    assert chunks[-1]["error"]["type"] == "server_error"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "Hell"


async def test_a_failure_midway_without_streaming_is_a_500(tmp_path):
    app = make_app(tmp_path, FakeBackend(fail_after=4))
    _, response = await app.asgi_client.post("/v1/chat/completions", json=_chat())
    assert response.status == 500
    assert response.json["error"]["message"] == "generation failed: fake failure"


async def test_sampling_parameters_reach_the_backend(tmp_path):
    app = make_app(tmp_path)
    seen = []
    original = app.ctx.registry.worker

    def spy(*args, **kwargs):
        worker = original(*args, **kwargs)
        open_stream = worker.open
        worker.open = lambda encode, params, observer=None: (
            seen.append(params) or open_stream(encode, params, observer)
        )
        return worker

    app.ctx.registry.worker = spy
    body = _chat(
        temperature=0.5, top_p=0.9, seed=7, presence_penalty=1.5, frequency_penalty=-0.5,
        top_k=20, repetition_penalty=1.2, stop="x", max_completion_tokens=9, user="u1",
    )  # fmt: skip
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    params = seen[0]
    assert (params.temperature, params.top_p, params.seed, params.top_k) == (0.5, 0.9, 7, 20)
    assert (params.presence_penalty, params.frequency_penalty) == (1.5, -0.5)
    assert (params.repeat_penalty, params.stop, params.max_tokens) == (1.2, ("x",), 9)
    # A negative seed reaches the backends within the range they take.
    await app.asgi_client.post("/v1/chat/completions", json=_chat(seed=-7))
    assert seen[1].seed == 2**63 - 7


# -- sessions --------------------------------------------------------------------------


async def test_a_session_turn_is_stored_and_seen_by_chat_history(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    body = _chat(session_id="s1", messages=[{"role": "system", "content": "Be kind."}, USER])
    _, response = await app.asgi_client.post("/v1/chat/completions", json=body)
    assert response.status == 200 and response.headers["x-session-id"] == "s1"
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert history.json == [
        {"role": "system", "content": "Be kind."},
        USER,
        {"role": "assistant", "content": REPLY},
    ]
    # The next turn sends only its new message; the stored history goes before it.
    follow = {"role": "user", "content": "And then?"}
    headers = {"X-Session-Id": "s1"}
    _, response = await app.asgi_client.post(
        "/v1/chat/completions", json=_chat(messages=[follow], stream=True), headers=headers
    )
    assert response.status == 200 and response.headers["x-session-id"] == "s1"
    prompt = _prompt_text(backend)
    assert prompt.index("Be kind.") < prompt.index("Hi") < prompt.index(REPLY[:5])
    assert prompt.index(REPLY[:5]) < prompt.index("And then?")
    _, history = await app.asgi_client.get("/chat/history/s1")
    assert history.json[-2:] == [follow, {"role": "assistant", "content": REPLY}]


async def test_a_streamed_turn_is_stored_before_done(tmp_path):
    app = make_app(tmp_path)
    slow_session_writes(app, 0.3)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/v1/chat/completions", json=_chat(stream=True, session_id="s")
        )
        roles = stored_roles(app, "s")
    assert _chunks(response.text)[1][-1] == "[DONE]"
    assert roles == ["user", "assistant"]


async def test_a_session_started_on_api_md_continues_on_v1_and_back(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    native = {"model-name": "fake/model", "prompt": "First", "session-id": "both"}
    await app.asgi_client.post("/chat/completions", json=native)
    second = _chat(session_id="both", messages=[{"role": "user", "content": "Second"}])
    await app.asgi_client.post("/v1/chat/completions", json=second)
    assert _prompt_text(backend).index("First") < _prompt_text(backend).index("Second")
    await app.asgi_client.post("/chat/completions", json={**native, "prompt": "Third"})
    _, history = await app.asgi_client.get("/chat/history/both")
    users = [m["content"] for m in history.json if m["role"] == "user"]
    assert users == ["First", "Second", "Third"]


async def test_session_header_and_field_must_agree(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post(
        "/v1/chat/completions", json=_chat(session_id="a"), headers={"X-Session-Id": "b"}
    )
    assert response.status == 400 and response.json["error"]["param"] == "session_id"
    _, response = await app.asgi_client.post(
        "/v1/chat/completions", json=_chat(), headers={"X-Session-Id": "bad id!"}
    )
    assert response.status == 400 and response.json["error"]["param"] == "X-Session-Id"


async def test_another_keys_session_is_not_found(tmp_path):
    auth = {"enabled": True, "api_keys": ["key-a", "key-b"]}
    app = make_app(tmp_path, auth=auth)
    a, b = ({"Authorization": f"Bearer {k}"} for k in ("key-a", "key-b"))
    _, response = await app.asgi_client.post(
        "/v1/chat/completions", json=_chat(session_id="mine"), headers=a
    )
    assert response.status == 200
    _, response = await app.asgi_client.post(
        "/v1/chat/completions", json=_chat(session_id="mine"), headers=b
    )
    assert response.status == 404
    assert response.json["error"]["type"] == "not_found_error"


async def test_disconnect_cancels_the_generation_and_keeps_the_partial_answer(tmp_path):
    backend = FakeBackend(endless=True, step_delay=0.02)
    app = make_app(tmp_path, backend)
    async with live_server(app) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream(
                "POST", "/v1/chat/completions", json=_chat(stream=True, session_id="gone")
            ) as response,
        ):
            received = 0
            async for line in response.aiter_lines():
                received += line.startswith("data:")
                if received == 4:
                    break
        await wait_for(lambda: backend.closed == 1)
        steps = backend.steps
        await asyncio.sleep(0.2)
        assert backend.steps == steps  # no step after the disconnect
        await wait_for(lambda: len(app.ctx.sessions.store.get("gone").messages) == 2)
    answer = app.ctx.sessions.store.get("gone").messages[1]["content"]
    assert len(answer) >= 2 and (REPLY * 10).startswith(answer)


async def test_a_json_turn_whose_client_went_away_keeps_the_partial_answer(tmp_path):
    # As a stream's does: the user's message is never lost, the history alternates.
    backend = FakeBackend(endless=True, step_delay=0.01)
    app = make_app(tmp_path, backend)
    async with live_server(app) as url:
        await post_and_go_away(url, "/v1/chat/completions", _chat(session_id="gone"))
        await wait_for(lambda: backend.closed == 1)  # the generation was cancelled
        await wait_for(lambda: stored_roles(app, "gone") == ["user", "assistant"])
    answer = app.ctx.sessions.store.get("gone").messages[1]["content"]
    assert len(answer) >= 2 and (REPLY * 100).startswith(answer)


async def test_keepalive_comments_during_a_slow_step(tmp_path):
    backend = FakeBackend(reply="a", step_delay=0.25)
    app = make_app(tmp_path, backend, server={"keepalive_interval": 0.1})
    async with (
        live_server(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        response = await client.post("/v1/chat/completions", json=_chat(stream=True))
    stream = parse_sse(response.text)
    assert stream.comments.count("keepalive") >= 2
    assert stream.events[-1].data == "[DONE]"


@pytest.mark.parametrize("endpoint", ["v1.chat", "v1.completions"])
async def test_metrics_label_the_openai_endpoints(tmp_path, endpoint):
    app = make_app(tmp_path)
    path, body = (
        ("/v1/chat/completions", _chat())
        if endpoint == "v1.chat"
        else ("/v1/completions", {"model": "fake", "prompt": "Hi"})
    )
    await app.asgi_client.post(path, json=body)
    await app.asgi_client.post(path, json={**body, "n": 2})
    _, metrics = await app.asgi_client.get("/metrics")
    assert (
        f'completions_tokens_total{{device="cpu",endpoint="{endpoint}",model="fake/model"}}'
        in metrics.text
    )
    assert f'completions_errors_total{{endpoint="{endpoint}",status="400"}} 1.0' in metrics.text
