"""A gateway inferd whose only model is remote, in front of an engine we did not write:
mlx-lm's OpenAI server on stories260K. API.md's own examples -- the requests of its
curl, Python, JavaScript and WebSocket snippets, as written there -- pass through it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from websockets.sync.client import connect

from inferd.testing import parse_sse
from tests.servers import mlx_lm_server, replica

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # API.md's name; mlx-lm serves stories260K under it

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, stories_path: Path) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlx-gateway")
    with mlx_lm_server(stories_path, folder) as upstream:
        config = folder / "gateway.toml"
        config.write_text(
            f"""
[sessions]
path = "sessions"

[[models]]
id = "qwen"
name = "{MODEL}"
backend = "openai"
url = "{upstream}"
upstream_model = "{stories_path.resolve()}"  # mlx-lm knows its model by its path
context_length = 512                          # mlx-lm's /v1/models does not say
preload = true
"""
        )
        server = replica(config, folder / "gateway.log")
        try:
            yield server.url
        finally:
            server.stop()


def test_curl_examples(gateway):
    health = httpx.get(f"{gateway}/health")
    assert health.json()["status"] == "ok"
    assert httpx.get(f"{gateway}/models").json() == {"models": [MODEL]}

    simple = httpx.post(
        f"{gateway}/completions",
        json={"model": MODEL, "prompt": "Explain Rust in one sentence:", "max_tokens": 50},
        timeout=60,
    )
    assert simple.status_code == 200, simple.text
    assert simple.json()["model"] == MODEL
    assert 0 < simple.json()["tokens"] <= 50

    full = httpx.post(
        f"{gateway}/chat/completions",
        json={
            "model-name": MODEL,
            "prompt": "What is async/await in Rust?",
            "max-token": 256,
            "temperature": 0.8,
            "top-p": 0.95,
            "top-k": 40,
            "repeat-penalty": 1.1,
            "system-prompt": "You are a Rust expert",
            "device": "cuda",
        },
        timeout=60,
    )
    assert full.status_code == 200, full.text
    assert full.headers["content-type"].startswith("text/event-stream")
    assert parse_sse(full.text).text
    session = full.headers["x-session-id"]

    keyed = httpx.post(
        f"{gateway}/completions",
        headers={"Authorization": "Bearer YOUR_API_KEY"},  # auth is off here: ignored
        json={"model": MODEL, "prompt": "Hello", "max_tokens": 50},
        timeout=60,
    )
    assert keyed.status_code == 200, keyed.text

    history = httpx.get(f"{gateway}/chat/history/{session}").json()
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert history[0]["content"] == "You are a Rust expert"
    rollback = httpx.post(f"{gateway}/chat/history/{session}/rollback", json={"amount": 2})
    assert rollback.json()["status"] == "ok"
    assert httpx.delete(f"{gateway}/chat/history/{session}").status_code == 204
    assert httpx.get(f"{gateway}/chat/history/{session}").status_code == 404


def test_python_example(gateway):
    # API.md's Python example, as written there (its base URL aside).
    response = requests.post(
        f"{gateway}/completions",
        json={
            "model": "Qwen/Qwen2.5-0.5B-Instruct",
            "prompt": "Write a haiku about Rust:",
            "max_tokens": 50,
            "temperature": 0.8,
        },
        timeout=60,
    )
    assert isinstance(response.json()["text"], str)

    response = requests.post(
        f"{gateway}/chat/completions",
        json={
            "model-name": "Qwen/Qwen2.5-0.5B-Instruct",
            "prompt": "Explain ownership in Rust",
            "session-id": "my-session",
            "max-token": 256,
            "temperature": 0.7,
            "top-p": 0.95,
            "top-k": 40,
            "repeat-penalty": 1.1,
            "system-prompt": "You are a Rust teacher",
            "device": "cuda",
        },
        stream=True,
        timeout=60,
    )
    printed = ""
    for line in response.iter_lines():
        if line:
            printed += line.decode("utf-8").replace("data: ", "")
    assert printed
    history = httpx.get(f"{gateway}/chat/history/my-session").json()
    assert [m["role"] for m in history] == ["system", "user", "assistant"]


def test_javascript_example_requests(gateway):
    completion = httpx.post(
        f"{gateway}/completions",
        headers={"Content-Type": "application/json"},
        json={"model": MODEL, "prompt": "Hello, world!", "max_tokens": 50},
        timeout=60,
    )
    assert isinstance(completion.json()["text"], str)
    body = {"model-name": MODEL, "prompt": "What is Rust?", "max-token": 256}
    body |= {"temperature": 0.7, "device": "cuda"}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{gateway}/chat/completions", json=body) as response,
    ):
        chunks = list(response.iter_text())
    text = "".join(line[6:] for line in "".join(chunks).split("\n") if line.startswith("data: "))
    assert text


def test_websocket_example(gateway):
    session = str(uuid.uuid4())
    with connect(gateway.replace("http://", "ws://") + "/chat/ws") as ws:
        ws.send(
            json.dumps(
                {
                    "model-name": "Qwen/Qwen2.5-0.5B-Instruct",
                    "prompt": "Tell me a joke about Rust",
                    "session-id": session,
                    "max-token": 100,
                    "temperature": 0.8,
                    "top-p": 0.95,
                    "top-k": 40,
                    "repeat-penalty": 1.1,
                    "system-prompt": "You are a funny comedian",
                    "device": "cuda",
                }
            )
        )
        frames = []
        while (frame := ws.recv()) != "__END__":
            assert not frame.startswith("__ERROR__"), frame
            frames.append(frame)
    assert len(frames) > 1  # token by token
    history = httpx.get(f"{gateway}/chat/history/{session}").json()
    assert history[-1] == {"role": "assistant", "content": "".join(frames)}


def test_greedy_text_is_the_engines_own(gateway):
    """The gateway adds nothing and loses nothing: stories260K's known greedy story."""
    reply = httpx.post(
        f"{gateway}/completions",
        json={"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0},
        timeout=60,
    )
    assert reply.json()["text"].startswith(", there was a little girl named Lily")
    assert reply.json()["prompt_tokens"] > 0  # mlx-lm's own count, from its usage


def test_v1_through_the_gateway(gateway):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Once upon a time"}]}
    reply = httpx.post(f"{gateway}/v1/chat/completions", json={**body, "max_tokens": 8}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
    assert reply.json()["usage"]["completion_tokens"] <= 8
