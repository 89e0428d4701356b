"""inferd/ws.py: WS /chat/ws -- JSON in, token frames out, `__END__` after each answer."""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import ClientConnection, connect

from inferd.testing.fakes import REPLY, FakeBackend, make_app
from inferd.testing.live import live_server
from tests.streams import slow_session_writes, stored_roles, wait_for

END = "__END__"
ERROR = "__ERROR__:"


def _message(**fields) -> str:
    return json.dumps({"model-name": "fake/model", "prompt": "Hi", **fields})


async def _answer(ws: ClientConnection) -> list[str]:
    """Frames up to and including the terminal `__END__` or `__ERROR__:` frame."""
    frames = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout=5)
        frames.append(frame)
        if frame == END or frame.startswith(ERROR):
            return frames


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/chat/ws"


async def test_tokens_arrive_as_frames_then_end(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send(_message())
        frames = await _answer(ws)
    assert frames[-1] == END
    assert "".join(frames[:-1]) == REPLY
    assert len(frames) == len(REPLY) + 1  # one frame per token


async def test_the_socket_stays_open_for_more_messages(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        for _ in range(3):
            await ws.send(_message())
            frames = await _answer(ws)
            assert "".join(frames[:-1]) == REPLY
            assert frames[-1] == END


async def test_messages_sent_back_to_back_are_answered_in_order(tmp_path):
    app = make_app(tmp_path, FakeBackend(step_delay=0.002))
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send(_message(stop=["!"]))
        await ws.send(_message(**{"max-token": 3}))
        assert await _answer(ws) == [*"Hello there", END]
        assert await _answer(ws) == ["H", "e", "l", END]


async def test_a_socket_without_session_id_keeps_one_session(tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    async with live_server(app) as url:
        async with connect(_ws_url(url)) as ws:
            await ws.send(_message(prompt="first"))
            await _answer(ws)
            await ws.send(_message(prompt="second"))
            await _answer(ws)
        # The second turn saw the first one.
        assert "User: first" in "".join(chr(t) for t in backend.prompts[-1])
        async with connect(_ws_url(url)) as other:
            await other.send(_message(prompt="third"))
            await _answer(other)
        async with httpx.AsyncClient(base_url=url) as client:
            session_ids = (await client.get("/sessions")).json()
            first = (await client.get(f"/chat/history/{session_ids[0]}")).json()
    # A second socket gets a session of its own.
    assert len(session_ids) == 2
    assert [m["content"] for m in first] == ["first", REPLY, "second", REPLY]


async def test_an_explicit_session_id_is_used(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url:
        async with connect(_ws_url(url)) as ws:
            await ws.send(_message(prompt="hello", **{"session-id": "ws-session"}))
            await _answer(ws)
        async with httpx.AsyncClient(base_url=url) as client:
            history = (await client.get("/chat/history/ws-session")).json()
    assert history == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": REPLY},
    ]


async def test_a_turn_is_stored_before_its_end_frame(tmp_path):
    app = make_app(tmp_path)
    slow_session_writes(app, 0.3)
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send(_message(**{"session-id": "s"}))
        frames = await _answer(ws)
        roles = stored_roles(app, "s")
    assert frames[-1] == END
    assert roles == ["user", "assistant"]


async def test_the_url_can_name_the_socket_session(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url:
        async with connect(_ws_url(url) + "?session-id=from-url") as ws:
            await ws.send(_message(prompt="one"))
            await _answer(ws)
            await ws.send(_message(prompt="two"))
            await _answer(ws)
        async with httpx.AsyncClient(base_url=url) as client:
            history = (await client.get("/chat/history/from-url")).json()
    assert [m["content"] for m in history] == ["one", REPLY, "two", REPLY]


async def test_an_invalid_url_session_id_is_an_error_frame_then_close(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url, connect(_ws_url(url) + "?session-id=a%20b") as ws:
        frame = await asyncio.wait_for(ws.recv(), timeout=5)
        assert frame.startswith(ERROR) and "session-id" in frame
        await asyncio.wait_for(ws.wait_closed(), timeout=5)
    assert ws.close_code == 1008


async def test_errors_are_error_frames_and_the_socket_stays_usable(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send("{not json")
        assert (await _answer(ws))[0].startswith(ERROR + "malformed JSON message")

        await ws.send(_message(temperature=9))
        (frame,) = await _answer(ws)
        assert frame.startswith(ERROR)
        assert "'temperature'" in frame

        await ws.send(_message(max_token=5))
        assert await _answer(ws) == [ERROR + "unknown field 'max_token'"]

        await ws.send(_message(**{"model-name": "nope"}))
        (frame,) = await _answer(ws)
        assert frame.startswith(ERROR + "model 'nope' not found")

        await ws.send(_message(device="metal"))
        (frame,) = await _answer(ws)
        assert "available devices: cpu, cuda" in frame

        await ws.send(json.dumps(["not", "an", "object"]))
        assert await _answer(ws) == [ERROR + "request body must be a JSON object"]

        await ws.send(_message())
        frames = await _answer(ws)
        assert "".join(frames[:-1]) == REPLY
        assert frames[-1] == END


async def test_generation_failure_is_an_error_frame_after_the_partial_answer(tmp_path):
    backend = FakeBackend(fail_after=3)
    app = make_app(tmp_path, backend)
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send(_message())
        frames = await _answer(ws)
        assert frames == ["H", "e", "l", ERROR + "generation failed: fake failure"]
        # The socket is still usable for the next message.
        backend.fail_after = None
        await ws.send(_message())
        assert (await _answer(ws))[-1] == END


async def test_model_load_failure_is_an_error_frame(tmp_path):
    app = make_app(tmp_path, FakeBackend(load_error="missing weights"))
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send(_message())
        (frame,) = await _answer(ws)
    assert frame.startswith(ERROR)
    assert "missing weights" in frame


async def test_stop_and_max_token_apply(tmp_path):
    app = make_app(tmp_path)
    async with live_server(app) as url, connect(_ws_url(url)) as ws:
        await ws.send(_message(stop=[" there"]))
        assert "".join((await _answer(ws))[:-1]) == "Hello"
        await ws.send(_message(**{"max-token": 2}))
        assert await _answer(ws) == ["H", "e", END]


async def test_closing_the_socket_cancels_generation(tmp_path):
    backend = FakeBackend(endless=True, step_delay=0.02)
    app = make_app(tmp_path, backend)
    async with live_server(app) as url:
        async with connect(_ws_url(url)) as ws:
            await ws.send(_message(**{"session-id": "closed"}))
            for _ in range(3):
                await asyncio.wait_for(ws.recv(), timeout=5)
        await wait_for(lambda: backend.closed == 1)
        steps = backend.steps
        await asyncio.sleep(0.2)  # ten decoding steps' worth
        assert backend.steps == steps
        assert app.ctx.registry.worker("fake").running == 0
        # What was said before the close is kept.
        await wait_for(lambda: len(app.ctx.sessions.store.get("closed").messages) == 2)
        messages = app.ctx.sessions.store.get("closed").messages
    assert messages[0] == {"role": "user", "content": "Hi"}
    assert (REPLY * 10).startswith(messages[1]["content"])
