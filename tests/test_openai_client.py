"""The official `openai` Python client, sync and async, against a running inferd.

Generation tests serve the real stories260K model; tests of refusals (auth, rate limits,
bad parameters) use the fake backend, where the text does not matter. The sync client
runs in a worker thread so the server keeps running on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from inferd.app import create_app
from inferd.config import parse_config
from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server

MODEL = "stories260K"
STORY = "Once upon a time"


@pytest.fixture
async def stories_url(stories_path: Path, tmp_path: Path) -> AsyncIterator[str]:
    config = parse_config(
        {
            "sessions": {"path": str(tmp_path / "sessions")},
            "models": [{"id": "stories", "name": MODEL, "path": str(stories_path)}],
        }
    )
    async with live_server(create_app(config)) as url:
        yield url


def _sync(url: str, key: str = "none") -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def _async(url: str, key: str = "none") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.mark.real_model
async def test_sync_chat_json_and_stream_agree(stories_url):
    def run() -> tuple[openai.types.chat.ChatCompletion, list[str], object]:
        messages = [{"role": "user", "content": "Tell me a story."}]
        with _sync(stories_url) as client:
            whole = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, max_tokens=30
            )
            stream = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, max_tokens=30, stream=True
            )
            chunks = list(stream)
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        return whole, pieces, chunks[-1]

    whole, pieces, last = await asyncio.to_thread(run)
    answer = whole.choices[0].message.content
    assert answer and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 30 and whole.usage.prompt_tokens > 0
    assert "".join(pieces) == answer  # greedy: the stream spells out the same answer
    assert last.usage is not None and last.usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.real_model
async def test_async_completion_tells_the_story(stories_url):
    async with _async(stories_url) as client:
        reply = await client.completions.create(
            model=MODEL, prompt=STORY, temperature=0, max_tokens=20
        )
        assert "there was a little girl named Lily" in reply.choices[0].text
        assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 20
        stream = await client.completions.create(
            model=MODEL, prompt=STORY, temperature=0, max_tokens=20, stream=True
        )
        text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
        assert text == reply.choices[0].text


@pytest.mark.real_model
async def test_async_chat_streams(stories_url):
    async with _async(stories_url) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello"}],
            max_completion_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 12
        assert any(c.choices and c.choices[0].delta.content for c in chunks)


@pytest.mark.real_model
async def test_same_seed_same_output_and_penalties_change_it(stories_url):
    async with _async(stories_url) as client:

        async def complete(**fields) -> str:
            fields = {"temperature": 1.0, "max_tokens": 40, **fields}
            reply = await client.completions.create(model=MODEL, prompt=STORY, **fields)
            return reply.choices[0].text

        assert await complete(seed=42) == await complete(seed=42)
        assert await complete(seed=42) != await complete(seed=43)
        # OpenAI takes negative seeds; each is its own stream, not its absolute value's.
        assert await complete(seed=-42) == await complete(seed=-42)
        assert await complete(seed=-42) != await complete(seed=42)
        greedy = await complete(temperature=0)
        for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
            assert await complete(temperature=0, **penalty) != greedy, penalty
        # inferd's extras go in extra_body: top_k 1 is greedy whatever the temperature.
        assert await complete(seed=1, extra_body={"top_k": 1}) == greedy


@pytest.mark.real_model
async def test_models_list_carries_the_context_length(stories_url):
    async with _async(stories_url) as client:
        models = (await client.models.list()).data
        assert [model.id for model in models] == [MODEL]
        assert models[0].context_length == 512  # an extra field the client keeps
        assert (await client.models.retrieve(MODEL)).id == MODEL


@pytest.mark.real_model
async def test_a_session_through_the_client_is_the_chat_history(stories_url):
    async with _async(stories_url) as client:
        first = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=8,
            extra_body={"session_id": "client-1"},
        )
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "More"}],
            max_tokens=8,
            extra_headers={"X-Session-Id": "client-1"},
        )
        async with httpx.AsyncClient(base_url=stories_url) as http:
            history = (await http.get("/chat/history/client-1")).json()
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        assert history[1]["content"] == first.choices[0].message.content
        assert history[2]["content"] == "More"


# -- refusals, through the client's exception classes (fake backend) ------------------


async def test_auth_takes_the_clients_api_key(tmp_path):
    app = make_app(tmp_path, auth={"enabled": True, "api_keys": ["sk-good"]})
    async with live_server(app) as url:
        async with _async(url, "sk-bad") as client:
            with pytest.raises(openai.AuthenticationError) as refused:
                await client.models.list()
        assert refused.value.status_code == 401
        assert refused.value.body["type"] == "authentication_error"
        with _sync(url, "sk-good") as client:
            models = await asyncio.to_thread(client.models.list)
    assert [model.id for model in models.data] == ["fake/model"]


async def test_rate_limit_is_a_rate_limit_error(tmp_path):
    app = make_app(tmp_path, rate_limit={"enabled": True, "requests_per_minute": 1})
    async with live_server(app) as url, _async(url) as client:
        await client.models.list()
        with pytest.raises(openai.RateLimitError) as refused:
            await client.models.list()
    assert refused.value.body["code"] == "rate_limit_exceeded"


async def test_bad_requests_and_unknown_models_raise_their_classes(tmp_path):
    async with live_server(make_app(tmp_path)) as url, _async(url) as client:
        messages = [{"role": "user", "content": "Hi"}]
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="fake", messages=messages, n=2)
        assert refused.value.body["param"] == "n"
        with pytest.raises(openai.NotFoundError) as refused:
            await client.chat.completions.create(model="nope", messages=messages)
        assert refused.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as refused:
            await client.completions.create(model="fake", prompt="x" * 300)
        assert refused.value.code == "context_length_exceeded"


async def test_a_stream_that_fails_midway_raises_an_api_error(tmp_path):
    app = make_app(tmp_path, FakeBackend(fail_after=3))
    async with live_server(app) as url, _async(url) as client:
        stream = await client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="fake failure"):
            async for _ in stream:
                pass
