"""inferd/chat.py: POST /chat/completions, streamed as SSE, with session history."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from inferd.testing.sse import parse_sse
from tests.streams import post_sse, slow_session_writes, stored_roles, wait_for


def _body(**fields):
    return {"model-name": "fake/model", "prompt": "Hi", **fields}


async def _chat(app, **fields):
    _, response = await app.asgi_client.post("/chat/completions", json=_body(**fields))
    return response


async def _history(app, session_id):
    _, response = await app.asgi_client.get(f"/chat/history/{session_id}")
    assert response.status == 200
    return response.json


def _prompt_text(backend: FakeBackend, index: int = -1) -> str:
    return "".join(chr(t) for t in backend.prompts[index])


async def test_chat_streams_the_answer_as_sse(tmp_path):
    app = make_app(tmp_path)
    response = await _chat(app)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = parse_sse(response.text)
    assert stream.text == REPLY
    assert stream.named("error") == []


async def test_chat_without_session_id_creates_one_and_returns_it(tmp_path):
    app = make_app(tmp_path)
    response = await _chat(app, prompt="Hello?")
    session_id = response.headers["x-session-id"]
    assert session_id
    _, sessions = await app.asgi_client.get("/sessions")
    assert sessions.json == [session_id]
    assert await _history(app, session_id) == [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": REPLY},
    ]


async def test_each_chat_without_session_id_gets_a_new_session(tmp_path):
    app = make_app(tmp_path)
    first = (await _chat(app)).headers["x-session-id"]
    second = (await _chat(app)).headers["x-session-id"]
    assert first != second


async def test_chat_with_a_new_session_id_creates_that_session(tmp_path):
    app = make_app(tmp_path)
    response = await _chat(app, **{"session-id": "my-session"})
    assert response.headers["x-session-id"] == "my-session"
    assert len(await _history(app, "my-session")) == 2


async def test_history_is_sent_to_the_model_on_the_next_turn(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    await _chat(app, prompt="First question", **{"session-id": "s1"})
    await _chat(app, prompt="Second question", **{"session-id": "s1"})
    # The fake model has no chat template: the plain "Role: content" fallback is used.
    assert _prompt_text(backend) == (
        f"User: First question\nAssistant: {REPLY}\nUser: Second question\nAssistant:"
    )
    assert [m["content"] for m in await _history(app, "s1")] == [
        "First question",
        REPLY,
        "Second question",
        REPLY,
    ]


async def test_sessions_do_not_see_each_others_history(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    await _chat(app, prompt="secret", **{"session-id": "a"})
    await _chat(app, prompt="public", **{"session-id": "b"})
    assert "secret" not in _prompt_text(backend)


async def test_system_prompt_is_stored_first_and_replaced_by_a_later_one(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    await _chat(app, prompt="one", **{"session-id": "s", "system-prompt": "Be brief."})
    history = await _history(app, "s")
    assert history[0] == {"role": "system", "content": "Be brief."}
    assert _prompt_text(backend).startswith("System: Be brief.\nUser: one\n")

    await _chat(app, prompt="two", **{"session-id": "s", "system-prompt": "Be verbose."})
    history = await _history(app, "s")
    assert history[0] == {"role": "system", "content": "Be verbose."}
    assert [m["role"] for m in history].count("system") == 1
    assert _prompt_text(backend).startswith("System: Be verbose.\nUser: one\n")
    assert "Be brief." not in _prompt_text(backend)

    # A turn without a system prompt keeps the stored one.
    await _chat(app, prompt="three", **{"session-id": "s"})
    assert (await _history(app, "s"))[0] == {"role": "system", "content": "Be verbose."}
    assert _prompt_text(backend).startswith("System: Be verbose.\n")
    assert len(await _history(app, "s")) == 7


async def test_system_prompt_added_to_an_existing_session_goes_first(tmp_path):
    app = make_app(tmp_path)
    await _chat(app, prompt="one", **{"session-id": "s"})
    await _chat(app, prompt="two", **{"session-id": "s", "system-prompt": "Late rules."})
    history = await _history(app, "s")
    assert history[0] == {"role": "system", "content": "Late rules."}
    assert [m["role"] for m in history[1:]] == ["user", "assistant"] * 2


async def test_history_outgrowing_the_context_drops_the_oldest_turns(tmp_path):
    backend = FakeBackend(context_length=200, reply="ok")
    app = make_app(tmp_path, backend)
    system = {"session-id": "s", "system-prompt": "Rules.", "max-token": 8}
    for number in range(8):
        response = await _chat(app, prompt=f"question number {number}", **system)
        assert response.status == 200
        assert parse_sse(response.text).text == "ok"
    prompt = _prompt_text(backend)
    assert len(backend.prompts[-1]) <= 200 - 8
    assert prompt.startswith("System: Rules.\n")
    assert "question number 7" in prompt
    assert "question number 6" in prompt  # recent turns are kept ...
    assert "question number 0" not in prompt  # ... the oldest are dropped
    # Trimming shapes the prompt only: the stored history keeps every message.
    assert len(await _history(app, "s")) == 1 + 2 * 8


async def test_a_single_message_longer_than_the_context_is_400(tmp_path):
    app = make_app(tmp_path, FakeBackend(context_length=64))
    response = await _chat(app, prompt="x" * 100, **{"session-id": "s"})
    assert response.status == 400
    assert "prompt too long" in response.json["error"]
    # A rejected request creates no session.
    _, sessions = await app.asgi_client.get("/sessions")
    assert sessions.json == []


async def test_stop_sequences_and_max_token_apply_to_chat(tmp_path):
    app = make_app(tmp_path)
    stopped = await _chat(app, stop=["!"], **{"session-id": "a"})
    assert parse_sse(stopped.text).text == "Hello there"
    assert (await _history(app, "a"))[-1]["content"] == "Hello there"
    limited = await _chat(app, **{"max-token": 4, "session-id": "b"})
    assert parse_sse(limited.text).text == "Hell"


async def test_chat_failure_midway_ends_with_an_error_event_and_keeps_the_partial_answer(
    tmp_path,
):
    app = make_app(tmp_path, FakeBackend(fail_after=5))
    response = await _chat(app, **{"session-id": "s"})
    stream = parse_sse(response.text)
    assert stream.text == "Hello"
    assert stream.events[-1].name == "error"
    assert "fake failure" in stream.events[-1].data
    assert (await _history(app, "s"))[-1] == {"role": "assistant", "content": "Hello"}


async def test_a_turn_that_fails_before_any_text_still_keeps_the_users_message(tmp_path):
    app = make_app(tmp_path, FakeBackend(fail_after=0))
    response = await _chat(app, **{"session-id": "s", "prompt": "remember me"})
    assert parse_sse(response.text).events[-1].name == "error"
    assert await _history(app, "s") == [
        {"role": "user", "content": "remember me"},
        {"role": "assistant", "content": ""},
    ]


async def test_generation_runs_on_the_model_owner_thread(tmp_path):
    class ThreadRecording(FakeBackend):
        def encode_chat(self, messages):
            self.threads.add(threading.current_thread().name)
            return super().encode_chat(messages)

        def decode(self, token_ids):
            self.threads.add(threading.current_thread().name)
            return super().decode(token_ids)

    backend = ThreadRecording()
    app = make_app(tmp_path, backend)
    response = await _chat(app)
    assert parse_sse(response.text).text == REPLY
    # Loading, tokenising, decoding and detokenising: never the event loop's thread.
    assert backend.threads == {"inferd-fake@cpu"}


async def test_model_load_failure_is_500(tmp_path):
    app = make_app(tmp_path, FakeBackend(load_error="out of memory"))
    response = await _chat(app)
    assert response.status == 500
    assert "out of memory" in response.json["error"]


async def test_unknown_model_is_404(tmp_path):
    app = make_app(tmp_path)
    response = await _chat(app, **{"model-name": "Qwen/Missing"})
    assert response.status == 404
    assert "'Qwen/Missing'" in response.json["error"]


async def test_unavailable_device_is_400_listing_the_devices(tmp_path):
    app = make_app(tmp_path)
    response = await _chat(app, device="metal")
    assert response.status == 400
    assert "available devices: cpu, cuda" in response.json["error"]


INVALID = [
    ({"temperature": 3}, "'temperature'"),
    ({"top-p": 0.0}, "'top-p'"),
    ({"top-k": -1}, "'top-k'"),
    ({"repeat-penalty": 0.9}, "'repeat-penalty'"),
    ({"repeat-penalty": 2.1}, "'repeat-penalty'"),
    ({"max-token": 0}, "'max-token'"),
    ({"max-token": 1.5}, "'max-token'"),
    (
        {"device": "tpu"},
        "device 'tpu' is not available on this server; available devices: cpu, cuda",
    ),
    ({"session-id": "has spaces"}, "'session-id'"),
    ({"system-prompt": 5}, "'system-prompt'"),
    ({"max_token": 5}, "unknown field 'max_token'"),
    ({"model_name": "fake"}, "unknown field 'model_name'"),
]


async def test_invalid_fields_are_400_naming_the_field(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    for fields, fragment in INVALID:
        response = await _chat(app, **fields)
        assert response.status == 400, fields
        assert fragment in response.json["error"], fields
    assert backend.prompts == []
    _, sessions = await app.asgi_client.get("/sessions")
    assert sessions.json == []  # a rejected request creates no session


async def test_missing_model_name_is_400(tmp_path):
    app = make_app(tmp_path)
    _, response = await app.asgi_client.post("/chat/completions", json={"prompt": "hi"})
    assert response.status == 400
    assert response.json == {"error": "missing required field 'model-name'"}


# -- real socket: concurrency and disconnects ---------------------------------------------


async def test_concurrent_chats_on_one_session_never_lose_a_message(tmp_path):
    app = make_app(tmp_path, FakeBackend(reply="ok", step_delay=0.005))
    prompts = [f"message {n}" for n in range(8)]
    async with live_server(app) as url:
        results = await asyncio.gather(
            *(
                post_sse(url, "/chat/completions", _body(prompt=p, **{"session-id": "shared"}))
                for p in prompts
            )
        )
        async with httpx.AsyncClient(base_url=url) as client:
            history = (await client.get("/chat/history/shared")).json()
    assert all(stream.text == "ok" for _, stream in results)
    assert len(history) == 16
    # Each exchange is stored as an adjacent user/assistant pair.
    assert [m["role"] for m in history] == ["user", "assistant"] * 8
    assert sorted(m["content"] for m in history[::2]) == prompts


async def test_client_disconnect_stops_generation_and_keeps_the_partial_answer(tmp_path):
    backend = FakeBackend(endless=True, step_delay=0.02)
    app = make_app(tmp_path, backend)
    async with live_server(app) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream(
                "POST", "/chat/completions", json=_body(**{"session-id": "gone"})
            ) as response,
        ):
            received = 0
            async for line in response.aiter_lines():
                received += line.startswith("data:")
                if received == 3:
                    break
        await wait_for(lambda: backend.closed == 1)
        steps = backend.steps
        await asyncio.sleep(0.2)
        assert backend.steps == steps
        await wait_for(lambda: len(app.ctx.sessions.store.get("gone").messages) == 2)
        answer = app.ctx.sessions.store.get("gone").messages[1]["content"]
    # What had been generated before the disconnect (the endless fake repeats REPLY).
    assert len(answer) >= 3
    assert (REPLY * 10).startswith(answer)


async def test_x_include_usage_ends_the_stream_with_a_usage_comment(tmp_path):
    app = make_app(tmp_path)
    _, plain = await app.asgi_client.post("/chat/completions", json=_body())
    assert parse_sse(plain.text).comments == []  # API.md's stream, unchanged
    _, response = await app.asgi_client.post(
        "/chat/completions", json=_body(), headers={"X-Include-Usage": "true"}
    )
    stream = parse_sse(response.text)
    assert stream.text == REPLY
    [comment] = stream.comments
    usage = json.loads(comment.removeprefix("usage "))
    assert usage["completion_tokens"] == len(REPLY)  # one token per character
    assert usage["prompt_tokens"] == len(_prompt_text(app.ctx.fake_backend))
    assert usage["decode_seconds"] >= 0 and usage["first_token_seconds"] >= 0


async def test_a_turn_is_stored_before_its_client_sees_the_end(tmp_path):
    # A client that sends its next turn the moment the last one ends (here or to another
    # replica) must find it in the history, however long the store takes to write it.
    app = make_app(tmp_path)
    slow_session_writes(app, 0.3)
    async with live_server(app) as url:
        _, stream = await post_sse(url, "/chat/completions", _body(**{"session-id": "s"}))
        roles = stored_roles(app, "s")
    assert stream.text == REPLY
    assert roles == ["user", "assistant"]


@pytest.mark.parametrize("kind", ["diskcache", "redis"])
@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
async def test_a_session_deleted_while_its_answer_streams_stays_deleted(
    tmp_path, request, kind, existing
):
    sessions = {"url": request.getfixturevalue("empty_redis")} if kind == "redis" else {}
    app = make_app(tmp_path, FakeBackend(step_delay=0.02), sessions=sessions)
    async with live_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        if existing:
            await post_sse(url, "/chat/completions", _body(**{"session-id": "s"}))
        async with client.stream(
            "POST", "/chat/completions", json=_body(**{"session-id": "s"})
        ) as response:
            lines = response.aiter_lines()
            received = [await anext(lines)]
            deleted = await client.delete("/chat/history/s")
            received += [line async for line in lines]
        # The client still gets its whole answer; the turn is not stored anywhere.
        assert deleted.status_code == 204
        assert parse_sse("\n".join(received)).text == REPLY
        assert (await client.get("/chat/history/s")).status_code == 404
        assert (await client.get("/sessions")).json() == []
