"""The engine over MLX (inferd/engine.py driving backends/mlx_batcher.py) on stories260K.

Requests that run together produce what each produces alone, and a chat's next turn,
sent through the engine, takes its history from the prompt cache. As in the other MLX
tests, the model loads and generates on the engine's own owner thread.
"""

from __future__ import annotations

import asyncio

import pytest

from inferd.backends.base import SamplingParams
from inferd.backends.mlx_backend import MlxBackend
from inferd.engine import ModelWorker
from inferd.stream import Stream
from tests.batching import PROMPTS
from tests.mlx_support import require_stories

STORIES = require_stories()

pytestmark = pytest.mark.real_model
GREEDY = SamplingParams(temperature=0.0, max_tokens=20)


async def text(stream: Stream) -> str:
    return "".join([event.text async for event in stream])


async def test_concurrent_requests_get_what_each_gets_alone() -> None:
    backend = MlxBackend(str(STORIES))
    worker = ModelWorker("mlx", lambda: backend, max_concurrent=4)
    try:
        await worker.ready()
        prompts = [await worker.call(lambda b, p=p: b.encode_text(p)) for p in PROMPTS]
        alone = [await asyncio.wait_for(text(worker.submit(p, GREEDY)), 60) for p in prompts]
        streams = [worker.submit(p, GREEDY) for p in prompts]
        together = await asyncio.wait_for(asyncio.gather(*(text(s) for s in streams)), 60)
    finally:
        worker.stop()
    assert together == alone
    assert all(alone)


async def test_a_second_turn_reuses_the_first_turns_cache() -> None:
    backend = MlxBackend(str(STORIES))
    worker = ModelWorker("mlx", lambda: backend, max_concurrent=2)
    try:
        await worker.ready()
        first = await worker.call(lambda b: b.encode_text("Once upon a time"))
        answer = await asyncio.wait_for(text(worker.submit(first, GREEDY)), 60)
        second = await worker.call(lambda b: b.encode_text("Once upon a time" + answer + " Then"))
        await asyncio.wait_for(text(worker.submit(second, GREEDY)), 60)
        hits = await worker.call(lambda b: b.prefix_hit_tokens)
    finally:
        worker.stop()
    assert hits >= len(first) + 10  # the history (prompt and most of the answer) was reused
