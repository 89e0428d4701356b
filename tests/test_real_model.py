"""End to end on the real stories260K model: torch on the CPU, and MLX where installed.

Greedy decoding is deterministic, so the text is known (it is the continuation quoted in
the model's PROVENANCE.md, computed in fp32: the model is served in fp32 here rather
than the CPU default int8) and every transport must deliver exactly the same text.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import websockets

from inferd.app import create_app
from inferd.config import parse_config
from inferd.testing.live import live_server
from inferd.testing.sse import parse_sse

pytestmark = pytest.mark.real_model

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park."
COMPLETION = {"model": "stories260K", "prompt": "Once upon a time", "temperature": 0}


def make_app(tmp_path: Path, stories_path: Path, **model: str):
    config = parse_config(
        {
            "sessions": {"path": str(tmp_path / "sessions")},
            "models": [
                {"id": "stories", "name": "stories260K", "path": str(stories_path), **model}
            ],
        }
    )
    return create_app(config)


@pytest.fixture
def app(tmp_path: Path, stories_path: Path):
    return make_app(tmp_path, stories_path, quantization="fp32")


async def test_greedy_completion_is_the_known_text(app) -> None:
    _, response = await app.asgi_client.post("/completions", json={**COMPLETION, "max_tokens": 27})
    assert response.status == 200, response.text
    assert response.json["text"] == GREEDY
    assert response.json["tokens"] == 27
    assert response.json["model"] == "stories260K"


async def test_streamed_text_equals_non_streamed(app) -> None:
    body = {**COMPLETION, "max_tokens": 60}
    _, plain = await app.asgi_client.post("/completions", json=body)
    _, streamed = await app.asgi_client.post("/completions", json={**body, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert parse_sse(streamed.text).text == plain.json["text"]
    assert "\n" in plain.json["text"]  # 60 tokens reach a line break: multi-line events


async def test_stop_sequence_ends_the_text_before_it(app) -> None:
    body = {**COMPLETION, "max_tokens": 40, "stop": ["Lily"]}
    _, response = await app.asgi_client.post("/completions", json=body)
    assert response.json["text"] == ", there was a little girl named "
    assert response.json["finish_reason"] == "stop"


async def test_chat_over_sse_and_websocket_agree(app) -> None:
    chat = {"model-name": "stories260K", "prompt": "Tell me a story", "temperature": 0}
    chat |= {"max-token": 24}
    async with live_server(app) as url:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(f"{url}/chat/completions", json=chat)
            session_id = response.headers["x-session-id"]
            history = (await client.get(f"{url}/chat/history/{session_id}")).json()
        async with websockets.connect(url.replace("http", "ws", 1) + "/chat/ws") as ws:
            await ws.send(json.dumps(chat))
            frames = []
            while (frame := await ws.recv()) != "__END__":
                frames.append(frame)
    sse_answer = parse_sse(response.text).text
    assert sse_answer and "".join(frames) == sse_answer
    assert history == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": sse_answer},
    ]


async def test_long_prompt_is_rejected_with_400(app) -> None:
    prompt = "Once upon a time " * 200  # far beyond the 512-token context
    _, response = await app.asgi_client.post("/completions", json={**COMPLETION, "prompt": prompt})
    assert response.status == 400
    assert "context" in response.json["error"]


async def test_metal_device_runs_mlx_with_the_same_greedy_text(tmp_path, stories_path) -> None:
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed")
    app = make_app(tmp_path, stories_path)  # MLX serves the checkpoint's own fp32 weights
    body = {**COMPLETION, "max_tokens": 27, "device": "metal"}
    _, response = await app.asgi_client.post("/completions", json=body)
    assert response.status == 200, response.text
    assert response.json["text"] == GREEDY
