"""Batched decode steps: TorchBackend.step_many() and the engine's use of step_many()."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from inferd.backends.base import Decoding, SamplingParams
from inferd.backends.torch_backend import TorchBackend
from inferd.engine import ModelWorker
from inferd.testing.fakes import REPLY, FakeBackend
from tests.batching import GREEDY, PROMPTS, TOKENS, alone, batched
from tests.streams import wait_for

# Tiny models gain nothing from intra-op threads (see conftest.single_torch_thread).
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def stories(stories_path: Path) -> TorchBackend:
    backend = TorchBackend(str(stories_path))
    backend.load()
    return backend


@pytest.mark.real_model
def test_greedy_batched_steps_equal_unbatched_ones(stories: TorchBackend):
    expected = [alone(stories, p, GREEDY, TOKENS) for p in PROMPTS]
    # Staggered joins and different lengths: rows of several lengths, left-padded.
    assert batched(stories, [GREEDY] * 4, joins=(0, 0, 3, 7), lengths=[TOKENS] * 4) == expected


@pytest.mark.real_model
def test_each_row_keeps_its_own_sampling_params(stories: TorchBackend):
    params = [
        GREEDY,
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=7, max_tokens=64),
        SamplingParams(temperature=0.0, repeat_penalty=1.5, max_tokens=64),
        SamplingParams(temperature=1.2, top_k=0, top_p=1.0, seed=3, max_tokens=64),
    ]
    expected = [alone(stories, p, q, TOKENS) for p, q in zip(PROMPTS, params, strict=False)]
    assert batched(stories, params, joins=(0, 1, 2, 0), lengths=[TOKENS] * 4) == expected


@pytest.mark.real_model
def test_a_packed_decoding_may_step_alone(stories: TorchBackend):
    expected = [alone(stories, p, GREEDY, 12) for p in PROMPTS[:2]]
    first, second = (stories.start(stories.encode_text(p), GREEDY) for p in PROMPTS[:2])
    got: list[list[int]] = [[], []]
    for step in range(12):
        if step % 3 == 2:
            # stepped on its own while packed: its cache must come back out of the batch
            got[0].append(first.step())
            got[1].append(second.step())
        else:
            for tokens, token in zip(got, stories.step_many([first, second]), strict=True):
                tokens.append(token)
    first.close()
    second.close()
    assert got == expected


# --- the engine with a backend that has step_many() -----------------------------------


class BatchingBackend(FakeBackend):
    """A fake backend with step_many(); it records the size of every batched call."""

    def __init__(self, *, batch_error: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[int] = []
        self.batch_error = batch_error

    def step_many(self, decodings: Sequence[Decoding]) -> list[int]:
        self.batches.append(len(decodings))
        if self.batch_error:
            raise RuntimeError(self.batch_error)
        return [decoding.step() for decoding in decodings]


async def collect(worker: ModelWorker, n: int, max_tokens: int = 1000) -> list[tuple[str, str]]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    streams = [worker.submit([ord("a") + i], params) for i in range(n)]

    async def text(stream) -> tuple[str, str]:
        pieces = [event async for event in stream]
        return "".join(e.text for e in pieces), pieces[-1].finish_reason

    return await asyncio.wait_for(asyncio.gather(*(text(s) for s in streams)), timeout=5)


async def test_the_engine_decodes_concurrent_requests_in_one_call():
    backend = BatchingBackend()
    worker = ModelWorker("fake", lambda: backend, max_concurrent=4)
    try:
        await worker.ready()
        assert await collect(worker, 3) == [(REPLY, "stop")] * 3
    finally:
        worker.stop()
    assert backend.batches and max(backend.batches) == 3


async def test_batch_steps_false_ignores_step_many():
    backend = BatchingBackend()
    worker = ModelWorker("fake", lambda: backend, max_concurrent=4, batch_steps=False)
    try:
        await worker.ready()
        assert await collect(worker, 3) == [(REPLY, "stop")] * 3
    finally:
        worker.stop()
    assert backend.batches == []


async def test_a_failed_batch_fails_each_of_its_requests():
    backend = BatchingBackend(batch_error="out of memory")
    worker = ModelWorker("fake", lambda: backend, max_concurrent=4)
    try:
        await worker.ready()
        results = await collect(worker, 2)
    finally:
        worker.stop()
    assert [reason for _, reason in results] == ["error", "error"]
    assert backend.closed == 2


async def test_a_cancelled_request_leaves_the_batch_within_one_step():
    backend = BatchingBackend(endless=True, step_delay=0.002)
    worker = ModelWorker("fake", lambda: backend, max_concurrent=4)
    try:
        await worker.ready()
        params = SamplingParams(temperature=0.0, max_tokens=10_000)
        streams = [worker.submit([ord("a") + i], params) for i in range(3)]
        await wait_for(lambda: len(backend.batches) >= 3)
        streams[0].cancel()
        calls_at_cancel = len(backend.batches)
        await wait_for(lambda: backend.closed == 1)
        await wait_for(lambda: len(backend.batches) >= calls_at_cancel + 4)
        # At most the batch already running when the flag was set still had its row.
        assert set(backend.batches[calls_at_cancel + 1 :]) == {2}
    finally:
        for stream in streams:
            stream.cancel()
        worker.stop()
