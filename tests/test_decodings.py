"""inferd/decodings.py: the engine batching a DecodingBackend's Decodings (step_many())."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from inferd.backends.base import Decoding, SamplingParams
from inferd.engine import ModelWorker
from inferd.testing.fakes import REPLY, FakeBackend
from tests.streams import wait_for


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
